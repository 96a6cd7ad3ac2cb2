"""Feature extractors for torch-fidelity: the registration helper, Inception weight-file checks, and a tiny extractor
that tests (and users without Inception weights who only want to check a pipeline) can plug in by name.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.nn.functional as F
import torch_fidelity
from torch import nn
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from t2itool.errors import T2IError

TF_INCEPTION = "inception-v3-compat"
TF_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
TF_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{TF_WEIGHTS_FILE}"
# The real file is 95,628,359 bytes; a file far below that is a truncated download (torch says "Ran out of input").
TF_WEIGHTS_MIN_BYTES = 90_000_000


def register_extractor(name: str, cls: type) -> None:
    """Register a torch-fidelity feature extractor once per process; re-registering the same class is a no-op."""
    existing = FEATURE_EXTRACTORS_REGISTRY.get(name)
    if existing is cls:
        return
    if existing is not None:
        raise ValueError(f"feature extractor {name!r} is already registered as {existing.__name__}")
    torch_fidelity.register_feature_extractor(name, cls)


def list_extractors() -> list[str]:
    return sorted(FEATURE_EXTRACTORS_REGISTRY)


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _online(host: str = "github.com", timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_tf_weights(weights: str | os.PathLike | None) -> Path | None:
    """The TF-Inception weight file to use: `weights` if given, else torch-fidelity's hub cache file, else None when
    online (torch-fidelity downloads it). Raises one T2IError naming the file, URL and destinations otherwise."""
    where = (
        f"download {TF_WEIGHTS_URL} (~96 MB) and put it in {hub_checkpoint_dir()}/ "
        f"($TORCH_HOME/hub/checkpoints/) or pass --inception-weights PATH"
    )
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise T2IError(f"--inception-weights {path}: no such file; {where}")
        size = path.stat().st_size
        if size < TF_WEIGHTS_MIN_BYTES:
            raise T2IError(f"--inception-weights {path}: {size} bytes, expected ~96 MB (truncated download?); {where}")
        return path
    cached = hub_checkpoint_dir() / TF_WEIGHTS_FILE
    if cached.is_file():
        if cached.stat().st_size < TF_WEIGHTS_MIN_BYTES:
            raise T2IError(f"{cached}: {cached.stat().st_size} bytes, expected ~96 MB (truncated); delete it; {where}")
        return cached
    if not _online():
        raise T2IError(f"the TF-Inception weights {TF_WEIGHTS_FILE} are needed and there is no network: {where}")
    return None


class TinyFeatureExtractor(torch_fidelity.FeatureExtractorBase):
    """A fixed random 16-channel conv net (seeded, so features are reproducible): '16' pooled features for FID/KID and
    '10' logits for IS. Not a quality measure: it checks pipelines and arithmetic in seconds."""

    def __init__(self, name: str, features_list: list[str], **kwargs) -> None:
        super().__init__(name, features_list)
        generator = torch.Generator().manual_seed(1234)
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16, 10)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("16", "10")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "10", "fid": "16", "kid": "16", "prc": "16"}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        assert images.dtype == torch.uint8 and images.dim() == 4 and images.shape[1] == 3, tuple(images.shape)
        x = images.float() / 127.5 - 1.0
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        x = torch.tanh(self.conv2(torch.tanh(self.conv1(x))))
        pooled = x.mean(dim=(2, 3))
        features = {"16": pooled, "10": self.head(pooled)}
        return tuple(features[name] for name in self.features_list)


TINY_EXTRACTOR = "t2itool-tiny"
register_extractor(TINY_EXTRACTOR, TinyFeatureExtractor)
