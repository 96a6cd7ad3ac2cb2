"""GAN models. Each subpackage registers itself with `t2itool.models.registry` on import."""
