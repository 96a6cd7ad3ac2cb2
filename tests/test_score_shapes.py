"""`score --shapes-agreement`: real shapes images with their own captions agree, with others' captions they do not;
any other data file is refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from t2itool.cli.main import app
from t2itool.data.store import Store

runner = CliRunner()


def _samples(store: Store, out: Path, shift: int) -> Path:
    """Test images as a samples folder; caption k belongs to image k + shift (0 = their own)."""
    out.mkdir()
    images = list(store.split_indices("test"))
    with open(out / "samples.jsonl", "w") as handle:
        for k, index in enumerate(images):
            Image.fromarray(store.image(int(index))).save(out / f"{k}.png")
            caption_of = images[(k + shift) % len(images)]
            caption = store.caption_text(store.caption_indices(int(caption_of))[0])
            handle.write(json.dumps({"file": f"{k}.png", "caption": caption}) + "\n")
    return out


def test_shapes_agreement_of_real_images(shapes_h5: str, tmp_path: Path) -> None:
    store = Store(shapes_h5)
    own = _samples(store, tmp_path / "own", 0)
    result = runner.invoke(app, ["score", str(own), "--data", shapes_h5, "--shapes-agreement", "--json"])
    assert result.exit_code == 0, result.output
    colour, shape = json.loads(result.stdout)
    assert colour["metric"] == "colour_agreement" and shape["metric"] == "shape_agreement"
    assert all(time.strptime(r["time"], "%Y-%m-%dT%H:%M:%S%z") for r in (colour, shape))  # as docs/metrics.md says
    assert colour["value"] > 0.9 and colour["chance"] < 0.3 and colour["num_scored"] == len(store.split_indices("test"))
    other = _samples(store, tmp_path / "other", 1)
    result = runner.invoke(app, ["score", str(other), "--data", shapes_h5, "--shapes-agreement", "--json"])
    mismatched = json.loads(result.stdout)[0]
    assert mismatched["value"] < 0.5 * colour["value"]
    assert np.isfinite(mismatched["chance"])


def test_shapes_agreement_refuses_other_data(cub_root, shapes_h5: str, tmp_path: Path) -> None:
    birds = tmp_path / "birds.h5"
    assert runner.invoke(app, ["prep", "cub", str(cub_root), "--out", str(birds), "--image-size", "32"]).exit_code == 0
    own = _samples(Store(shapes_h5), tmp_path / "own", 0)
    result = runner.invoke(app, ["score", str(own), "--data", str(birds), "--shapes-agreement"])
    assert result.exit_code == 2 and "prep shapes" in result.output
