"""`t2itool import-weights` end to end for AttnGAN and StackGAN: released-layout files (official names and order,
random values) -> snapshot through the CLI -> `sample` and `score` (of samples, and `--generate`) through the CLI,
with the imported weights checked exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from test_import_weights import _damsm, attngan_files, stackgan_files
from typer.testing import CliRunner

from t2itool.cli.main import app
from t2itool.training import checkpoint
from t2itool.weights import state_path_for

runner = CliRunner()


def _sample(snapshot: Path, out: Path, *extra: str) -> list[dict]:
    args = ["sample", str(snapshot), "--out", str(out), "--text", "a small red circle", "--text", "a blue square",
            *extra]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def test_attngan_release_imports_and_samples_with_attention_maps(tmp_path: Path, shapes_h5: str) -> None:
    from t2itool.models.attngan.config import AttnGANConfig
    from t2itool.models.attngan.official_names import GENERATOR, convert_official_state_dict

    small = AttnGANConfig(gf_dim=4, df_dim=2, r_num=2, z_dim=6, cond_dim=5, text_dim=256)
    files, official, _ = attngan_files(tmp_path, small)
    damsm = _damsm(tmp_path, shapes_h5, 128)  # 256-d words and sentences, as the released encoders
    snapshot = tmp_path / "attngan-birds.pt"
    args = ["import-weights", "attngan", str(files[0]), "--data", shapes_h5, "--damsm", str(damsm), "--out",
            str(snapshot), "--preset", "birds"]  # fmt: skip
    args += [part for file in files[1:] for part in ("--discriminator", str(file))]  # netD0, netD1, netD2 in order
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "gf_dim=4" in result.output and "image_size=256" in result.output

    snap = checkpoint.load_snapshot(snapshot)
    assert snap.origin["imported"] and snap.origin["file"] == "netG.pth" and snap.config.r_num == 2
    expected = convert_official_state_dict(official["netG"], GENERATOR)
    got = snap.generator.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    state = torch.load(state_path_for(snapshot), weights_only=True)
    assert sorted(state["nets"]) == ["d128", "d256", "d64", "generator"]

    records = _sample(snapshot, tmp_path / "samples", "--visualize")
    assert len(records) == 2 and all("attention" in r["maps"] for r in records)
    image = np.asarray(Image.open(tmp_path / "samples" / records[0]["file"]))
    assert image.shape == (256, 256, 3) and image.std() > 0
    scoring = ["score", str(tmp_path / "samples"), "--data", shapes_h5, "--shapes-agreement", "--json"]
    result = runner.invoke(app, scoring)
    assert result.exit_code == 0, result.output
    colour = json.loads(result.stdout)[0]
    assert colour["metric"] == "colour_agreement" and colour["num_scored"] == 2 and 0 <= colour["value"] <= 1


def test_stackgan_stage2_release_imports_and_samples_at_256px(tmp_path: Path, shapes_h5: str) -> None:
    from t2itool.models.stackgan.config import StackGANConfig
    from t2itool.models.stackgan.official_names import rename_state_dict

    small = StackGANConfig(stage=2, gf_dim=8, df_dim=4, r_num=2, cond_dim=6, z_dim=7, text_dim=256)
    official, tables = stackgan_files(tmp_path, small)
    damsm = _damsm(tmp_path, shapes_h5, 128)  # DAMSM sentences (256-d) as the text input, t2itool's default
    snapshot = tmp_path / "stackgan-coco-stage2.pt"
    args = ["import-weights", "stackgan", str(tmp_path / "netG.pth"), "--data", shapes_h5, "--damsm", str(damsm),
            "--out", str(snapshot), "--preset", "coco-stage2"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output

    snap = checkpoint.load_snapshot(snapshot)
    assert (snap.config.stage, snap.config.gf_dim, snap.config.image_size) == (2, 8, 256)
    renamed = rename_state_dict(official["netG"], tables["netG"])
    expected = {renamed[k]: v for k, v in official["netG"].items()}
    got = snap.generator.state_dict()
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)

    records = _sample(snapshot, tmp_path / "samples", "--per-caption", "2")
    assert len(records) == 4  # (random values at GF 8 leave the 2-channel last block dead: no pixel check here)
    image = np.asarray(Image.open(tmp_path / "samples" / records[0]["file"]))
    assert image.shape == (256, 256, 3)

    # score --generate treats the imported snapshot like a run's: generate from the test split, then score.
    out = tmp_path / "generated"
    args = ["score", str(snapshot), "--generate", "--samples-out", str(out), "--data", shapes_h5, "--num-images", "4",
            "--shapes-agreement", "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    colour = json.loads(result.stdout)[0]
    assert colour["metric"] == "colour_agreement" and colour["num_scored"] == 4
    generated = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(generated) == 4 and all(r["snapshot"] == str(snapshot) for r in generated)
