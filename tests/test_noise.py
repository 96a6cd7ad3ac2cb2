"""The one noise sampler: named streams, per-key generators, DF-GAN's truncation, independence of batch layout."""

from __future__ import annotations

import math

import pytest
import torch

from t2itool.noise import NoiseStream, draw, draw_rows, row_seed


def test_truncated_rows_are_bounded_scaled_and_have_the_truncated_normal_spread() -> None:
    z = draw(("k", 1), 20000, 0.88)
    assert z.abs().max() <= 2 * 0.88
    # Var of N(0,1) truncated to [-2, 2]: 1 - 2*2*phi(2)/(Phi(2)-Phi(-2)).
    phi2 = math.exp(-2) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    expected_std = 0.88 * math.sqrt(1 - 4 * phi2 / mass)
    assert z.std().item() == pytest.approx(expected_std, rel=0.03)
    assert torch.equal(z, draw(("k", 1), 20000, 0.88))  # same key, same values


def test_keys_and_streams_are_independent() -> None:
    assert not torch.equal(draw(("a", 1), 16), draw(("a", 2), 16))
    assert not torch.equal(draw((1, 12), 16), draw((11, 2), 16))  # no arithmetic collisions of key parts
    assert row_seed("x", 1) != row_seed("x", "1", 0)


def test_draw_rows_truncates_only_marked_streams_and_ignores_batching() -> None:
    streams = [NoiseStream("z", 64), NoiseStream("ca", 64, truncated=False)]
    keys = [("sample", caption, 0) for caption in range(50)]
    rows = draw_rows(keys, streams, truncation=0.5)
    assert set(rows) == {"z", "ca"} and rows["z"].shape == (50, 64)
    assert rows["z"].abs().max() <= 1.0 and rows["ca"].abs().max() > 1.0
    # A row depends on its key alone: drawing a subset gives the same rows.
    subset = draw_rows(keys[10:13], streams, truncation=0.5)
    assert torch.equal(subset["z"], rows["z"][10:13]) and torch.equal(subset["ca"], rows["ca"][10:13])
    # The untruncated stream does not change with the truncation.
    assert torch.equal(draw_rows(keys, streams, truncation=None)["ca"], rows["ca"])


def test_stream_declarations_are_checked() -> None:
    with pytest.raises(ValueError):
        NoiseStream("z", 0)
    with pytest.raises(ValueError):
        NoiseStream("", 4)
