"""SD-GAN: SCBN against batch norm, the contrastive loss against a hand computation, the Siamese step's terms, the
real CLI at 64 px, and (slow) learning caption colours on shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from t2itool.models.registry import get_model
from t2itool.models.sdgan import SentenceSCBN, WordSCBN, contrastive_loss
from t2itool.models.sdgan.networks import SCBNCondition

VOCAB = 40


def test_contrastive_loss_equals_a_hand_computation_for_same_and_different_pairs() -> None:
    v1 = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    v2 = torch.tensor([[0.03, 0.04], [0.3, 0.4], [1.0, 0.6], [3.0, 4.0]])  # distances 0.05, 0.5, 0.6, 5
    same = torch.tensor([1, 1, 0, 0])
    # same: max(0.05, 0.1)^2 = 0.01, max(0.5, 0.1)^2 = 0.25; different: max(1 - 0.6, 0)^2 = 0.16, max(1 - 5, 0)^2 = 0
    expected = (0.01 + 0.25 + 0.16 + 0.0) / (2 * 4)
    assert float(contrastive_loss(v1, v2, same, alpha=0.1, margin=1.0)) == pytest.approx(expected, rel=1e-5)
    # The alpha floor: a same pair closer than alpha gets no gradient pulling it closer.
    close = torch.tensor([[0.0, 0.0]], requires_grad=True)
    contrastive_loss(close, torch.tensor([[0.03, 0.04]]), torch.tensor([1])).backward()
    assert close.grad.abs().max() == 0


@pytest.mark.parametrize("kind", ["sentence", "word"])
def test_scbn_equals_batch_norm_when_its_condition_outputs_zero(kind: str) -> None:
    torch.manual_seed(0)
    channels, text_dim = 6, 10
    layer = SentenceSCBN(channels, text_dim, 8) if kind == "sentence" else WordSCBN(channels, text_dim)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    x = torch.randn(4, channels, 5, 5) * 3 + 1
    condition = SCBNCondition(
        torch.randn(4, text_dim), torch.randn(4, text_dim, 7), torch.zeros(4, 7, dtype=torch.bool)
    )
    reference = F.batch_norm(x, None, None, layer.weight, layer.bias, training=True)
    assert not torch.allclose(layer(x, condition), reference, atol=1e-3)  # the condition modulates
    last = [layer.mlp[-1]] if kind == "sentence" else [layer.to_gamma, layer.to_beta]
    with torch.no_grad():
        for module in last:
            module.weight.zero_()
            module.bias.zero_()
    assert torch.allclose(layer(x, condition), reference, atol=1e-5)


@pytest.fixture(scope="module")
def encoders():
    from test_models_registry import frozen_damsm_encoders

    return frozen_damsm_encoders(VOCAB)


def setup(encoders, **sets):
    from test_models_registry import tiny_step

    return tiny_step("sdgan", encoders, **{"image_size": 32, "gf_dim": 4, "df_dim": 4, **sets})


def test_siamese_step_contrastive_term_and_total(encoders) -> None:
    from t2itool.models.sdgan.losses import branch_features

    _, config, recipe, nets, ctx, batch = setup(encoders, damsm_lambda=0.0, contrastive_weight=3.0)
    t1, t2 = ctx.text(batch), ctx.text(batch, second=True)
    with torch.no_grad():  # the step's generator pass: both branches at once, same noise
        z, eps = ctx.noise(batch, "z").repeat(2, 1), ctx.noise(batch, "ca").repeat(2, 1)
        words, mask = torch.cat((t1.words, t2.words)), torch.cat((t1.mask, t2.mask))
        out = nets["generator"](z, eps, torch.cat((t1.sentence, t2.sentence)), words, mask)
    stats = recipe.train_step(batch, ctx)
    with torch.no_grad():  # L_c through the updated last-stage discriminator
        features = branch_features(nets["d32"](out.images[-1]), True)
    d = (features[:4] - features[4:]).norm(dim=1)
    y = batch.pair_label.float()
    expected = (y * d.clamp(min=0.1) ** 2 + (1 - y) * (1 - d).clamp(min=0) ** 2).sum() / 8
    assert float(stats["loss_contrastive"]) == pytest.approx(float(expected), rel=1e-4)
    total = stats["loss_g_adv"] + stats["loss_kl"] + 3.0 * stats["loss_contrastive"]
    assert float(stats["loss_g"]) == pytest.approx(float(total), rel=1e-5)


def test_spec_presets_pairs_and_open_values() -> None:
    spec = get_model("sdgan")
    birds, coco = spec.make_config("birds"), spec.make_config("coco")
    assert (birds.gf_dim, birds.df_dim, birds.r_num, birds.damsm_lambda) == (32, 64, 2, 5.0)
    assert (coco.gf_dim, coco.df_dim, coco.r_num, coco.damsm_lambda, coco.max_words) == (48, 96, 3, 50.0, 12)
    assert (birds.contrastive_alpha, birds.contrastive_margin) == (0.1, 1.0)
    recipe = spec.recipe_cls(birds)
    assert recipe.pair_same_probability() == 0.5 and recipe.default_ema == 0.999
    assert "not given by the paper" in " ".join(spec.notes).lower() and "contrastive_weight" in spec.notes[0]
    with pytest.raises(Exception, match="scbn_stage2"):
        spec.make_config("birds", {"scbn_stage2": "pixel"})


def test_cli_trains_3_steps_at_64px_and_samples(shapes_h5: str, small_damsm: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from t2itool.cli.main import app

    runner = CliRunner()
    args = ["train", "sdgan", "--data", shapes_h5, "--damsm", small_damsm, "--steps", "3", "--image-size", "64",
            "--batch-size", "4", "--workers", "0", "--grid-every", "3", "--snapshot-every", "3",
            "--out", str(tmp_path / "runs"), "--set", "gf_dim=4", "--set", "df_dim=4"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    assert "sdgan" in json.dumps(json.loads((run / "config.json").read_text()))
    last = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
    assert "loss_contrastive" in last
    out = tmp_path / "samples"
    sampled = runner.invoke(app, ["sample", str(run), "--out", str(out), "--text", "a red circle"])
    assert sampled.exit_code == 0, sampled.output
    assert len((out / "samples.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_sdgan_learns_the_colours_of_its_captions(learning_data, tmp_path: Path) -> None:
    from learning import colour_agreement

    colour = colour_agreement("sdgan", learning_data, tmp_path, steps=150, image_size=32, batch_size=32, ema=0,
                              sets={"gf_dim": "16", "df_dim": "16"})  # fmt: skip
    assert colour["value"] > 2.0 * colour["chance"], colour
