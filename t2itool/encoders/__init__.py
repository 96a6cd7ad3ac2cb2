"""DAMSM (AttnGAN): the text and image encoders, their losses, checkpoints, pretraining and R-precision.

Every GAN conditions on `TextEncoder`; AttnGAN-family models also train against `damsm_loss`; `score` uses
`r_precision`. Checkpoints come from `t2itool pretrain-damsm` or `t2itool import-damsm` and load with `load_damsm`.
"""

from t2itool.encoders.checkpoint import DAMSM, import_attngan, load_damsm, save_damsm
from t2itool.encoders.features import TextFeatures
from t2itool.encoders.image import ImageEncoder, load_backbone
from t2itool.encoders.losses import damsm_loss, sentence_loss, word_loss
from t2itool.encoders.rprecision import RPrecision, r_precision
from t2itool.encoders.text import TextEncoder

__all__ = [
    "DAMSM",
    "ImageEncoder",
    "RPrecision",
    "TextEncoder",
    "TextFeatures",
    "damsm_loss",
    "import_attngan",
    "load_backbone",
    "load_damsm",
    "r_precision",
    "save_damsm",
    "sentence_loss",
    "word_loss",
]
