"""Shared pytest fixtures: small prepared datasets that several test modules use."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shapes_h5(tmp_path_factory) -> str:
    """A small built-in shapes dataset (96 images, 76 px stored) prepared once per test session."""
    from t2itool.data.sources.shapes import build_shapes

    out = tmp_path_factory.mktemp("shapes") / "shapes.h5"
    build_shapes(out, num_images=96, image_size=76, seed=0)
    return str(out)
