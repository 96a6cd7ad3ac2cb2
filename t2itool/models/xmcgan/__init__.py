"""XMC-GAN (Zhang et al., "Cross-Modal Contrastive Learning for Text-to-Image Generation", CVPR 2021), re-implemented
in PyTorch from the paper and the facts of google-research/xmcgan_image_generation (JAX/Flax).

- config:         `XMCGANConfig` (every constant of the released COCO config, with help text) and the presets
- networks:       the attentional self-modulation generator and the contrastive projection discriminator
- losses:         hinge, sentence-image, word-region and image-image contrastive losses, as functions of tensors
- image_features: the frozen ImageNet network (ResNet-50 logits or VGG-19 fc7) of the image-image loss

Not registered yet: the training recipe follows the engine rewrite.
"""
