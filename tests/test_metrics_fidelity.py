"""FID / IS / KID arithmetic through torch-fidelity with the tiny extractor, the offline TF-Inception and torchvision
weight paths (files written here with random values), the missing-weights error, and the reference-feature cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from t2itool.errors import T2IError
from t2itool.metrics import extractors, fidelity, torchvision_fid
from t2itool.metrics.extractors import TINY_EXTRACTOR, TinyFeatureExtractor, register_extractor

CPU = torch.device("cpu")


class RandomImages(Dataset):
    """Counts reads, to prove a cache hit means no image is read."""

    def __init__(self, count: int, size: int = 24, seed: int = 0, same: bool = False) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (count, 3, size, size), generator=generator, dtype=torch.uint8)
        if same:
            self.images[:] = self.images[0]
        self.reads = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        self.reads += 1
        return self.images[index]


def _features(dataset: Dataset, layers: list[str]) -> dict[str, torch.Tensor]:
    return fidelity.extract_features(dataset, TINY_EXTRACTOR, layers, None, CPU, batch_size=16)


def _numpy_fid(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(np.complex128)).real.sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def test_register_extractor_is_idempotent_and_checked() -> None:
    register_extractor(TINY_EXTRACTOR, TinyFeatureExtractor)
    assert TINY_EXTRACTOR in extractors.list_extractors()
    with pytest.raises(ValueError, match="already registered"):
        register_extractor(TINY_EXTRACTOR, torchvision_fid.TorchvisionInceptionPool)


def test_fid_of_a_set_with_itself_is_zero_and_cache_is_used() -> None:
    data = RandomImages(48, seed=1)
    feats = _features(data, ["16"])
    reads_before = data.reads
    result = fidelity.compute_fidelity(data, feats, data, feats, fid=True, extractor=TINY_EXTRACTOR)
    assert abs(result.values["frechet_inception_distance"]) < 1e-6
    assert data.reads == reads_before  # torch-fidelity took the seeded features, it did not re-read images


def test_fid_matches_numpy_formula_and_float64_implementation() -> None:
    a, b = RandomImages(64, seed=2), RandomImages(56, seed=3)
    b.images = (b.images.float() * 0.6).to(torch.uint8)  # a different distribution: FID clearly > 0
    fa, fb = _features(a, ["16"]), _features(b, ["16"])
    result = fidelity.compute_fidelity(a, fa, b, fb, fid=True, extractor=TINY_EXTRACTOR)
    value = result.values["frechet_inception_distance"]
    expected = _numpy_fid(fa["16"].numpy(), fb["16"].numpy())
    assert value > 1e-3
    assert value == pytest.approx(expected, rel=1e-5)
    ours = torchvision_fid.frechet_distance(
        *torchvision_fid.statistics(fa["16"]), *torchvision_fid.statistics(fb["16"])
    )
    assert ours == pytest.approx(expected, rel=1e-6)


def test_inception_score_of_identical_predictions_is_one() -> None:
    same = RandomImages(20, seed=4, same=True)
    result = fidelity.compute_fidelity(same, _features(same, ["10"]), None, None, isc=True, extractor=TINY_EXTRACTOR)
    assert result.values["inception_score_mean"] == pytest.approx(1.0, abs=1e-5)
    varied = RandomImages(20, seed=5)
    varied.images[10:] = 255 - varied.images[10:]
    result = fidelity.compute_fidelity(
        varied, _features(varied, ["10"]), None, None, isc=True, extractor=TINY_EXTRACTOR
    )
    assert result.values["inception_score_mean"] > 1.0


def test_kid_lowers_the_subset_size_and_reports_it() -> None:
    a, b = RandomImages(30, seed=6), RandomImages(40, seed=7)
    result = fidelity.compute_fidelity(
        a, _features(a, ["16"]), b, _features(b, ["16"]), kid=True, fid=True, extractor=TINY_EXTRACTOR, kid_subsets=5
    )
    assert any("lowered from 1000 to 30" in note for note in result.notes)
    assert np.isfinite(result.values["kernel_inception_distance_mean"])
    assert np.isfinite(result.values["kernel_inception_distance_std"])


def test_missing_weights_error_names_file_url_and_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(extractors, "_online", lambda *a, **k: False)
    with pytest.raises(T2IError) as info:
        extractors.resolve_tf_weights(None)
    message = str(info.value)
    assert extractors.TF_WEIGHTS_FILE in message and extractors.TF_WEIGHTS_URL in message
    assert "hub/checkpoints" in message and "--inception-weights" in message
    small = tmp_path / "small.pth"
    small.write_bytes(b"0" * 1000)
    with pytest.raises(T2IError, match="truncated"):
        extractors.resolve_tf_weights(small)
    with pytest.raises(T2IError, match="no such file"):
        extractors.resolve_tf_weights(tmp_path / "absent.pth")


def test_offline_tf_inception_weights_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    # Build torch-fidelity's Inception with random values (no download), save its state dict in its layout.
    with monkeypatch.context() as patch:
        patch.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        module = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / extractors.TF_WEIGHTS_FILE
    torch.save(module.state_dict(), weights)
    assert extractors.resolve_tf_weights(weights) == weights
    a, b = RandomImages(4, size=32, seed=8), RandomImages(4, size=32, seed=9)
    layers = fidelity.default_layers("inception-v3-compat", ("isc", "fid"))
    assert layers == ["2048", "logits_unbiased"]
    fa = fidelity.extract_features(a, "inception-v3-compat", layers, weights, CPU, batch_size=4)
    fb = fidelity.extract_features(b, "inception-v3-compat", ["2048"], weights, CPU, batch_size=4)
    assert fa["2048"].shape == (4, 2048) and fa["logits_unbiased"].shape == (4, 1008)
    result = fidelity.compute_fidelity(a, fa, b, fb, isc=True, fid=True, weights=weights, isc_splits=2)
    assert np.isfinite(result.values["frechet_inception_distance"])
    assert np.isfinite(result.values["inception_score_mean"])


def test_torchvision_flavour_from_weights_file(tmp_path: Path) -> None:
    from torchvision.models import inception_v3

    weights = tmp_path / "inception_v3_google.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), weights)
    model = torchvision_fid.load_torchvision_inception(weights)
    a, b = RandomImages(3, size=32, seed=10), RandomImages(3, size=32, seed=11)
    name = torchvision_fid.TORCHVISION_EXTRACTOR
    fa = fidelity.extract_features(a, name, ["2048"], None, CPU, batch_size=3, model=model)
    fb = fidelity.extract_features(b, name, ["2048"], None, CPU, batch_size=3, model=model)
    assert fa["2048"].shape == (3, 2048)
    value = torchvision_fid.frechet_distance(
        *torchvision_fid.statistics(fa["2048"]), *torchvision_fid.statistics(fb["2048"])
    )
    assert np.isfinite(value) and value >= -1e-6
    with pytest.raises(T2IError, match="no such file"):
        torchvision_fid.load_torchvision_inception(tmp_path / "absent.pth")


def test_reference_cache_hit_and_invalidation(shapes_h5: str, tmp_path: Path) -> None:
    kwargs = dict(resolution=32, extractor=TINY_EXTRACTOR, layers=["16"], cache_dir=tmp_path, batch_size=32)
    first = fidelity.reference_features(shapes_h5, **kwargs)
    assert not first.from_cache and first.path.is_file()
    from t2itool.data.store import Store

    num_test = len(Store(shapes_h5).split_indices("test"))
    assert first.features["16"].shape == (2 * num_test, 16)  # images + horizontal flips
    second = fidelity.reference_features(shapes_h5, **kwargs)
    assert second.from_cache and second.path == first.path
    torch.testing.assert_close(second.features["16"], first.features["16"])
    no_flips = fidelity.reference_features(shapes_h5, **{**kwargs, "resolution": 32}, flips=False)
    assert not no_flips.from_cache and no_flips.path != first.path
    other_size = fidelity.reference_features(shapes_h5, **{**kwargs, "resolution": 16})
    assert not other_size.from_cache and other_size.path != first.path
    other_weights = fidelity.reference_features(shapes_h5, **kwargs, weights_hash="sha256:other")
    assert not other_weights.from_cache
