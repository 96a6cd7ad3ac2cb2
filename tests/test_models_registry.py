"""Every registered model at a tiny config: build, forward shapes, one CPU training step that changes the weights of
every network, and a snapshot round trip through `load_snapshot`."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
import torch

from t2itool.encoders.kinds import TextSource
from t2itool.models.context import StepContext
from t2itool.models.recipe import Batch
from t2itool.models.registry import GeneratorOutput, get_model, list_models
from t2itool.training.checkpoint import load_snapshot, save_snapshot

# Tiny settings applied to whichever of these keys a model's config has (image_encoder: XMC-GAN's frozen ImageNet
# network, whose weight file tests do not have).
TINY = {"image_size": 32, "ngf": 8, "ndf": 8, "nf": 8, "gf_dim": 8, "df_dim": 8, "image_encoder": "none"}
BATCH, VOCAB = 4, 40


def tiny_config(spec):
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    return spec.make_config("birds", {k: v for k, v in TINY.items() if k in fields})


def encoders(recipe):
    from t2itool.encoders import ImageEncoder, TextEncoder

    torch.manual_seed(1)
    text = TextEncoder(VOCAB).eval().requires_grad_(False)
    image = ImageEncoder().eval().requires_grad_(False) if recipe.needs_image_encoder else None
    return text, image


def random_noise(spec, config) -> dict[str, torch.Tensor]:
    return {stream.name: torch.randn(BATCH, stream.dim) for stream in spec.noise_streams(config)}


def frozen_damsm_encoders(vocab: int = 40) -> tuple:
    """Random DAMSM text and image encoders (80 px), frozen, as a recipe's step context holds them."""
    from t2itool.encoders import ImageEncoder, TextEncoder

    torch.manual_seed(1)
    return TextEncoder(vocab).eval().requires_grad_(False), ImageEncoder(image_size=80).eval().requires_grad_(False)


def tiny_step(model: str, encoders: tuple, **values) -> tuple:
    """A tiny `model` at the birds preset with `values`, its nets, optimizers, a CPU step context with `encoders`
    and a 4-sample batch: (spec, config, recipe, nets, ctx, batch)."""
    spec = get_model(model)
    config = spec.make_config("birds", values)
    recipe = spec.recipe_cls(config)
    torch.manual_seed(0)
    nets = recipe.build_networks()
    text_encoder, image_encoder = encoders
    ctx = StepContext(
        device=torch.device("cpu"), seed=3, nets=nets, optimizers=recipe.build_optimizers(nets, None),
        text_encoder=text_encoder, image_encoder=image_encoder,
        noise_streams={s.name: s for s in spec.noise_streams(config)},
    )  # fmt: skip
    return spec, config, recipe, nets, ctx, make_batch(recipe, config.max_words)


def make_batch(recipe, max_words: int) -> Batch:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, VOCAB, (BATCH, max_words), generator=g)
    lengths = torch.tensor([max_words, max_words - 2, 5, 3])
    for row, length in enumerate(lengths.tolist()):
        tokens[row, length:] = 0
    return Batch(
        images=[torch.rand(BATCH, 3, s, s, generator=g) * 2 - 1 for s in recipe.image_sizes()],
        tokens=tokens, lengths=lengths, class_ids=torch.tensor([0, 1, 2, 3]), indices=torch.arange(BATCH),
        caption_indices=torch.arange(BATCH), positions=torch.arange(BATCH), global_size=BATCH,
        tokens2=tokens.flip(0), lengths2=lengths.flip(0), pair_label=torch.tensor([1, 0, 0, 1]),
    )  # fmt: skip


@pytest.mark.parametrize("name", list_models())
def test_tiny_model_builds_steps_and_round_trips(name: str, tmp_path: Path) -> None:
    spec = get_model(name)
    config = tiny_config(spec)
    recipe = spec.recipe_cls(config)
    torch.manual_seed(0)
    nets = recipe.build_networks()
    assert "generator" in nets
    text_encoder, image_encoder = encoders(recipe)
    batch = make_batch(recipe, recipe.max_words())

    # Forward: generate() returns images smallest first, the last at the configured size, in [-1, 1].
    generator = nets["generator"]
    text = text_encoder.encode(batch.tokens, batch.lengths)
    with torch.no_grad():
        out = spec.generate(generator.eval(), random_noise(spec, config), text)
    assert isinstance(out, GeneratorOutput)
    assert out.image.shape == (BATCH, 3, config.image_size, config.image_size)
    assert [im.shape[-1] for im in out.images] == sorted(im.shape[-1] for im in out.images)
    assert out.image.abs().max() <= 1.0
    generator.train()

    # One CPU step changes every network that has an optimizer, and reports finite scalars.
    optimizers = recipe.build_optimizers(nets, text_encoder)
    ctx = StepContext(
        device=torch.device("cpu"), seed=0, nets=nets, optimizers=optimizers, text_encoder=text_encoder,
        image_encoder=image_encoder, noise_streams={s.name: s for s in spec.noise_streams(config)},
    )  # fmt: skip
    before = {n: copy.deepcopy(net.state_dict()) for n, net in nets.items()}
    stats = recipe.train_step(batch, ctx)
    assert stats and all(math.isfinite(float(v)) for v in stats.values())
    for n, net in nets.items():
        changed = any(not torch.equal(before[n][k], v) for k, v in net.state_dict().items())
        assert changed, f"{name}: {n} did not change in one training step"
    assert ctx.optimizer_steps >= 2

    # Snapshot round trip: same generator output after load_snapshot.
    path = tmp_path / "snapshot-000001.pt"
    save_snapshot(
        path, model=name, config=config, generator=generator, text=TextSource.damsm(text_encoder),
        vocab_words=["<end>"] + [f"w{i}" for i in range(VOCAB - 1)], vocab_sha256="0" * 64, step=1,
        data={"path": "x.h5"}, ema=False,
    )  # fmt: skip
    snap = load_snapshot(path)
    assert (snap.spec.name, snap.step, snap.image_size, snap.config) == (name, 1, config.image_size, config)
    noise = random_noise(spec, config)
    generator.eval()
    with torch.no_grad():
        expected = spec.generate(generator, noise, text).image
        got = spec.generate(snap.generator, noise, snap.text_encoder.encode(batch.tokens, batch.lengths)).image
    assert torch.equal(expected, got)


@pytest.fixture(scope="module")
def damsm_ckpt(shapes_h5: str, tmp_path_factory) -> str:
    from test_train_loop import make_damsm

    return make_damsm(shapes_h5, tmp_path_factory.mktemp("damsm") / "damsm.pt")


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_two_gloo_processes_match_one(
    name: str, shapes_h5: str, damsm_ckpt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N processes with B/N samples each train like one process with B: noise keyed by global position, batch-coupled
    terms over the gathered global batch, batch norm over the global batch.

    Every process computes with one thread: the intra-op thread count changes the summation order of convolutions,
    and Adam turns those last-bit differences of near-zero gradients into lr-sized steps (sdgan's SCBN generator
    moved 3.6% of its weights by more than lr/4 with 2 threads on an AVX512 CPU, 0% with one)."""
    import json

    from engine_checks import assert_same_updates

    from t2itool.training import train

    spec = get_model(name)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    sets = {k: str(v) for k, v in TINY.items() if k in fields and k != "image_size"}
    common = dict(data=shapes_h5, damsm=damsm_ckpt, out=str(tmp_path), steps=2, snapshot_every=0, workers=0,
                  grid_every=0, grid_size=2, status_every=1, image_size=TINY["image_size"], sets=sets)  # fmt: skip
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # read by the spawned workers' torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = train(name, batch_size=4, **common)
        two = train(name, batch_size=2, nproc=2, **common)
    finally:
        torch.set_num_threads(threads)
    a = torch.load(one.state, map_location="cpu", weights_only=True)
    b = torch.load(two.state, map_location="cpu", weights_only=True)
    lr = max(group["lr"] for opt in a["optimizers"].values() for group in opt["param_groups"])
    assert_same_updates(a, b, lr)
    last = [json.loads((Path(r.run_dir) / "stats.jsonl").read_text().splitlines()[-1]) for r in (one, two)]
    losses = [k for k in last[0] if k.startswith("loss")]
    assert losses
    for key in losses:
        assert last[0][key] == pytest.approx(last[1][key], rel=1e-3, abs=1e-4), key
