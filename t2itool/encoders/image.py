"""AttnGAN's DAMSM image encoder: a frozen torchvision Inception-v3 backbone with two trainable projections (the
backbone trains too with `unfreeze_backbone`).

Regions come from Mixed_6e (768 x 17 x 17 at 299 px) through `emb_features` (1x1 conv, no bias); the global code
from Mixed_7c, average-pooled (2048), through `emb_cnn_code` (linear). Layer names match AttnGAN's CNN_ENCODER, so
its released `image_encoder*.pth` state dicts load unchanged. Backbone weights: torchvision's ImageNet download,
a local file, or an explicitly requested random backbone (tests, demo).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from t2itool.errors import T2IError

BACKBONE_LAYERS = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
)
PROJECTION_KEYS = ("emb_features.weight", "emb_cnn_code.weight", "emb_cnn_code.bias")
MIN_IMAGE_SIZE = 75  # the smallest input Inception-v3's stride pattern accepts
RANDOM = "random"
IMAGENET = "imagenet"


class ImageEncoder(nn.Module):
    """Images in [-1, 1] (B, 3, H, W), any size -> regions (B, D, r, r) (r = 17 at 299 px) and code (B, D)."""

    def __init__(
        self,
        embedding_dim: int = 256,  # D, shared with the text encoder's 2 * hidden_dim
        image_size: int = 299,  # inputs are bilinearly resized to this (AttnGAN: 299); smaller is faster, >= 75
    ) -> None:
        super().__init__()
        from torchvision.models import inception_v3

        if image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size {image_size}: Inception-v3 needs at least {MIN_IMAGE_SIZE} px")
        self.embedding_dim, self.image_size = int(embedding_dim), int(image_size)
        # PyTorch's default init is cheap; real weights are loaded afterwards, and `randomize_backbone` gives a
        # well-scaled random backbone when one is explicitly asked for.
        inception = inception_v3(weights=None, aux_logits=False, init_weights=False)
        for name in BACKBONE_LAYERS:
            setattr(self, name, getattr(inception, name))
        self.emb_features = nn.Conv2d(768, self.embedding_dim, kernel_size=1, bias=False)
        self.emb_cnn_code = nn.Linear(2048, self.embedding_dim)
        nn.init.uniform_(self.emb_features.weight, -0.1, 0.1)
        nn.init.uniform_(self.emb_cnn_code.weight, -0.1, 0.1)
        for parameter in self.backbone_parameters():
            parameter.requires_grad_(False)

    def config(self) -> dict[str, Any]:
        return {"embedding_dim": self.embedding_dim, "image_size": self.image_size}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ImageEncoder:
        return cls(**config)

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for name in BACKBONE_LAYERS for p in getattr(self, name).parameters()]

    def projection_parameters(self) -> list[nn.Parameter]:
        return [*self.emb_features.parameters(), *self.emb_cnn_code.parameters()]

    def unfreeze_backbone(self) -> ImageEncoder:
        """Make the backbone trainable, batch norm in train mode with the rest (`pretrain-damsm --train-backbone`:
        AttnGAN's code/pretrain_DAMSM.py keeps it frozen; this is for data an ImageNet or random backbone does not
        describe). Loading a checkpoint gives a frozen encoder again."""
        for parameter in self.backbone_parameters():
            parameter.requires_grad_(True)
        return self.train(self.training)

    def train(self, mode: bool = True) -> ImageEncoder:
        # A frozen backbone (no parameter requires a gradient) keeps its batch-norm statistics too: it stays in eval
        # mode whatever the caller asks.
        super().train(mode)
        if not any(p.requires_grad for p in self.backbone_parameters()):
            for name in BACKBONE_LAYERS:
                getattr(self, name).eval()
        return self

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
        x = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            x = getattr(self, name)(x)
        local = x  # (B, 768, 17, 17) at 299 px
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        pooled = x.mean(dim=(2, 3))  # AttnGAN's 8x8 average pool, for any input size
        return self.emb_features(local), self.emb_cnn_code(pooled)


@torch.no_grad()
def randomize_backbone(encoder: ImageEncoder, seed: int = 0) -> None:
    """A random backbone whose activations neither explode nor vanish: He-normal convolutions (fan-out of ReLU
    branches is what Inception's BasicConv2d feeds), identity batch norm. Only for `--backbone-weights random`."""
    generator = torch.Generator().manual_seed(seed)
    for name in BACKBONE_LAYERS:
        for module in getattr(encoder, name).modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
                module.weight.fill_(1.0)
                module.bias.zero_()


def _backbone_state(state: dict[str, Any], where: str) -> dict[str, torch.Tensor]:
    """The Inception layers of a torchvision Inception-v3 or AttnGAN image encoder state dict (AuxLogits, fc and
    projections dropped; a `module.` prefix from DataParallel removed)."""
    state = {key.removeprefix("module."): value for key, value in state.items()}
    backbone = {key: value for key, value in state.items() if key.split(".", 1)[0] in BACKBONE_LAYERS}
    if not backbone:
        raise T2IError(f"{where}: no Inception-v3 layers found (expected keys such as Conv2d_1a_3x3.conv.weight)")
    return backbone


def load_backbone(encoder: ImageEncoder, weights: str | Path, seed: int = 0) -> str:
    """Fill the backbone from `weights`: 'imagenet' (torchvision's download), a local .pth file (torchvision's
    `inception_v3_google-*.pth` or an AttnGAN image encoder), or 'random' (warned). Returns what was loaded."""
    from torchvision.models import Inception_V3_Weights

    imagenet = Inception_V3_Weights.IMAGENET1K_V1
    if str(weights) == RANDOM:
        warnings.warn(
            "DAMSM image encoder: random Inception-v3 backbone (--backbone-weights random); fine for tests and the "
            "demo, meaningless for real data",
            stacklevel=2,
        )
        randomize_backbone(encoder, seed)
        return RANDOM
    if str(weights) == IMAGENET:
        try:
            state = imagenet.get_state_dict(progress=True)
        except Exception as exc:  # no network, proxy, certificate...: the message says what to do instead
            raise T2IError(
                f"cannot download torchvision's ImageNet Inception-v3 ({imagenet.url}): {type(exc).__name__}; "
                "download that file elsewhere and pass --backbone-weights PATH"
            ) from exc
        where, source = imagenet.url, IMAGENET
    else:
        path = Path(weights)
        if not path.is_file():
            raise T2IError(
                f"--backbone-weights {path}: no such file (expected torchvision's {Path(imagenet.url).name}, "
                "'imagenet' to download it, or 'random' for tests)"
            )
        from t2itool.fileio import load_checkpoint

        state, where, source = load_checkpoint(path, "Inception-v3 state dict"), str(path), f"file:{path.name}"
    backbone = _backbone_state(state, where)
    expected = {k for k in encoder.state_dict() if k.split(".", 1)[0] in BACKBONE_LAYERS}
    missing = sorted(k for k in expected - set(backbone) if not k.endswith("num_batches_tracked"))
    if missing:
        raise T2IError(f"{where}: not an Inception-v3 state dict ({len(missing)} layers missing, e.g. {missing[0]})")
    for key, value in backbone.items():
        target = encoder.state_dict()[key] if key in expected else None
        if target is not None and target.shape != value.shape:
            raise T2IError(f"{where}: {key} has shape {tuple(value.shape)}, Inception-v3 has {tuple(target.shape)}")
    encoder.load_state_dict(backbone, strict=False)
    return source
