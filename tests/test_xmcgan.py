"""`t2itool train xmcgan`: CPU runs through the CLI (a few steps, the issue's --image-size 64 run, sampling), the
schedule (D on every sub-batch, G through D before its last update), gradients of every contrastive term reaching
G and D, the frozen image network, one-line errors for a missing weight file, the spec, and (slow) that it learns
the colours of its captions on the shapes data."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from t2itool.cli.main import app
from t2itool.encoders import TextEncoder
from t2itool.models.context import StepContext
from t2itool.models.recipe import Batch
from t2itool.models.registry import get_model
from t2itool.models.xmcgan import XMCGANConfig, XMCGANRecipe
from t2itool.models.xmcgan import recipe as recipe_module
from t2itool.models.xmcgan.image_features import WEIGHT_FILES, FrozenImageFeatures
from t2itool.models.xmcgan.losses import (
    hinge_d_loss,
    hinge_g_loss,
    image_contrastive_loss,
    sentence_contrastive_loss,
    word_region_loss,
)

runner = CliRunner()
TINY_SETS = ["--set", "gf_dim=4", "--set", "df_dim=4", "--set", "z_dim=16"]
VOCAB, BATCH, WORDS = 30, 4, 6
CONTRASTIVE = ("sentence_weight", "word_weight", "image_weight", "image_features_weight")


@pytest.fixture(scope="module")
def damsm_ckpt(shapes_h5: str, tmp_path_factory) -> str:
    from test_train_loop import make_damsm

    return make_damsm(shapes_h5, tmp_path_factory.mktemp("damsm") / "damsm.pt")


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory) -> str:
    """A torchvision ResNet-50 state dict (random init: the tests need the architecture, not ImageNet)."""
    from torchvision.models import resnet50

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hub") / WEIGHT_FILES["resnet50"]
    torch.save(resnet50(weights=None).state_dict(), path)
    return str(path)


def train_args(data: str, damsm: str, out: Path, *extra: str) -> list[str]:
    return ["train", "xmcgan", "--data", data, "--damsm", damsm, "--out", str(out), "--workers", "0", *TINY_SETS,
            *extra]  # fmt: skip


# --- CLI --------------------------------------------------------------------------------------------------------
def test_cli_trains_a_few_steps_and_samples(shapes_h5: str, damsm_ckpt: str, tmp_path: Path) -> None:
    args = train_args(shapes_h5, damsm_ckpt, tmp_path / "runs", "--steps", "3", "--image-size", "32",
                      "--batch-size", "4", "--set", "image_encoder=none", "--grid-every", "3")  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    lines = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 3
    expected = {"loss_d", "loss_d_hinge", "loss_d_sentence", "loss_d_word", "loss_g", "loss_g_hinge",
                "loss_g_sentence", "loss_g_word", "loss_g_image", "logit_real", "logit_fake"}  # fmt: skip
    assert expected <= set(lines[-1]) and "loss_g_image_features" not in lines[-1]
    assert (run / "grids" / "grid-000003.png").is_file()
    state = torch.load(next((run / "states").iterdir()), map_location="cpu", weights_only=True)
    assert set(state["nets"]) == {"generator", "discriminator"} and state["ema_beta"] == 0.999
    sampled = runner.invoke(app, ["sample", str(run), "--out", str(tmp_path / "samples"), "--text", "a red circle",
                                  "--text", "a blue square", "--visualize"])  # fmt: skip
    assert sampled.exit_code == 0, sampled.output
    assert len((tmp_path / "samples" / "samples.jsonl").read_text().splitlines()) == 2


def test_cli_trains_on_precomputed_words_and_sentences(tmp_path: Path) -> None:
    """`--text precomputed`: word and sentence features stored by `prep --caption-features` (BERT's place), widths
    set to the stored ones; no DAMSM checkpoint needed."""
    import numpy as np

    from t2itool.data.store import Store

    plain, featured = tmp_path / "plain.h5", tmp_path / "featured.h5"
    prep = ["prep", "shapes", "--num-images", "20", "--image-size", "36", "--seed", "3"]
    assert runner.invoke(app, [*prep, "--out", str(plain)]).exit_code == 0
    store = Store(plain)
    images, captions, tokens, dim = store.num_images, len(store.caption_indices(0)), 7, 12
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, tokens + 1, (images, captions))
    np.savez(
        tmp_path / "features.npz",
        keys=np.array(store.keys),
        sentence=rng.standard_normal((images, captions, dim)).astype(np.float32),
        words=rng.standard_normal((images, captions, tokens, dim)).astype(np.float32),
        word_lengths=lengths,
    )
    result = runner.invoke(app, [*prep, "--out", str(featured), "--caption-features", str(tmp_path / "features.npz")])
    assert result.exit_code == 0, result.output
    args = [
        "train",
        "xmcgan",
        "--data",
        str(featured),
        "--text",
        "precomputed",
        "--out",
        str(tmp_path / "runs"),
        "--workers",
        "0",
        "--steps",
        "2",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--grid-every",
        "0",
        *TINY_SETS,
        "--set",
        "image_encoder=none",
        "--set",
        f"sentence_dim={dim}",
        "--set",
        f"word_dim={dim}",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    snapshot = torch.load(next((run / "snapshots").iterdir()), map_location="cpu", weights_only=True)
    assert snapshot["text"]["kind"] == "precomputed" and snapshot["text"]["word_dim"] == dim
    wrong = runner.invoke(app, [*args[:-4], "--set", "sentence_dim=256", "--set", "word_dim=256"])
    assert wrong.exit_code == 2 and "Traceback" not in wrong.output


@pytest.mark.slow  # ResNet-50 at 224 px on CPU: a few seconds per step
def test_issue_command_at_64px_with_the_frozen_resnet(
    shapes_h5: str, damsm_ckpt: str, resnet_file: str, tmp_path: Path
) -> None:
    """The issue's `train xmcgan --data shapes.h5 --damsm D --steps 20 --image-size 64` (small widths, every loss
    on, the frozen ResNet-50 from a weight file) runs on CPU, here for 4 steps to spare CI; the frozen network never
    changes."""
    args = train_args(shapes_h5, damsm_ckpt, tmp_path / "runs", "--steps", "4", "--image-size", "64",
                      "--batch-size", "4", "--set", f"image_encoder_weights={resnet_file}",
                      "--grid-every", "0")  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    last = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 4 and all(torch.isfinite(torch.tensor(float(v))) for v in last.values())
    assert last["loss_g_image_features"] > 0
    state = torch.load(next((run / "states").iterdir()), map_location="cpu", weights_only=True)
    original = torch.load(resnet_file, map_location="cpu", weights_only=True)
    frozen = state["nets"]["image_features"]
    assert all(torch.equal(frozen[f"net.{key}"], value) for key, value in original.items())
    snapshot = torch.load(next((run / "snapshots").iterdir()), map_location="cpu", weights_only=True)
    assert snapshot["generator_is_ema"] and not any("image_features" in key for key in snapshot["generator"])


def assert_one_error_line(result, expect: str) -> None:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "Traceback" not in result.output, result.output
    assert expect in " ".join(result.output.split()), result.output


def test_missing_image_encoder_weights_give_one_line_naming_the_file(
    shapes_h5: str, damsm_ckpt: str, tmp_path: Path
) -> None:
    missing = tmp_path / "weights" / "r50.pth"
    args = train_args(shapes_h5, damsm_ckpt, tmp_path / "runs", "--steps", "1", "--image-size", "32",
                      "--set", f"image_encoder_weights={missing}")  # fmt: skip
    result = runner.invoke(app, args)
    assert_one_error_line(result, f"image_encoder_weights {missing}: no such file")
    assert "resnet50-0676ba61.pth" in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# --- schedule and gradients --------------------------------------------------------------------------------------
def make_batch(size: int, batch: int = BATCH) -> Batch:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, VOCAB, (batch, WORDS), generator=g)
    lengths = torch.tensor([WORDS, 3, 4, 2] * (batch // 4))
    for row, length in enumerate(lengths.tolist()):
        tokens[row, length:] = 0
    return Batch(
        images=[torch.rand(batch, 3, size, size, generator=g) * 2 - 1], tokens=tokens, lengths=lengths,
        class_ids=torch.zeros(batch, dtype=torch.int64), indices=torch.arange(batch),
        caption_indices=torch.arange(batch), positions=torch.arange(batch), global_size=batch,
    )  # fmt: skip


def tiny_recipe(monkeypatch=None, **values) -> XMCGANRecipe:
    settings = dict(image_size=32, gf_dim=2, df_dim=2, z_dim=8, max_words=WORDS, image_encoder="none")
    settings.update(values)
    if settings["image_encoder"] != "none":
        # torchvision's architecture with random weights instead of a weight file
        monkeypatch.setattr(recipe_module, "build_image_features", lambda name, weights: FrozenImageFeatures(name))
    return XMCGANRecipe(XMCGANConfig(**settings))


def run_step(recipe: XMCGANRecipe, nets: dict, batch: Batch) -> tuple[StepContext, dict]:
    torch.manual_seed(3)
    text_encoder = TextEncoder(VOCAB).eval().requires_grad_(False)
    for name in recipe.frozen_modules():
        nets[name].requires_grad_(False)
    ctx = StepContext(
        device=torch.device("cpu"), seed=0, nets=nets, optimizers=recipe.build_optimizers(nets, None),
        text_encoder=text_encoder, noise_streams={s.name: s for s in get_model("xmcgan").noise_streams(recipe.config)},
        batch_size=len(batch), sub_batches=recipe.sub_batches(),
    )  # fmt: skip
    stats = recipe.train_step(batch, ctx)
    return ctx, stats


def grads(net: torch.nn.Module) -> torch.Tensor:
    """Every parameter's gradient, zeros where none arrived (e.g. the region head without the word loss)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in net.parameters()])


@pytest.mark.parametrize("term", CONTRASTIVE)
def test_every_contrastive_term_sends_gradients_where_the_code_does(monkeypatch, term: str) -> None:
    """d_steps=1: G's phase and D's phase both start from the same weights, so switching one term on (every other
    contrastive weight 0) changes the gradients by exactly that term's gradient: non-zero in G for every term, in D
    for the sentence and word terms (real pairs), and nothing in D for the image terms (G only). A detached term
    (the Baekpica port's bug) would change nothing."""
    zero = dict.fromkeys(CONTRASTIVE, 0.0)
    base = tiny_recipe(monkeypatch, d_steps=1, **zero)
    on = tiny_recipe(monkeypatch, d_steps=1, **{**zero, term: 1.0}, image_encoder="resnet50" if
                     term == "image_features_weight" else "none")  # fmt: skip
    torch.manual_seed(0)
    nets = on.build_networks()
    base_nets = {k: copy.deepcopy(v) for k, v in nets.items() if k != "image_features"}
    batch = make_batch(32)
    _, stats = run_step(on, nets, batch)
    _, base_stats = run_step(base, base_nets, batch)
    assert stats["loss_g_hinge"] == base_stats["loss_g_hinge"] and stats["loss_d_hinge"] == base_stats["loss_d_hinge"]
    g_delta = (grads(nets["generator"]) - grads(base_nets["generator"])).abs().sum()
    d_delta = (grads(nets["discriminator"]) - grads(base_nets["discriminator"])).abs().sum()
    assert g_delta > 0
    if term in ("sentence_weight", "word_weight"):
        assert d_delta > 0
    else:
        assert d_delta == 0
    if term == "image_features_weight":
        assert all(p.grad is None for p in nets["image_features"].parameters())


def test_losses_equal_a_hand_computation_of_the_code_step(monkeypatch) -> None:
    """One step at d_steps=2 recomputed by hand from the loss functions: D on part 0, then G on part 1 through D
    after its first update, then D on part 1 with the fakes G made before its update (the code's train_g_d)."""
    recipe = tiny_recipe(monkeypatch, image_encoder="resnet50")
    torch.manual_seed(0)
    nets = recipe.build_networks()
    start = {k: copy.deepcopy(v) for k, v in nets.items()}
    batch = make_batch(32, 8)
    ctx, stats = run_step(recipe, nets, batch)
    assert ctx.optimizer_steps == 3

    c = recipe.config
    generator, disc, frozen = start["generator"], start["discriminator"], start["image_features"]
    optimizer_d = torch.optim.Adam(disc.parameters(), lr=c.lr_d, betas=(c.beta1, c.beta2))
    parts = batch.split(2)
    texts = [ctx.text(part) for part in parts]
    with torch.no_grad():
        fakes = [
            generator(ctx.noise(p, "z"), t.sentence, t.words, t.mask).image for p, t in zip(parts, texts, strict=True)
        ]

    def d_loss(index: int) -> torch.Tensor:
        real, text = parts[index].images[-1], texts[index]
        out = disc(torch.cat([real, fakes[index]]), text.sentence)
        real_logits, fake_logits = out.logits.chunk(2)
        return (
            hinge_d_loss(real_logits, fake_logits)
            + sentence_contrastive_loss(out.features[:4], out.sentence_embedding)
            + word_region_loss(out.regions[:4], text.words, text.mask)
        )

    optimizer_d.zero_grad()
    d_loss(0).backward()
    optimizer_d.step()
    with torch.no_grad():
        real, text = parts[1].images[-1], texts[1]
        out = disc(torch.cat([real, fakes[1]]), text.sentence)
        expected_g = (
            hinge_g_loss(out.logits[4:])
            + sentence_contrastive_loss(out.features[4:], out.sentence_embedding)
            + word_region_loss(out.regions[4:], text.words, text.mask)
            + image_contrastive_loss(out.features[4:], out.features[:4])
            + image_contrastive_loss(frozen(fakes[1]), frozen(real))
        )
        expected_d = d_loss(1)
    assert float(stats["loss_g"]) == pytest.approx(float(expected_g), rel=1e-4)
    assert float(stats["loss_d"]) == pytest.approx(float(expected_d), rel=1e-4)


def test_frozen_network_is_declared_and_off_when_unused(monkeypatch) -> None:
    assert tiny_recipe().frozen_modules() == ()
    assert "image_features" not in tiny_recipe().build_networks()
    assert tiny_recipe(monkeypatch, image_encoder="resnet50", image_features_weight=0.0).frozen_modules() == ()
    recipe = tiny_recipe(monkeypatch, image_encoder="resnet50")
    assert recipe.frozen_modules() == ("image_features",)
    nets = recipe.build_networks()
    optimizers = recipe.build_optimizers(nets, None)
    frozen = {id(p) for p in nets["image_features"].parameters()}
    assert not any(id(p) in frozen for opt in optimizers.values() for g in opt.param_groups for p in g["params"])


# --- spec -------------------------------------------------------------------------------------------------------
def test_spec_presets_text_kinds_and_notes() -> None:
    spec = get_model("xmcgan")
    config = spec.make_config("coco")
    recipe = spec.recipe_cls(config)
    assert (config.image_size, config.max_words, spec.train_presets["coco"]["global_batch"]) == (128, 17, 112)
    assert recipe.sub_batches() == 2 and recipe.default_ema == 0.999
    assert set(recipe.text_kinds) == {"damsm", "precomputed"}
    needs = recipe.text_needs()
    assert (needs.sentence_dim, needs.word_dim) == (256, 256)
    bert = spec.recipe_cls(spec.make_config("coco", {"sentence_dim": 768, "word_dim": 768})).text_needs()
    assert (bert.sentence_dim, bert.word_dim) == (768, 768)
    assert [(s.name, s.dim) for s in spec.noise_streams(config)] == [("z", 128)]
    assert any("DAMSM" in note and "BERT" in note for note in spec.notes)
    assert spec.make_config("birds").image_size == 128
    result = runner.invoke(app, ["models", "xmcgan"])
    assert result.exit_code == 0 and "BERT" in result.output


def test_odd_sub_batches_are_refused_in_one_line(shapes_h5: str, damsm_ckpt: str, tmp_path: Path) -> None:
    args = train_args(shapes_h5, damsm_ckpt, tmp_path / "runs", "--steps", "1", "--image-size", "32",
                      "--batch-size", "3", "--set", "image_encoder=none")  # fmt: skip
    assert_one_error_line(runner.invoke(app, args), "--batch-size 3")


# --- learning -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_xmcgan_learns_the_colours_of_its_captions(learning_data, tmp_path: Path) -> None:
    """Test settings, for a CPU budget: no EMA (at decay 0.999 a 150-step average still weighs the initial generator
    0.999^150 = 86%; with it 150 steps gave 13.8% against a chance of 13.1%), small widths (gf 4, df 8, z 32: the
    16 gf, 128 z generator costs about 3 times as much per step and learns more slowly per step) and lr_g=4e-4, the
    discriminator's rate (the small-data setting of docs/training.md; at the paper's 1e-4 it reached 36.8%)."""
    from learning import colour_agreement

    colour = colour_agreement("xmcgan", learning_data, tmp_path, steps=150, image_size=32, batch_size=32, ema=0,
                              sets={"gf_dim": "4", "df_dim": "8", "z_dim": "32", "lr_g": "4e-4",
                                    "image_encoder": "none"})  # fmt: skip
    print(f"xmcgan colour agreement {colour['value']:.3f}, chance {colour['chance']:.3f}")  # shown with pytest -s
    assert colour["value"] > 2.0 * colour["chance"], colour
