"""`t2itool pretrain-damsm` and `import-damsm` through the CLI: a CUB-layout fixture end to end, exact resume, the
loss going down, one-line errors, and the checkpoint feeding train -> sample -> score --r-precision."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from t2itool.cli.main import app
from t2itool.data.store import Store
from t2itool.encoders import ImageEncoder, load_backbone, load_damsm
from t2itool.encoders.attention_maps import LABEL, TILE, render_attention, word_attention
from t2itool.encoders.pretrain import PretrainConfig, clip_text_gradients, epoch_lr, pretrain
from t2itool.encoders.text import TextEncoder

runner = CliRunner()
SMALL = ["--backbone-weights", "random", "--encoder-image-size", "80", "--workers", "0"]


def _invoke(args: list[str]):
    result = runner.invoke(app, args)
    return result, result.output


@pytest.fixture(scope="module")
def birds_h5(cub_root, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("birds") / "birds.h5"
    result, output = _invoke(["prep", "cub", str(cub_root), "--out", str(out), "--image-size", "76"])
    assert result.exit_code == 0, output
    return str(out)


def test_pretrain_cli_on_cub_layout(birds_h5: str, tmp_path: Path) -> None:
    out = tmp_path / "damsm"
    args = ["pretrain-damsm", "--data", birds_h5, "--out", str(out), "--epochs", "2", "--batch-size", "3"]
    result, output = _invoke([*args, *SMALL, "--checkpoint-every", "1"])
    assert result.exit_code == 0, output
    assert "RANDOM Inception-v3 backbone" in output and "R-precision" in output
    stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [s["epoch"] for s in stats] == [1, 2]
    for record in stats:
        assert 0.0 <= record["r_precision"] <= 1.0 and record["r_precision_images"] == 3
        assert record["train_loss"] > 0 and record["test_loss"] > 0
    assert stats[1]["lr"] == pytest.approx(2e-3 * 0.98)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["damsm-epoch0001.pt", "damsm-epoch0002.pt"]
    # Attention maps every --checkpoint-every epochs by default: 3 test captions (the CUB fixture has 3 test images).
    assert sorted(p.name for p in (out / "attention").iterdir()) == ["epoch0001.png", "epoch0002.png"]
    width, height = Image.open(out / "attention" / "epoch0002.png").size
    assert height == 3 * (TILE + LABEL) and width % TILE == 0 and width >= 2 * TILE
    damsm = load_damsm(out / "damsm.pt", store=Store(birds_h5))
    assert (
        damsm.epoch == 2
        and damsm.backbone == "random"
        and damsm.gammas == {"gamma1": 4.0, "gamma2": 5.0, "gamma3": 10.0}
    )
    assert damsm.data["vocab_sha256"] == Store(birds_h5).vocab_sha256
    assert json.loads((out / "config.json").read_text())["backbone"] == "random"
    assert not list(out.rglob("*.tmp*"))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    record = torch.load(path, map_location="cpu", weights_only=True)
    projections = {k: v for k, v in record["image_encoder"].items() if k.startswith("emb_")}
    return {**{f"text.{k}": v for k, v in record["text_encoder"].items()}, **projections}


def test_resume_continues_exactly(shapes_h5: str, tmp_path: Path) -> None:
    common = dict(data=shapes_h5, batch_size=16, backbone_weights="random", encoder_image_size=80, workers=0,
                  checkpoint_every=1, rp_images=8, val_batches=1)  # fmt: skip
    quiet = dict(log=lambda line: None)
    straight = pretrain(PretrainConfig(out=str(tmp_path / "a"), epochs=2, **common), **quiet)
    pretrain(PretrainConfig(out=str(tmp_path / "b"), epochs=1, **common), **quiet)
    resumed = pretrain(
        PretrainConfig(out=str(tmp_path / "b"), epochs=2, resume=str(tmp_path / "b" / "damsm.pt"), **common), **quiet
    )
    assert resumed.epoch == 2 and [s["epoch"] for s in resumed.stats] == [2]
    a, b = _weights(straight.checkpoint), _weights(resumed.checkpoint)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert resumed.stats[0]["train_loss"] == straight.stats[1]["train_loss"]


def test_train_backbone_trains_inception_and_the_checkpoint_loads_frozen(shapes_h5: str, tmp_path: Path) -> None:
    out = tmp_path / "damsm"
    args = ["pretrain-damsm", "--data", shapes_h5, "--out", str(out), "--epochs", "1", "--batch-size", "16"]
    result, output = _invoke([*args, *SMALL, "--train-backbone", "--rp-images", "8"])
    assert result.exit_code == 0, output
    assert "trains with the projections (--train-backbone)" in output and "RANDOM" not in output
    fresh = ImageEncoder(image_size=80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_backbone(fresh, "random", seed=0)  # the backbone pretraining started from (--seed 0)
    damsm = load_damsm(out / "damsm.pt", store=Store(shapes_h5))
    assert damsm.backbone == "random+trained"
    assert json.loads((out / "config.json").read_text())["train_backbone"] is True
    trained, initial = damsm.image_encoder.state_dict(), fresh.state_dict()
    for key in ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.conv.weight", "Mixed_6e.branch1x1.bn.running_var"):
        assert not torch.equal(trained[key], initial[key]), key
    encoder = damsm.image_encoder.train()  # loaded for GAN training: frozen again, batch norm statistics included
    assert not encoder.Mixed_6e.training and not any(p.requires_grad for p in encoder.parameters())


def test_loss_goes_down(shapes_h5: str, tmp_path: Path) -> None:
    config = PretrainConfig(data=shapes_h5, out=str(tmp_path), epochs=4, batch_size=16, backbone_weights="random",
                            encoder_image_size=80, workers=0, rp_images=16, val_batches=2)  # fmt: skip
    stats = pretrain(config, log=lambda line: None).stats
    assert stats[-1]["train_loss"] < stats[0]["train_loss"]
    assert stats[-1]["test_loss"] < stats[0]["test_loss"]


def test_learning_rate_schedule_has_attngan_floor() -> None:
    config = PretrainConfig(data="x", out="y").resolved()
    assert epoch_lr(config, 0) == 2e-3 and epoch_lr(config, 1) == pytest.approx(2e-3 * 0.98)
    late = [epoch_lr(config, e) for e in (200, 400, 599)]
    assert late[0] == late[1] == late[2] and 1.9e-4 < late[0] <= 2e-4  # decays while above lr/10, then stays


def test_gradient_clip_covers_the_embedding() -> None:
    """AttnGAN clips embedding + LSTM together: a loss on the embedding alone must see its gradient scaled down."""
    torch.manual_seed(0)
    encoder = TextEncoder(30)
    tokens = torch.randint(1, 30, (4, 6))
    words, sentence = encoder(tokens, torch.tensor([6, 5, 4, 3]))
    (1e3 * encoder.encoder(tokens).pow(2).sum() + words.sum() + sentence.sum()).backward()
    before = {name: p.grad.clone() for name, p in encoder.named_parameters()}
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in before.values()]))
    assert before["encoder.weight"].norm() > 10 * 0.25  # the embedding dominates and is far above the limit
    returned = clip_text_gradients(encoder, 0.25)
    torch.testing.assert_close(returned, total)
    after = {name: p.grad for name, p in encoder.named_parameters()}
    torch.testing.assert_close(torch.linalg.vector_norm(torch.stack([g.norm() for g in after.values()])),
                               torch.tensor(0.25), rtol=1e-4, atol=0)  # fmt: skip
    for name in before:  # one common factor for every parameter, the embedding included
        torch.testing.assert_close(after[name], before[name] * (0.25 / total), rtol=1e-4, atol=1e-9, msg=name)


def test_word_attention_and_its_picture(tmp_path: Path) -> None:
    torch.manual_seed(0)
    regions, words, lengths = torch.randn(2, 8, 3, 4), torch.randn(2, 8, 5), torch.tensor([5, 2])
    attention = word_attention(regions, words, lengths, gamma1=4.0)
    assert attention.shape == (2, 5, 3, 4)
    sums = attention.sum(dim=(2, 3))
    torch.testing.assert_close(sums[0], torch.ones(5))
    torch.testing.assert_close(sums[1, :2], torch.ones(2))
    assert sums[1, 2:].abs().max() == 0  # padding attends nowhere
    # Word 0 of caption 1 by the formulas: softmax over the caption's 2 words per region, then over regions.
    s = torch.einsum("dt,dr->tr", words[1, :, :2], regions[1].reshape(8, -1)).softmax(0)
    torch.testing.assert_close(attention[1, 0].reshape(-1), (4.0 * s[0]).softmax(0))
    images = torch.rand(2, 3, 20, 20) * 2 - 1
    path = render_attention(
        images, attention, [["a", "red", "bird", "with", "wings"], ["blue", "sky"]], tmp_path / "a.png"
    )
    picture = np.asarray(Image.open(path))
    assert picture.shape == (2 * (TILE + LABEL), 6 * TILE, 3)
    assert (picture[TILE + LABEL :, 3 * TILE :] == 255).all()  # the short caption's row stays blank after 2 words


def test_errors_are_one_line_and_write_nothing(birds_h5: str, shapes_h5: str, tmp_path: Path) -> None:
    base = ["pretrain-damsm", "--data", birds_h5, "--epochs", "1", *SMALL]
    result, output = _invoke([*base, "--out", str(tmp_path / "a"), "--batch-size", "64"])
    assert result.exit_code == 2 and "--batch-size 64" in output and "6 training images" in output
    assert not (tmp_path / "a" / "damsm.pt").exists()
    result, output = _invoke([*base, "--out", str(tmp_path / "c"), "--attention-every", "-1"])
    assert result.exit_code == 2 and "--attention-every -1: must be at least 0" in output
    assert not (tmp_path / "c").exists()
    base = [*base, "--batch-size", "3"]
    result, output = _invoke([*base, "--out", str(tmp_path / "b"), "--backbone-weights", str(tmp_path / "no.pth")])
    assert result.exit_code == 2 and "no.pth: no such file" in output and "Traceback" not in output
    result, output = _invoke([*base, "--out", str(tmp_path / "c"), "--device", "cuda"] if not torch.cuda.is_available()
                             else [*base, "--out", str(tmp_path / "c"), "--device", "bogus"])  # fmt: skip
    assert result.exit_code == 2 and "--device" in output
    result, output = _invoke([*base, "--out", str(tmp_path / "d"), "--preset", "flowers"])
    assert result.exit_code == 2 and "--preset 'flowers'" in output
    # Resuming a checkpoint on a file with another vocabulary is refused, naming both.
    result, output = _invoke([*base, "--out", str(tmp_path / "e")])
    assert result.exit_code == 0, output
    args = [
        "pretrain-damsm",
        "--data",
        shapes_h5,
        "--out",
        str(tmp_path / "e"),
        "--resume",
        str(tmp_path / "e"),
        *SMALL,
    ]
    result, output = _invoke([*args, "--epochs", "2"])
    assert result.exit_code == 2 and "DAMSM vocabulary" in output and "words" in output


def test_import_damsm_cli(birds_h5: str, tmp_path: Path) -> None:
    from t2itool.encoders import ImageEncoder, TextEncoder

    store = Store(birds_h5)
    torch.manual_seed(0)
    text_path, image_path = tmp_path / "text_encoder200.pth", tmp_path / "image_encoder200.pth"
    torch.save(TextEncoder(len(store.vocab)).state_dict(), text_path, _use_new_zipfile_serialization=False)
    torch.save(ImageEncoder().state_dict(), image_path, _use_new_zipfile_serialization=False)
    out = tmp_path / "imported.pt"
    args = ["import-damsm", str(text_path), str(image_path), "--data", birds_h5, "--out", str(out)]
    result, output = _invoke(args)
    assert result.exit_code == 0, output
    assert f"{len(store.vocab)} words" in output and load_damsm(out, store=store).source.startswith("import-damsm")
    result, output = _invoke(["import-damsm", str(image_path), str(image_path), "--data", birds_h5, "--out", str(out)])
    assert result.exit_code == 2 and "text_encoder" in output


@pytest.mark.slow
def test_pretrained_checkpoint_feeds_train_sample_and_score(shapes_h5: str, tmp_path: Path) -> None:
    damsm = tmp_path / "damsm"
    args = ["pretrain-damsm", "--data", shapes_h5, "--out", str(damsm), "--epochs", "1", "--batch-size", "16"]
    result, output = _invoke([*args, *SMALL])
    assert result.exit_code == 0, output
    args = ["train", "dfgan-ssacn", "--data", shapes_h5, "--damsm", str(damsm / "damsm.pt"), "--out", str(tmp_path),
            "--steps", "2", "--batch-size", "4", "--image-size", "32", "--workers", "0", "--set", "ngf=8",
            "--set", "ndf=8"]  # fmt: skip
    result, output = _invoke(args)
    assert result.exit_code == 0, output
    run = next(p for p in tmp_path.iterdir() if p.name.startswith("0000"))
    samples = tmp_path / "samples"
    args = ["sample", str(run), "--out", str(samples), "--split", "test", "--data", shapes_h5]
    result, output = _invoke(args)
    assert result.exit_code == 0, output
    args = ["score", str(samples), "--data", shapes_h5, "--r-precision", "--damsm", str(damsm / "damsm.pt"), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)[0]
    assert record["metric"] == "r_precision" and 0.0 <= record["value"] <= 1.0 and record["std"] is not None
    assert record["num_images"] == len((samples / "samples.jsonl").read_text().splitlines()) > 0
