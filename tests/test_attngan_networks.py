"""AttnGAN networks, name table, losses and config: parameter counts and state-dict layout against the official
classes (taoxugit/AttnGAN code/model.py under cfg/bird_attn2.yml, coco_attn2.yml), tiny-config shapes, the mask
fix at generator level, and the losses against hand computations."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import pytest
import torch
from torch import nn

from t2itool.models.attngan import losses
from t2itool.models.attngan.config import PRESETS, TRAIN_PRESETS, AttnGANConfig
from t2itool.models.attngan.networks import (
    AttnGANDiscriminator,
    AttnGANGenerator,
    build_discriminators,
    build_generator,
    init_weights,
)
from t2itool.models.attngan.official_names import (
    DISCRIMINATORS,
    GENERATOR,
    convert_official_state_dict,
    official_to_ours,
)

# Parameters of the official classes (taoxugit/AttnGAN code/model.py) (the key files also count batch-norm buffers).
OFFICIAL_G_PARAMETERS = {"birds": 7_084_592, "coco": 13_811_456}
OFFICIAL_D_PARAMETERS = {64: 6_313_730, 128: 19_424_002, 256: 71_858_946}
# Floats in the official state dicts (parameters + running statistics), from the key files' headers.
OFFICIAL_G_FLOATS = {"birds": 7_121_072, "coco": 13_867_328}
OFFICIAL_D_FLOATS = {64: 6_316_546, 128: 19_429_890, 256: 71_870_978}
# sha256 of the key files' `name (shape)` lines (official-keys/attngan-*.txt without the header, joined by "\n"):
# pins the listings written out below to the files read from the official classes.
OFFICIAL_LISTING_SHA256 = {
    "G_NET-birds": "5f4b353e140e5a6f96e96bf3f7b39f1ee3ff3a02347bd771353ca86ef2caaa39",
    "G_NET-coco": "29dc53cb83b316598d40ec30cd1b4931d66fca9c0e25e34b6768f04caa88975f",
    "D_NET64-birds": "ba417ea41602de8b2eb6977b445c307fbd690c091b4bcf336e1b543bec74015a",
    "D_NET128-birds": "aeeb97a6653e4654ebd3c2c143086d53b6cb5bb66cdec3c38347b16651c88eaf",
    "D_NET256-birds": "3df78b7b3a59c46adf17c1dfee8809f47b42d884ad9ad4ef0239f9ca8c32ffc0",
}


def _bn(prefix: str, channels: int) -> list[tuple[str, tuple[int, ...]]]:
    stats = ("weight", "bias", "running_mean", "running_var")
    return [(f"{prefix}.{s}", (channels,)) for s in stats] + [(f"{prefix}.num_batches_tracked", ())]


def official_generator_listing(gf: int, r_num: int) -> list[tuple[str, tuple[int, ...]]]:
    """G_NET's state dict in official names and order (CA, INIT_STAGE_G at 16 GF, two NEXT_STAGE_G, three heads)."""
    ngf = 16 * gf
    rows = [("ca_net.fc.weight", (400, 256)), ("ca_net.fc.bias", (400,)), ("h_net1.fc.0.weight", (ngf * 32, 200))]
    rows += _bn("h_net1.fc.1", ngf * 32)
    for k in range(1, 5):
        width = ngf >> (k - 1)  # upBlock(w, w / 2): conv w -> 2 * (w / 2)
        rows += [(f"h_net1.upsample{k}.1.weight", (width, width, 3, 3)), *_bn(f"h_net1.upsample{k}.2", width)]
    rows.append(("img_net1.img.0.weight", (3, gf, 3, 3)))
    for stage in (2, 3):
        rows.append((f"h_net{stage}.att.conv_context.weight", (gf, 256, 1, 1)))
        for j in range(r_num):
            block = f"h_net{stage}.residual.{j}.block"
            rows += [(f"{block}.0.weight", (4 * gf, 2 * gf, 3, 3)), *_bn(f"{block}.1", 4 * gf)]
            rows += [(f"{block}.3.weight", (2 * gf, 2 * gf, 3, 3)), *_bn(f"{block}.4", 2 * gf)]
        rows += [(f"h_net{stage}.upsample.1.weight", (2 * gf, 2 * gf, 3, 3)), *_bn(f"h_net{stage}.upsample.2", 2 * gf)]
        rows.append((f"img_net{stage}.img.0.weight", (3, gf, 3, 3)))
    return rows


def official_discriminator_listing(size: int, ndf: int = 64) -> list[tuple[str, tuple[int, ...]]]:
    """D_NET64 / 128 / 256 in official names and order."""
    rows: list[tuple[str, tuple[int, ...]]] = [("img_code_s16.0.weight", (ndf, 3, 4, 4))]
    for i, (c_in, c_out) in enumerate([(ndf, 2 * ndf), (2 * ndf, 4 * ndf), (4 * ndf, 8 * ndf)]):
        rows += [(f"img_code_s16.{2 + 3 * i}.weight", (c_out, c_in, 4, 4)), *_bn(f"img_code_s16.{3 + 3 * i}", c_out)]
    blocks = {
        64: [],
        128: [("img_code_s32", 8, 16, 4), ("img_code_s32_1", 16, 8, 3)],
        256: [("img_code_s32", 8, 16, 4), ("img_code_s64", 16, 32, 4), ("img_code_s64_1", 32, 16, 3),
              ("img_code_s64_2", 16, 8, 3)],
    }[size]  # fmt: skip
    for name, c_in, c_out, kernel in blocks:
        rows += [(f"{name}.0.weight", (c_out * ndf, c_in * ndf, kernel, kernel)), *_bn(f"{name}.1", c_out * ndf)]
    rows += [("UNCOND_DNET.outlogits.0.weight", (1, 8 * ndf, 4, 4)), ("UNCOND_DNET.outlogits.0.bias", (1,))]
    rows += [("COND_DNET.jointConv.0.weight", (8 * ndf, 8 * ndf + 256, 3, 3)), *_bn("COND_DNET.jointConv.1", 8 * ndf)]
    rows += [("COND_DNET.outlogits.0.weight", (1, 8 * ndf, 4, 4)), ("COND_DNET.outlogits.0.bias", (1,))]
    return rows


def listing_sha256(rows: list[tuple[str, tuple[int, ...]]]) -> str:
    return hashlib.sha256("\n".join(f"{name} {shape}" for name, shape in rows).encode()).hexdigest()


def floats(rows: list[tuple[str, tuple[int, ...]]]) -> int:
    return sum(math.prod(shape) for name, shape in rows if not name.endswith("num_batches_tracked"))


def shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# --- parity with the official classes -------------------------------------------------------------------------------


def test_official_listings_written_here_are_the_key_files() -> None:
    for preset, gf, r_num in (("birds", 32, 2), ("coco", 48, 3)):
        rows = official_generator_listing(gf, r_num)
        assert listing_sha256(rows) == OFFICIAL_LISTING_SHA256[f"G_NET-{preset}"]
        assert floats(rows) == OFFICIAL_G_FLOATS[preset]
    for size in (64, 128, 256):
        rows = official_discriminator_listing(size)
        assert listing_sha256(rows) == OFFICIAL_LISTING_SHA256[f"D_NET{size}-birds"]
        assert floats(rows) == OFFICIAL_D_FLOATS[size]


@pytest.mark.parametrize("preset", ["birds", "coco"])
def test_generator_matches_official_parameters_and_names(preset: str) -> None:
    config = AttnGANConfig(**PRESETS[preset])
    generator = build_generator(config)
    assert sum(p.numel() for p in generator.parameters()) == OFFICIAL_G_PARAMETERS[preset]
    official = official_generator_listing(config.gf_dim, config.r_num)
    mapped = {official_to_ours(name, GENERATOR): shape for name, shape in official}
    assert len(mapped) == len(official)  # every official name lands on its own name of ours
    assert mapped == shapes(generator)


@pytest.mark.parametrize("size", [64, 128, 256])
def test_discriminators_match_official_parameters_and_names(size: int) -> None:
    discriminator = build_discriminators(AttnGANConfig(**PRESETS["birds"]))[f"d{size}"]
    assert sum(p.numel() for p in discriminator.parameters()) == OFFICIAL_D_PARAMETERS[size]
    official = official_discriminator_listing(size)
    mapped = {official_to_ours(name, DISCRIMINATORS[size]): shape for name, shape in official}
    assert len(mapped) == len(official)
    assert mapped == shapes(discriminator)


def test_converted_official_state_dict_loads_strictly() -> None:
    torch.manual_seed(0)
    discriminator = AttnGANDiscriminator(128, df_dim=4).apply(init_weights)
    inverse = {official_to_ours(name, DISCRIMINATORS[128]): name for name, _ in official_discriminator_listing(128, 4)}
    official_state = {"module." + inverse[k]: v.clone() for k, v in discriminator.state_dict().items()}  # DDP save
    fresh = AttnGANDiscriminator(128, df_dim=4)
    fresh.load_state_dict(convert_official_state_dict(official_state, DISCRIMINATORS[128]), strict=True)
    images = torch.randn(2, 3, 128, 128)
    torch.testing.assert_close(fresh.eval()(images), discriminator.eval()(images), rtol=0, atol=0)
    with pytest.raises(KeyError, match="img_code_s128"):
        official_to_ours("img_code_s128.0.weight", DISCRIMINATORS[128])


# --- tiny configuration ---------------------------------------------------------------------------------------------

TINY = {"image_size": 64, "gf_dim": 4, "df_dim": 4, "r_num": 1, "text_dim": 16, "z_dim": 8, "cond_dim": 6}


def tiny_inputs(lengths: list[int], num_words: int = 7, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    mask = torch.arange(num_words)[None, :] >= torch.tensor(lengths)[:, None]
    words = torch.randn(batch, 16, num_words, generator=generator).masked_fill(mask[:, None, :], 0.0)
    sentence, z, eps = (torch.randn(batch, d, generator=generator) for d in (16, 8, 6))
    return z, eps, sentence, words, mask


def tiny_generator(mode: str = "fixed", seed: int = 0) -> AttnGANGenerator:
    torch.manual_seed(seed)
    return build_generator(AttnGANConfig(**TINY, attention_mask=mode)).apply(init_weights)


def test_tiny_generator_shapes_at_64px() -> None:
    generator = tiny_generator()
    assert len(generator.init_stage.up_blocks) == 2 and generator.init_stage.base_channels == 16  # 4x4 -> 16 px
    z, eps, sentence, words, mask = tiny_inputs([7, 3, 5])
    out = generator(z, eps, sentence, words, mask)
    assert [tuple(i.shape) for i in out.images] == [(3, 3, 16, 16), (3, 3, 32, 32), (3, 3, 64, 64)]
    assert [tuple(a.shape) for a in out.attention] == [(3, 7, 16, 16), (3, 7, 32, 32)]
    assert out.mu.shape == out.logvar.shape == (3, 6)
    assert all(image.abs().max() <= 1 for image in out.images)
    for attention in out.attention:
        torch.testing.assert_close(attention.sum(dim=1), torch.ones_like(attention[:, 0]))
        assert (
            attention.permute(0, 2, 3, 1)[mask[:, None, None, :].expand_as(attention.permute(0, 2, 3, 1))] == 0
        ).all()


def test_generator_draws_no_random_numbers() -> None:
    generator = tiny_generator()
    inputs = tiny_inputs([7, 2])
    state = torch.get_rng_state()
    first = generator(*inputs)
    assert torch.equal(torch.get_rng_state(), state)
    second = generator(*inputs)
    for a, b in zip(first.images + first.attention, second.images + second.attention, strict=True):
        assert torch.equal(a, b)
    z, eps, *text = inputs
    moved = generator(z, eps + 1.0, *text).images[-1]  # the CA sample depends on the eps given
    assert (moved - first.images[-1]).abs().max() > 1e-4


def test_first_stage_reads_the_ca_sample_before_z() -> None:
    """concat(c, z) as code/model.py INIT_STAGE_G: the first cond_dim inputs of the first linear layer are c."""
    generator = tiny_generator().eval()
    with torch.no_grad():
        generator.init_stage.fc[0].weight[:, 6:] = 0.0  # silence the z columns
    z, eps, sentence, words, mask = tiny_inputs([7, 4])
    reference = generator(z, eps, sentence, words, mask).images[-1]
    assert torch.equal(generator(z + 1.0, eps, sentence, words, mask).images[-1], reference)
    assert (generator(z, eps + 1.0, sentence, words, mask).images[-1] - reference).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["fixed", "official"])
def test_generator_sample_is_independent_of_other_captions_unless_official(mode: str) -> None:
    generator = tiny_generator(mode).eval()  # eval: batch-norm statistics do not couple the samples
    z, eps, sentence, words, mask = tiny_inputs([2, 7])
    reference = generator(z, eps, sentence, words, mask)
    mask2 = mask.clone()
    mask2[1, 4:] = True  # sample 1 loses three words
    changed = generator(z, eps, sentence, words.masked_fill(mask2[:, None, :], 0.0), mask2)
    difference = max((a[0] - b[0]).abs().max().item() for a, b in zip(reference.images, changed.images, strict=True))
    if mode == "fixed":
        assert difference == 0.0
    else:
        assert difference > 1e-4


@pytest.mark.parametrize("size", [16, 32, 64])
def test_tiny_discriminators_give_4x4_features_and_logits(size: int) -> None:
    discriminators = build_discriminators(AttnGANConfig(**TINY))
    assert list(discriminators) == ["d16", "d32", "d64"]
    discriminator = discriminators[f"d{size}"]
    features = discriminator(torch.randn(3, 3, size, size))
    assert features.shape == (3, 32, 4, 4)
    assert discriminator.cond_logits(features, torch.randn(3, 16)).shape == (3,)
    assert discriminator.uncond_logits(features).shape == (3,)


def test_discriminator_without_unconditional_head() -> None:
    discriminator = AttnGANDiscriminator(64, df_dim=4, text_dim=16, unconditional=False)
    assert not any(k.startswith("uncond_head") for k in discriminator.state_dict())
    with pytest.raises(RuntimeError, match="unconditional"):
        discriminator.uncond_logits(torch.zeros(2, 32, 4, 4))


def test_init_weights_is_the_codes_orthogonal_init() -> None:
    torch.manual_seed(1)
    generator = tiny_generator()
    fc = generator.ca.fc  # (4 * 6, 16): orthonormal columns
    torch.testing.assert_close(fc.weight.T @ fc.weight, torch.eye(16), atol=1e-5, rtol=0)
    assert (fc.bias == 0).all()
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all((m.bias == 0).all() and (m.weight - 1).abs().max() < 0.2 for m in norms)
    assert any((m.weight != 1).any() for m in norms)


# --- losses ---------------------------------------------------------------------------------------------------------


def _log_sigmoid(x: float) -> float:
    return math.log(1.0 / (1.0 + math.exp(-x)))


def test_discriminator_loss_against_a_hand_computation() -> None:
    real_cond, fake_cond, wrong = [0.5, -1.0, 2.0], [-0.3, 0.8, -2.0], [1.5, -0.5]
    real_uncond, fake_uncond = [1.0, 0.2, -0.7], [0.1, -1.2, 0.4]

    def real(values: list[float]) -> float:
        return -sum(_log_sigmoid(v) for v in values) / len(values)

    def fake(values: list[float]) -> float:
        return -sum(_log_sigmoid(-v) for v in values) / len(values)

    by_hand = (real(real_uncond) + real(real_cond)) / 2 + (fake(fake_uncond) + fake(fake_cond) + fake(wrong)) / 3
    t = torch.tensor
    loss = losses.discriminator_loss(t(real_cond), t(fake_cond), t(wrong), t(real_uncond), t(fake_uncond))
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    no_uncond = losses.discriminator_loss(t(real_cond), t(fake_cond), t(wrong))
    assert no_uncond.item() == pytest.approx(real(real_cond) + (fake(fake_cond) + fake(wrong)) / 2, rel=1e-6)
    g_term = losses.generator_adversarial_loss(t(fake_cond), t(fake_uncond))
    assert g_term.item() == pytest.approx(real(fake_uncond) + real(fake_cond), rel=1e-6)
    with pytest.raises(ValueError, match="both"):
        losses.discriminator_loss(t(real_cond), t(fake_cond), t(wrong), real_uncond=t(real_uncond))


def test_wrong_pairs_shift_the_sentences_by_one() -> None:
    features, sentence = torch.arange(4.0).view(4, 1, 1, 1), torch.arange(4.0).view(4, 1) * 10
    images, sentences = losses.wrong_pairs(features, sentence)
    assert images.flatten().tolist() == [0, 1, 2] and sentences.flatten().tolist() == [10, 20, 30]
    with pytest.raises(ValueError, match="at least 2"):
        losses.wrong_pairs(features[:1], sentence[:1])


def test_logits_form_equals_the_codes_bce_on_sigmoid_outputs() -> None:
    for bound, code_dtype, rtol in ((5.0, torch.float32, 2e-6), (15.0, torch.float64, 1e-6)):
        logits = torch.linspace(-bound, bound, 61)
        probabilities = torch.sigmoid(logits.to(code_dtype))
        for ours, label in ((losses.bce_real, 1.0), (losses.bce_fake, 0.0)):
            code = nn.BCELoss()(probabilities, torch.full_like(probabilities, label))
            assert ours(logits).item() == pytest.approx(code.item(), rel=rtol)
    # Near saturation the code's float32 value loses digits to 1 - sigmoid(x) (relative error 6e-4 at |x| <= 15), and
    # where the sigmoid rounds to 1 it clamps log(0) to -100; the logits form keeps the true value.
    saturated = torch.tensor([-200.0])
    assert nn.BCELoss()(torch.sigmoid(saturated), torch.ones(1)).item() == 100.0
    assert losses.bce_real(saturated).item() == pytest.approx(200.0)


def test_generator_loss_sums_stages_damsm_and_kl() -> None:
    mu, logvar = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.0, math.log(2.0)]])
    kl = -0.5 * ((1 + 0 - 0.25 - 1) + (1 + math.log(2.0) - 1 - 2)) / 2
    total = losses.generator_loss([torch.tensor(1.5), torch.tensor(2.0)], torch.tensor(0.3), mu, logvar, 5.0)
    assert total.item() == pytest.approx(1.5 + 2.0 + 5.0 * 0.3 + kl, rel=1e-6)


# --- config ---------------------------------------------------------------------------------------------------------


def test_config_fields_presets_and_validation() -> None:
    assert [f.name for f in dataclasses.fields(AttnGANConfig)][:3] == ["image_size", "max_words", "sync_batchnorm"]
    assert all(f.metadata.get("help") for f in dataclasses.fields(AttnGANConfig))
    birds, coco = AttnGANConfig(**PRESETS["birds"]), AttnGANConfig(**PRESETS["coco"])
    assert (birds.gf_dim, birds.r_num, birds.damsm_lambda, birds.max_words) == (32, 2, 5.0, 18)
    assert (coco.gf_dim, coco.df_dim, coco.r_num, coco.damsm_lambda, coco.max_words) == (48, 96, 3, 50.0, 12)
    assert (birds.gamma1, birds.gamma2, birds.gamma3, birds.lr_g, birds.beta1) == (4.0, 5.0, 10.0, 2e-4, 0.5)
    assert TRAIN_PRESETS == {"birds": {"global_batch": 20, "epochs": 600}, "coco": {"global_batch": 14, "epochs": 120}}
    assert AttnGANConfig(image_size=64).stage_sizes == (16, 32, 64) and birds.stage_sizes == (64, 128, 256)
    with pytest.raises(ValueError, match="attention_mask"):
        AttnGANConfig(attention_mask="leaky")
    with pytest.raises(ValueError, match="image_size"):
        AttnGANConfig(image_size=96)
