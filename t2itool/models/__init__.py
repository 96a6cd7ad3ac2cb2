"""GAN models. Each subpackage registers itself with `t2itool.models.registry` on import."""

from t2itool.models import dfgan, dfgan_ssacn  # noqa: F401
