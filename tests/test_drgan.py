"""DR-GAN: each loss term against a hand computation (SDL with its fixed and code "variance", RIRM, the G-internal
term, the DNM terms in both KL modes), the step's totals, batch independence of the SDM masks, the real CLI at 64 px,
and (slow) learning caption colours on shapes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from t2itool.models.drgan.losses import (
    dnm_discriminator_terms,
    frobenius,
    generator_internal_term,
    rirm_loss,
    second_moment,
    semantic_disentangling_loss,
)
from t2itool.models.registry import get_model

VOCAB = 40


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _hand_sdl(x11, r11, x12, r12, real, side, variance_is_zero=False):
    """The SDL written out per channel with Python floats."""
    n, channels = len(real), len(real[0])

    def mean(v):
        return [sum(row[k] for row in v) / n for k in range(channels)]

    def var(v):
        m = mean(v)
        return (
            [0.0] * channels
            if variance_is_zero
            else [sum((row[k] - m[k]) ** 2 for row in v) / n for k in range(channels)]
        )

    total = 0.0
    for moment in (mean, var):
        target = moment(real)
        for kept, residual in ((x11, r11), (x12, r12)):
            a_p = sum((a - b) ** 2 for a, b in zip(moment(kept), target, strict=True)) / side
            a_n = sum((a - b) ** 2 for a, b in zip(moment(residual), target, strict=True)) / side
            total += _softplus(a_p - a_n) + math.exp(a_p)
    return total


def test_sdl_equals_a_hand_computation_and_its_variance_half_is_not_constant() -> None:
    torch.manual_seed(0)
    tensors = [torch.randn(3, 2) for _ in range(5)]
    lists = [t.tolist() for t in tensors]
    got = semantic_disentangling_loss(*tensors, side=4.0, variance="fixed")
    assert float(got) == pytest.approx(_hand_sdl(*lists, side=4.0), rel=1e-5)
    # The code's "variance" (sum(x - m))^2 / B is zero: that half is log 2 + 1 per (kept, residual) pair.
    code = semantic_disentangling_loss(*tensors, side=4.0, variance="code")
    assert float(code) == pytest.approx(_hand_sdl(*lists, side=4.0, variance_is_zero=True), rel=1e-5)
    mean_half = float(code) - 2 * (math.log(2) + 1)
    variance_half = float(got) - mean_half
    assert abs(variance_half - 2 * (math.log(2) + 1)) > 1e-3  # fixed: the second moment takes part
    other = [torch.randn(3, 2) * 3 for _ in range(5)]
    other_code = semantic_disentangling_loss(*other, side=4.0, variance="code")
    other_fixed = semantic_disentangling_loss(*other, side=4.0, variance="fixed")
    mean_other = semantic_disentangling_loss(*other, side=4.0, variance="code") - 2 * (math.log(2) + 1)
    assert float(other_fixed - mean_other) != pytest.approx(variance_half, rel=1e-3)
    assert float(other_code - mean_other) == pytest.approx(2 * (math.log(2) + 1), rel=1e-6)
    assert torch.allclose(second_moment(tensors[0], "fixed"), tensors[0].var(dim=0, unbiased=False))
    assert second_moment(tensors[0], "code").abs().max() < 1e-6


def test_rirm_internal_and_dnm_terms_equal_hand_computations() -> None:
    sums = torch.tensor([3.0, 5.0, 8.0])
    assert float(rirm_loss(sums, 4.0)) == pytest.approx(16.0 / 16.0)
    assert float(frobenius(sums)) == pytest.approx(4.0, rel=1e-6)
    sdl, rirm = [torch.tensor(4096.0), torch.tensor(2 * 16384.0)], [torch.tensor(100.0), torch.tensor(300.0)]
    internal = generator_internal_term(sdl, [64.0, 128.0], rirm, base=10.1, rirm_weight=1e-5)
    assert float(internal) == pytest.approx(10.1**3 + 1e-5 * 400, rel=1e-6)

    mu_r, logvar_r = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.2, -0.3]])
    mu_f, logvar_f = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.5]])

    def kl(mu, logvar):  # -1/2 mean(1 + logvar - mu^2 - exp(logvar))
        return (
            -0.5
            * sum(1 + lv - m * m - math.exp(lv) for m, lv in zip(mu[0].tolist(), logvar[0].tolist(), strict=True))
            / 2
        )

    fixed = dnm_discriminator_terms(torch.tensor(7.0), torch.tensor(9.0), mu_r, logvar_r, mu_f, logvar_f)
    assert float(fixed) == pytest.approx(0.1 * 0.01 * 16 + 0.01 * (kl(mu_r, logvar_r) + kl(mu_f, logvar_f)), rel=1e-5)
    code = dnm_discriminator_terms(torch.tensor(7.0), torch.tensor(9.0), mu_r, logvar_r, mu_f, logvar_f, kl_mode="code")
    assert float(code) == pytest.approx(0.1 * 0.01 * 16 + 0.02 * kl(mu_r, logvar_r), rel=1e-5)


@pytest.fixture(scope="module")
def encoders():
    from test_models_registry import frozen_damsm_encoders

    return frozen_damsm_encoders(VOCAB)


def setup(encoders, **sets):
    from test_models_registry import tiny_step

    return tiny_step("drgan", encoders, **{"image_size": 32, "gf_dim": 8, "df_dim": 4, **sets})


def test_step_internal_term_and_total(encoders) -> None:
    _, config, recipe, nets, ctx, batch = setup(encoders)
    generator = nets["generator"]
    text = ctx.text(batch)
    with torch.no_grad():  # the same pass the step makes before any update (train-mode batch statistics)
        out = generator(ctx.noise(batch, "z"), ctx.noise(batch, "ca"), text.sentence, text.words, text.mask)
        sdl, rirm = [], []
        for stage, parts in enumerate(out.parts):
            real = batch.images[stage]
            reconstruction, vector = generator.reconstruct_real(stage, real)
            sdl.append(semantic_disentangling_loss(*parts, vector, side=float(real.shape[-1])))
            rirm.append((reconstruction - real).square().sum() / real.shape[-1] ** 2)
    sides = [float(batch.images[0].shape[-1]), float(batch.images[1].shape[-1])]
    expected_internal = 10.1 ** (float(sdl[0]) / sides[0] ** 2 + float(sdl[1]) / sides[1] ** 2) + 1e-5 * float(
        sum(rirm)
    )
    stats = recipe.train_step(batch, ctx)
    assert float(stats["loss_internal"]) == pytest.approx(expected_internal, rel=1e-5)
    assert float(stats["loss_sdl"]) == pytest.approx(float(sum(sdl)), rel=1e-5)
    total = (
        stats["loss_g_adv"] + 5.0 * stats["loss_damsm"] + stats["loss_kl"] + stats["loss_internal"] + stats["loss_dal"]
    )
    assert float(stats["loss_g"]) == pytest.approx(float(total), rel=1e-5)
    assert all(float(stats[f"loss_dnm_d{s}"]) > 0 for s in config.stage_sizes)


def test_sdm_masks_make_an_image_independent_of_its_batch_unless_the_code_divisor_is_chosen(encoders) -> None:
    for divisor, independent in ((22.0, True), (0.0, False)):
        spec, config, recipe, nets, ctx, batch = setup(encoders, mask_divisor=divisor)
        generator = nets["generator"].eval()
        text = ctx.text(batch)
        z, eps = ctx.noise(batch, "z"), ctx.noise(batch, "ca")
        with torch.no_grad():
            whole = generator(z, eps, text.sentence, text.words, text.mask).images[-1][:1]
            alone = generator(z[:1], eps[:1], text.sentence[:1], text.words[:1], text.mask[:1]).images[-1]
        assert torch.allclose(whole, alone, atol=1e-5) == independent, divisor


def test_spec_presets_and_switches() -> None:
    spec = get_model("drgan")
    birds, coco = spec.make_config("birds"), spec.make_config("coco")
    assert (birds.gf_dim, birds.df_dim, birds.r_num, birds.damsm_lambda, birds.mask_divisor) == (64, 32, 2, 5.0, 22.0)
    assert (coco.r_num, coco.damsm_lambda, coco.max_words, coco.mask_divisor) == (3, 50.0, 12, 20.0)
    assert spec.train_presets == {
        "birds": {"global_batch": 22, "epochs": 1000},
        "coco": {"global_batch": 20, "epochs": 250},
    }
    assert (birds.sdl_base, birds.rirm_weight, birds.dal_weights) == (10.1, 1e-5, (1e-6, 1e-4, 1e-2))
    assert (birds.dnm_weight, birds.dnm_rec_weight, birds.dnm_kl_weight) == (0.1, 0.01, 0.01)
    assert (birds.sdl_variance, birds.dnm_kl) == ("fixed", "fixed")
    assert spec.recipe_cls(birds).default_ema == 0.999
    with pytest.raises(Exception, match="sdl_variance"):
        spec.make_config("birds", {"sdl_variance": "zero"})


def test_cli_trains_3_steps_at_64px_and_samples(shapes_h5: str, small_damsm: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from t2itool.cli.main import app

    runner = CliRunner()
    args = ["train", "drgan", "--data", shapes_h5, "--damsm", small_damsm, "--steps", "3", "--image-size", "64",
            "--batch-size", "4", "--workers", "0", "--grid-every", "3", "--snapshot-every", "3",
            "--out", str(tmp_path / "runs"), "--set", "gf_dim=8", "--set", "df_dim=4"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    assert "drgan" in json.dumps(json.loads((run / "config.json").read_text()))
    last = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
    assert {"loss_sdl", "loss_rirm", "loss_dal"} <= set(last)
    out = tmp_path / "samples"
    sampled = runner.invoke(app, ["sample", str(run), "--out", str(out), "--text", "a red circle"])
    assert sampled.exit_code == 0, sampled.output
    assert len((out / "samples.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_drgan_learns_the_colours_of_its_captions(learning_data, tmp_path: Path) -> None:
    from learning import colour_agreement

    colour = colour_agreement("drgan", learning_data, tmp_path, steps=150, image_size=32, batch_size=32, ema=0,
                              sets={"gf_dim": "16", "df_dim": "16"})  # fmt: skip
    assert colour["value"] > 2.0 * colour["chance"], colour
