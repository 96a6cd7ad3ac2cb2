"""The "PyTorch FID" of the DM-GAN / DF-GAN lineage: torchvision's ImageNet Inception-v3, float [0, 1] input,
bilinear (align_corners=True) resize to 299, ImageNet normalisation, 2048-d pool features; FID in float64 here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from t2itool.errors import T2IError

TORCHVISION_EXTRACTOR = "torchvision-inception-v3"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchvisionInceptionPool(nn.Module):
    """uint8 (B, 3, H, W) -> (B, 2048) pool features of torchvision's Inception-v3. Same call shape as the
    torch-fidelity extractors (`convert_features_tuple_to_dict`), so `extract_features` drives both."""

    features_list = ["2048"]

    def __init__(self, state_dict: dict[str, torch.Tensor]) -> None:
        super().__init__()
        from torchvision.models import inception_v3

        # transform_input=True is torchvision's convention for these weights: it maps ImageNet-normalised input back
        # to the [-1, 1] range the ported Google weights were trained on.
        self.net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
        try:
            self.net.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise T2IError(f"torchvision Inception-v3 weights do not fit ({str(exc).splitlines()[0]})") from exc
        self.net.fc = nn.Identity()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        assert images.dtype == torch.uint8 and images.dim() == 4 and images.shape[1] == 3, tuple(images.shape)
        x = images.float() / 255.0
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=True)
        x = (x - self.mean) / self.std
        features = self.net(x)  # eval mode: no aux logits; fc is Identity, so this is the 2048-d average pool
        return (features,)

    def convert_features_tuple_to_dict(self, features: tuple[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"2048": features[0]}


def check_weights(weights: str | os.PathLike | None) -> None:
    """Fail now, not after sampling, when `load_torchvision_inception(weights)` could not get its weights: a missing
    file, or no file in torchvision's cache and no network."""
    from torchvision.models import Inception_V3_Weights

    from t2itool.metrics.extractors import _online

    if weights is not None:
        if not Path(weights).is_file():
            raise T2IError(f"--inception-weights {weights}: no such file (torchvision inception_v3_google-*.pth)")
        return
    entry = Inception_V3_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name
    if not cached.is_file() and not _online():
        raise T2IError(
            f"torchvision Inception-v3 weights are needed and there is no network: download {entry.url} into "
            f"{cached.parent}/ or pass --inception-weights PATH"
        )


def load_torchvision_inception(weights: str | os.PathLike | None) -> TorchvisionInceptionPool:
    """From a state-dict file (`--inception-weights`) or torchvision's own download (IMAGENET1K_V1)."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise T2IError(f"--inception-weights {path}: no such file (torchvision inception_v3_google-*.pth)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise T2IError(f"--inception-weights {path}: cannot be read ({type(exc).__name__}: {exc})") from exc
        return TorchvisionInceptionPool(state)
    from torchvision.models import Inception_V3_Weights

    entry = Inception_V3_Weights.IMAGENET1K_V1
    try:
        state = entry.get_state_dict(progress=False)
    except Exception as exc:  # URLError / OSError offline
        raise T2IError(
            f"torchvision Inception-v3 weights unavailable ({type(exc).__name__}); download {entry.url} into "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'}/ or pass --inception-weights PATH"
        ) from exc
    return TorchvisionInceptionPool(state)


def statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (N-1)-normalised covariance in float64."""
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise T2IError(f"FID needs at least 2 feature vectors, got shape {array.shape}")
    return array.mean(axis=0), np.cov(array, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) in float64. Tr((Σ1Σ2)^½) = Tr((A Σ2 A)^½) with A = Σ1^½, which is
    symmetric positive semi-definite, so a symmetric eigen-decomposition gives it without scipy."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    assert mu1.shape == mu2.shape and sigma1.shape == sigma2.shape == (mu1.size, mu1.size)
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
