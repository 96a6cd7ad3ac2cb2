"""AttnGAN's training recipe: the real CLI at a tiny config, the D and G losses against hand computations, the DAMSM
gradient into G, attention figures from `sample --visualize`, and (slow) learning caption colours on shapes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from t2itool.encoders.losses import damsm_loss
from t2itool.models.registry import get_model

VOCAB = 40


@pytest.fixture(scope="module")
def encoders():
    from test_models_registry import frozen_damsm_encoders

    return frozen_damsm_encoders(VOCAB)


def setup(encoders, **sets):
    """Tiny attngan (32 px: stages 8/16/32), its nets, optimizers, a step context and a 4-sample batch."""
    from test_models_registry import tiny_step

    return tiny_step("attngan", encoders, **{"image_size": 32, "gf_dim": 4, "df_dim": 4, **sets})


class LinearDiscriminator(nn.Module):
    """A stand-in stage discriminator whose logits are known linear functions of the input: features = mean pixel
    + w (w a trainable scalar, 0 at the start), cond = a * features + b * s[:, 0], uncond = c * features."""

    def __init__(self, stage_size: int, a: float, b: float, c: float) -> None:
        super().__init__()
        self.stage_size, self.a, self.b, self.c = stage_size, a, b, c
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean((1, 2, 3)) + self.w

    def cond_logits(self, features: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        return self.a * features + self.b * sentence[:, 0]

    def uncond_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.c * features


def test_step_losses_equal_a_hand_computation(encoders) -> None:
    spec, config, recipe, nets, ctx, batch = setup(encoders)
    coefficients = {"d8": (3.0, 2.0, -4.0), "d16": (-2.0, 1.5, 5.0), "d32": (4.0, -3.0, 2.5)}
    for name, (a, b, c) in coefficients.items():
        nets[name] = LinearDiscriminator(nets[name].stage_size, a, b, c)
    ctx.optimizers = recipe.build_optimizers(nets, None)
    text = ctx.text(batch)
    s0 = text.sentence[:, 0]
    with torch.no_grad():  # the step draws the same noise (seed, step, position) and G is deterministic
        out = nets["generator"](ctx.noise(batch, "z"), ctx.noise(batch, "ca"), text.sentence, text.words, text.mask)
        regions, code = ctx.image_encoder(out.images[-1])
        damsm = damsm_loss(regions, code, text.words, text.sentence, text.lengths, batch.class_ids, 4.0, 5.0, 10.0)
    stats = recipe.train_step(batch, ctx)

    def bce1(x):  # BCE against label 1 = softplus(-x); against 0 = softplus(x)
        return F.softplus(-x).mean()

    def bce0(x):
        return F.softplus(x).mean()

    g_total = 0.0
    for (name, (a, b, c)), real, fake in zip(coefficients.items(), batch.images, out.images, strict=True):
        r, f = real.mean((1, 2, 3)), fake.mean((1, 2, 3))
        wrong = a * r[:-1] + b * s0[1:]  # real image j with the sentence of sample j + 1
        d_loss = (bce1(c * r) + bce1(a * r + b * s0)) / 2 + (bce0(c * f) + bce0(a * f + b * s0) + bce0(wrong)) / 3
        assert float(stats[f"loss_{name}"]) == pytest.approx(float(d_loss), rel=1e-5)
        w = float(nets[name].w.detach())  # G sees the discriminator after its update
        assert w != 0.0
        g_total += bce1(c * (f + w)) + bce1(a * (f + w) + b * s0)
    kl = -0.5 * torch.mean(1 + out.logvar - out.mu.pow(2) - out.logvar.exp())
    assert float(stats["loss_damsm"]) == pytest.approx(float(damsm), rel=1e-4)
    assert float(stats["loss_kl"]) == pytest.approx(float(kl), rel=1e-5)
    assert float(stats["loss_g"]) == pytest.approx(float(g_total + 5.0 * damsm + kl), rel=1e-5)


def test_without_unconditional_head_d_loss_is_cond_real_plus_half_fakes(encoders) -> None:
    _, _, recipe, nets, ctx, batch = setup(encoders, unconditional_head=False, damsm_lambda=0.0)
    nets["d8"] = LinearDiscriminator(8, 2.0, 1.0, 0.0)
    ctx.optimizers = recipe.build_optimizers(nets, None)
    text = ctx.text(batch)
    with torch.no_grad():
        out = nets["generator"](ctx.noise(batch, "z"), ctx.noise(batch, "ca"), text.sentence, text.words, text.mask)
    stats = recipe.train_step(batch, ctx)
    r, f, s0 = batch.images[0].mean((1, 2, 3)), out.images[0].mean((1, 2, 3)), text.sentence[:, 0]
    fakes = F.softplus(2 * f + s0).mean() + F.softplus(2 * r[:-1] + s0[1:]).mean()
    expected = F.softplus(-(2 * r + s0)).mean() + fakes / 2
    assert float(stats["loss_d8"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(stats["loss_damsm"]) == 0.0


def test_damsm_term_reaches_the_generator_only(encoders) -> None:
    _, _, recipe, nets, ctx, batch = setup(encoders)
    text = ctx.text(batch)
    generator = nets["generator"]
    out = generator(ctx.noise(batch, "z"), ctx.noise(batch, "ca"), text.sentence, text.words, text.mask)
    recipe.damsm(ctx, out.images[-1], text, batch).backward()
    assert generator.image_heads[2].conv.weight.grad.abs().sum() > 0
    assert generator.next_stages[0].attention.project.weight.grad.abs().sum() > 0
    assert generator.image_heads[0].conv.weight.grad is None  # the small stages' heads do not feed the final image
    assert all(p.grad is None for p in ctx.image_encoder.parameters())

    # In a step, lambda changes only the generator's update (the discriminators update first, on their own losses).
    after = {}
    for lam in (0.0, 50.0):
        _, _, recipe, nets, ctx, batch = setup(encoders, damsm_lambda=lam)
        recipe.train_step(batch, ctx)
        after[lam] = {name: copy.deepcopy(net.state_dict()) for name, net in nets.items()}
    for name in ("d8", "d16", "d32"):
        assert all(torch.equal(v, after[50.0][name][k]) for k, v in after[0.0][name].items()), name
    assert any(not torch.equal(v, after[50.0]["generator"][k]) for k, v in after[0.0]["generator"].items())


def test_spec_presets_noise_and_optimizers() -> None:
    spec = get_model("attngan")
    birds, coco = spec.make_config("birds"), spec.make_config("coco")
    assert (birds.gf_dim, birds.df_dim, birds.r_num, birds.damsm_lambda, birds.max_words) == (32, 64, 2, 5.0, 18)
    assert (coco.gf_dim, coco.df_dim, coco.r_num, coco.damsm_lambda, coco.max_words) == (48, 96, 3, 50.0, 12)
    assert spec.train_presets == {
        "birds": {"global_batch": 20, "epochs": 600},
        "coco": {"global_batch": 14, "epochs": 120},
    }
    streams = {(s.name, s.dim, s.truncated) for s in spec.noise_streams(birds)}
    assert streams == {("z", 100, True), ("ca", 100, False)} and spec.default_truncation(birds) is None
    config = spec.make_config("birds", {"image_size": 64, "gf_dim": 2, "df_dim": 2})
    recipe = spec.recipe_cls(config)
    assert recipe.image_sizes() == (16, 32, 64) and recipe.default_ema == 0.999 and recipe.needs_image_encoder
    optimizers = recipe.build_optimizers(recipe.build_networks(), None)
    assert list(optimizers) == ["generator", "d16", "d32", "d64"]
    assert all(o.defaults["lr"] == 2e-4 and o.defaults["betas"] == (0.5, 0.999) for o in optimizers.values())
    with pytest.raises(Exception, match="attention_mask"):
        spec.make_config("birds", {"attention_mask": "leaky"})
    with pytest.raises(Exception, match="image_size"):
        spec.make_config("birds", {"image_size": 16})


def test_cli_trains_at_64px_and_sample_visualize_writes_attention_figures(
    shapes_h5: str, small_damsm: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from t2itool.cli.main import app

    runner = CliRunner()
    args = ["train", "attngan", "--data", shapes_h5, "--damsm", small_damsm, "--steps", "2", "--image-size", "64",
            "--batch-size", "4", "--workers", "0", "--grid-every", "2", "--snapshot-every", "2",
            "--out", str(tmp_path / "runs"), "--set", "gf_dim=4", "--set", "df_dim=4"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    config = json.loads((run / "config.json").read_text())
    assert "attngan" in json.dumps(config)
    grids = sorted((run / "grids").glob("*.png"))
    assert grids and list((run / "snapshots").glob("*.pt")) and list((run / "states").glob("*.pt"))
    # Each row: the caption's own 64 px image, then 4 cells each showing the three stages side by side.
    from t2itool.training.stats import GAP

    assert Image.open(grids[-1]).size[0] == 64 + 4 * 3 * 64 + 4 * GAP

    caption = "a red circle on a white background"
    out = tmp_path / "samples"
    sampled = runner.invoke(app, ["sample", str(run), "--out", str(out), "--text", caption, "--visualize"])
    assert sampled.exit_code == 0, sampled.output
    (record,) = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    figure = np.asarray(Image.open(out / record["maps"]["attention"]))
    words = [w for w in caption.split() if w not in record["missing_words"]]
    tile = 64 + 14  # a 64 px picture above its 14 px label
    # Row 1: the 16/32/64 px images; rows 2-3: the 32 and 64 px stages' images and one map per caption word.
    assert figure.shape == (3 * tile, max(3, 1 + len(words)) * 64, 3)
    maps = [figure[tile : tile + 64, 64 * (1 + k) : 64 * (2 + k)] for k in range(len(words))]
    assert all(m.std() > 0 for m in maps)
    assert (figure[tile + 64 : 2 * tile, 64:] < 128).any()  # the words are written under the maps


@pytest.mark.slow
def test_attngan_learns_the_colours_of_its_captions(learning_data, tmp_path: Path) -> None:
    from learning import colour_agreement

    # No EMA: at decay 0.999 a 150-step average still weighs the initial generator 0.999^150 = 86%.
    colour = colour_agreement("attngan", learning_data, tmp_path, steps=150, image_size=32, batch_size=32, ema=0,
                              sets={"gf_dim": "16", "df_dim": "16"})  # fmt: skip
    assert colour["value"] > 2.0 * colour["chance"], colour
