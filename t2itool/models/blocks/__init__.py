"""Layers and losses used by two or more model packages (nothing model-specific). Model packages import from here,
never from each other.

- discriminator: DF-GAN's residual down block and sentence-conditioned logit head (dfgan, dfgan-ssacn)
- losses:        hinge losses and DF-GAN's matching-aware gradient penalty
- penalty_conv:  a Conv2d whose backward is cheap to differentiate again (MA-GP's double backward)
- conditioning:  conditioning augmentation (StackGAN's ReLU and AttnGAN's GLU variants) and its KL term
- upsample:      nearest x2 / conv3x3 / BN / GLU-or-ReLU up-sampling blocks (StackGAN, AttnGAN family)
"""

from t2itool.models.blocks.conditioning import ConditioningAugmentation, kl_loss
from t2itool.models.blocks.discriminator import ConditionalHead, DownBlock
from t2itool.models.blocks.losses import hinge_d_loss, hinge_g_loss, matching_aware_gp
from t2itool.models.blocks.penalty_conv import PenaltyConv2d, input_gradients_only, with_torch_convs
from t2itool.models.blocks.upsample import GLU, conv3x3, up_block

__all__ = [
    "GLU",
    "PenaltyConv2d",
    "ConditionalHead",
    "ConditioningAugmentation",
    "DownBlock",
    "conv3x3",
    "hinge_d_loss",
    "hinge_g_loss",
    "input_gradients_only",
    "kl_loss",
    "matching_aware_gp",
    "up_block",
    "with_torch_convs",
]
