"""StackGAN networks, config and losses: official state-dict layout and parameter counts at the coco configuration,
the size rule, tiny configs of both stages, the frozen stage I inside stage II, and the losses by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from t2itool.models.stackgan.config import PRESETS, TRAIN_PRESETS, StackGANConfig
from t2itool.models.stackgan.losses import (
    bce_fake,
    bce_real,
    discriminator_loss,
    generator_loss,
    mismatched_pairs,
)
from t2itool.models.stackgan.networks import (
    StageIDiscriminator,
    StageIGenerator,
    StageIIDiscriminator,
    StageIIGenerator,
    build_discriminator,
    build_generator,
    noise_sizes,
)
from t2itool.models.stackgan.official_names import TABLES, official_to_ours, rename_state_dict, stage2_generator_table

# --- The official state dicts (hanzhanggit/StackGAN-Pytorch code/model.py under cfg/coco_s1.yml, coco_s2.yml), one
# row per official module: "w" = weight only, "wb" = weight and bias, "bn" = a batch norm's five entries.


def _upsample_rows(prefix: str, channels: list[int]) -> list[tuple]:
    rows = []
    for n, (i, o) in enumerate(zip(channels[:-1], channels[1:], strict=True), start=1):
        rows += [(f"{prefix}upsample{n}.1", "w", (o, i, 3, 3)), (f"{prefix}upsample{n}.2", "bn", o)]
    return rows


def _stage1_g_rows(prefix: str = "") -> list[tuple]:
    return [
        (f"{prefix}ca_net.fc", "wb", (256, 1024)),
        (f"{prefix}fc.0", "w", (24576, 228)),
        (f"{prefix}fc.1", "bn", 24576),
        *_upsample_rows(prefix, [1536, 768, 384, 192, 96]),
        (f"{prefix}img.0", "w", (3, 96, 3, 3)),
    ]


_D_CHAIN = [
    ("encode_img.0", "w", (96, 3, 4, 4)),
    ("encode_img.2", "w", (192, 96, 4, 4)), ("encode_img.3", "bn", 192),
    ("encode_img.5", "w", (384, 192, 4, 4)), ("encode_img.6", "bn", 384),
    ("encode_img.8", "w", (768, 384, 4, 4)), ("encode_img.9", "bn", 768),
]  # fmt: skip
_COND_HEAD = [
    ("get_cond_logits.outlogits.0", "w", (768, 896, 3, 3)),
    ("get_cond_logits.outlogits.1", "bn", 768),
    ("get_cond_logits.outlogits.3", "wb", (1, 768, 4, 4)),
]
OFFICIAL_ROWS = {
    "STAGE1_G": _stage1_g_rows(),
    "STAGE1_D": _D_CHAIN + _COND_HEAD,
    "STAGE2_G": [
        *_stage1_g_rows("STAGE1_G."),
        ("ca_net.fc", "wb", (256, 1024)),
        ("encoder.0", "w", (192, 3, 3, 3)),
        ("encoder.2", "w", (384, 192, 4, 4)), ("encoder.3", "bn", 384),
        ("encoder.5", "w", (768, 384, 4, 4)), ("encoder.6", "bn", 768),
        ("hr_joint.0", "w", (768, 896, 3, 3)), ("hr_joint.1", "bn", 768),
        *[row for b in (0, 1) for row in [
            (f"residual.{b}.block.0", "w", (768, 768, 3, 3)), (f"residual.{b}.block.1", "bn", 768),
            (f"residual.{b}.block.3", "w", (768, 768, 3, 3)), (f"residual.{b}.block.4", "bn", 768)]],
        *_upsample_rows("", [768, 384, 192, 96, 48]),
        ("img.0", "w", (3, 48, 3, 3)),
    ],
    "STAGE2_D": [
        *_D_CHAIN,
        ("encode_img.11", "w", (1536, 768, 4, 4)), ("encode_img.12", "bn", 1536),
        ("encode_img.14", "w", (3072, 1536, 4, 4)), ("encode_img.15", "bn", 3072),
        ("encode_img.17", "w", (1536, 3072, 3, 3)), ("encode_img.18", "bn", 1536),
        ("encode_img.20", "w", (768, 1536, 3, 3)), ("encode_img.21", "bn", 768),
        *_COND_HEAD,
        ("get_uncond_logits.outlogits.0", "wb", (1, 768, 4, 4)),
    ],
}  # fmt: skip
# Header lines of the official listings: entries, and floating-point values (parameters + BN running statistics).
OFFICIAL_ENTRIES = {"STAGE1_G": 33, "STAGE1_D": 27, "STAGE2_G": 103, "STAGE2_D": 53}
OFFICIAL_VALUES = {"STAGE1_G": 20_072_864, "STAGE1_D": 12_411_649, "STAGE2_G": 57_214_768, "STAGE2_D": 159_907_586}
# Parameters only (built on CPU from the public classes); stage II G includes its frozen stage I.
OFFICIAL_PARAMETERS = {"STAGE1_G": 20_020_832, "STAGE1_D": 12_407_425, "STAGE2_G": 57_151_312, "STAGE2_D": 159_889_538}


def official_state_shapes(network: str) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for module, kind, dims in OFFICIAL_ROWS[network]:
        if kind == "bn":
            for entry in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{module}.{entry}"] = (dims,)
            shapes[f"{module}.num_batches_tracked"] = ()
        else:
            shapes[f"{module}.weight"] = dims
            if kind == "wb":
                shapes[f"{module}.bias"] = (dims[0],)
    return shapes


def coco_networks(stage: int) -> tuple[nn.Module, nn.Module]:
    config = StackGANConfig(stage=stage, text_dim=1024, **PRESETS["coco"])
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        return build_generator(config), build_discriminator(config)


@pytest.mark.parametrize("stage", [1, 2])
def test_coco_state_dicts_equal_the_official_listings_through_the_name_table(stage: int) -> None:
    for network, ours in zip((f"STAGE{stage}_G", f"STAGE{stage}_D"), coco_networks(stage), strict=True):
        official = official_state_shapes(network)
        assert len(official) == OFFICIAL_ENTRIES[network]
        assert sum(math.prod(s) for k, s in official.items() if "num_batches" not in k) == OFFICIAL_VALUES[network]
        renamed = rename_state_dict(official, TABLES[network])
        our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        assert list(renamed.values()) == list(our_shapes)  # every name once, in the same order
        assert {renamed[k]: s for k, s in official.items()} == our_shapes
        assert sum(p.numel() for p in ours.parameters()) == OFFICIAL_PARAMETERS[network]
    if stage == 2:
        generator = coco_networks(2)[0]
        assert sum(p.numel() for p in generator.trainable_parameters()) == 37_130_480


def test_official_names_strip_data_parallel_prefix_and_reject_unknown_modules() -> None:
    assert official_to_ours("module.upsample3.2.running_var", TABLES["STAGE1_G"]) == "up_blocks.2.2.running_var"
    assert official_to_ours("get_uncond_logits.outlogits.0.bias", TABLES["STAGE2_D"]) == "uncond_head.bias"
    with pytest.raises(KeyError, match="upsample5"):
        official_to_ours("upsample5.1.weight", TABLES["STAGE1_G"])
    # The code's default R_NUM 4 (our birds preset): the table grows with the residual blocks.
    birds = StackGANConfig(stage=2, image_size=32, gf_dim=8, df_dim=4, z_dim=4, cond_dim=4, text_dim=8, r_num=4)
    ours = set(build_generator(birds).state_dict())
    table = stage2_generator_table(4)
    assert {official_to_ours(f"residual.3.block.4.{e}", table) for e in ("weight", "running_mean")} <= ours
    assert {v for v in table.values() if v.startswith("residual.")} == {
        k.rsplit(".", 1)[0] for k in ours if k.startswith("residual.")
    }


# --- Config, presets and the size rule


def test_config_defaults_presets_and_stage_sizes() -> None:
    stage1, stage2 = StackGANConfig(), StackGANConfig(stage=2)
    assert (stage1.image_size, stage1.stage1_image_size) == (64, 64)
    assert (stage2.image_size, stage2.stage1_image_size) == (256, 64)
    assert [f for f in StackGANConfig.__dataclass_fields__][:4] == [
        "image_size",
        "max_words",
        "sync_batchnorm",
        "stage",
    ]
    assert all(f.metadata.get("help") for f in StackGANConfig.__dataclass_fields__.values())
    assert (stage1.text_dim, stage1.coeff_kl, stage1.beta1, stage1.beta2, stage1.lr_g) == (256, 2.0, 0.5, 0.999, 2e-4)
    coco = StackGANConfig(**PRESETS["coco"])
    assert (coco.gf_dim, coco.df_dim, coco.r_num, coco.lr_decay_epochs) == (192, 96, 2, 20)
    birds = StackGANConfig(**PRESETS["birds"])
    assert (birds.gf_dim, birds.df_dim, birds.lr_decay_epochs) == (128, 64, 100)
    assert TRAIN_PRESETS["coco"] == {1: {"batch_size": 128, "epochs": 120}, 2: {"batch_size": 40, "epochs": 100}}
    assert TRAIN_PRESETS["birds"] == {1: {"batch_size": 64, "epochs": 600}, 2: {"batch_size": 64, "epochs": 600}}
    assert isinstance(StackGANConfig(beta2=1).beta2, float)
    assert noise_sizes(stage1) == {"z": 100, "ca_stage1": 128}
    assert noise_sizes(stage2) == {"z": 100, "ca_stage1": 128, "ca_stage2": 128}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"stage": 3}, "stage=3: expected one of 1, 2"),
        ({"image_size": 48}, "power of two >= 8"),
        ({"image_size": 4}, "power of two >= 8"),
        ({"stage": 2, "image_size": 16}, "power of two >= 32"),
        ({"gf_dim": 1, "image_size": 64}, "8 \\* gf_dim must be divisible by 2\\^4"),
        ({"stage": 2, "gf_dim": 6}, "gf_dim divisible by 4"),
        ({"df_dim": 1, "image_size": 128}, "8 must be divisible by 2\\^4"),
        ({"average_embeddings": 0}, "average_embeddings=0: must be >= 1"),
    ],
)
def test_config_rejects_sizes_the_architecture_cannot_build(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StackGANConfig(**values)


def conv_widths(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_channels, m.out_channels) for m in module.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize(
    ("size", "generator_widths", "discriminator_widths"),
    [
        (8, [(64, 32), (32, 3)], [(3, 32)]),
        (16, [(64, 32), (32, 16), (16, 3)], [(3, 16), (16, 32)]),
        (64, [(64, 32), (32, 16), (16, 8), (8, 4), (4, 3)], [(3, 4), (4, 8), (8, 16), (16, 32)]),
    ],
)
def test_stage1_blocks_follow_the_size_rule(size: int, generator_widths: list, discriminator_widths: list) -> None:
    # gf 8 -> 8 gf = 64 channels at 4 x 4, halved per up-block; D ends at 8 df = 32 channels (df 4).
    generator = StageIGenerator(text_dim=6, gf_dim=8, z_dim=5, cond_dim=3, image_size=size)
    discriminator = StageIDiscriminator(df_dim=4, cond_dim=3, image_size=size)
    assert len(generator.up_blocks) == int(math.log2(size)) - 2
    assert conv_widths(generator) == generator_widths
    assert conv_widths(discriminator.down) == discriminator_widths
    assert [isinstance(block[1], nn.BatchNorm2d) for block in discriminator.down] == [
        i > 0 for i in range(len(discriminator_widths))
    ]


@pytest.mark.parametrize(
    ("size", "down_widths"),
    [(32, [(3, 32), (32, 64), (64, 128)]), (64, [(3, 16), (16, 32), (32, 64), (64, 128)])],
)
def test_stage2_discriminator_down_chain_ends_at_32_df(size: int, down_widths: list) -> None:
    discriminator = StageIIDiscriminator(df_dim=4, cond_dim=3, image_size=size)
    assert conv_widths(discriminator.down) == down_widths
    assert conv_widths(discriminator.reduce) == [(128, 64), (64, 32)]
    features = discriminator(torch.randn(2, 3, size, size))
    assert features.shape == (2, 32, 4, 4)


# --- Tiny configs of both stages

TINY = {"text_dim": 12, "gf_dim": 8, "df_dim": 4, "z_dim": 8, "cond_dim": 6, "r_num": 1}


def tiny_inputs(config: StackGANConfig, batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    text = torch.randn(batch, config.text_dim, generator=generator)
    noise = {name: torch.randn(batch, size, generator=generator) for name, size in noise_sizes(config).items()}
    return text, noise


def test_stage1_forward_shapes_and_no_random_draws() -> None:
    config = StackGANConfig(stage=1, image_size=16, **TINY)
    generator, discriminator = build_generator(config), build_discriminator(config)
    text, noise = tiny_inputs(config)
    rng_before = torch.get_rng_state()
    out = generator(text, **noise)
    assert torch.equal(torch.get_rng_state(), rng_before)  # z and eps are inputs: nothing drawn inside
    assert out.image.shape == (3, 3, 16, 16) and out.mu.shape == out.logvar.shape == (3, 6)
    assert out.image.abs().max() <= 1
    generator.eval()
    torch.testing.assert_close(generator(text, **noise).image, generator(text, **noise).image, rtol=0, atol=0)
    features = discriminator(out.image)
    assert features.shape == (3, 32, 4, 4)
    assert discriminator.cond_logits(features, out.mu.detach()).shape == (3,)
    assert not hasattr(discriminator, "uncond_head")
    # A different CA eps changes the image through c = mu + exp(logvar / 2) * eps.
    other = generator(text, noise["z"], noise["ca_stage1"] + 1).image
    assert (other - generator(text, **noise).image).abs().max() > 1e-4


def test_stage2_holds_stage1_and_outputs_four_times_its_size() -> None:
    config = StackGANConfig(stage=2, image_size=64, **TINY)
    generator, discriminator = build_generator(config), build_discriminator(config)
    assert isinstance(generator, StageIIGenerator) and isinstance(discriminator, StageIIDiscriminator)
    assert isinstance(generator.stage1, StageIGenerator) and generator.stage1.image_size == 16
    assert len(generator.up_blocks) == 4 and len(generator.residual) == 1
    text, noise = tiny_inputs(config)
    out = generator(text, **noise)
    assert out.image.shape == (3, 3, 64, 64) and out.stage1_image.shape == (3, 3, 16, 16)
    assert not out.stage1_image.requires_grad and out.image.requires_grad
    # The stage-I image is stage I's own output for (text, z, ca_stage1); stage II's CA uses ca_stage2.
    torch.testing.assert_close(out.stage1_image, generator.stage1(text, noise["z"], noise["ca_stage1"]).image)
    _, mu, logvar = generator.ca(text, noise["ca_stage2"])
    torch.testing.assert_close((out.mu, out.logvar), (mu, logvar))
    features = discriminator(out.image)
    assert features.shape == (3, 32, 4, 4)
    assert discriminator.cond_logits(features, out.mu).shape == discriminator.uncond_logits(features).shape == (3,)


def test_stage1_inside_stage2_is_frozen_and_stays_in_eval_mode() -> None:
    config = StackGANConfig(stage=2, image_size=32, **TINY)
    generator, discriminator = build_generator(config), build_discriminator(config)
    stage1_before = {k: v.clone() for k, v in generator.stage1.state_dict().items()}
    generator.train()
    assert generator.training and not generator.stage1.training
    assert not any(m.training for m in generator.stage1.modules())
    assert all(not p.requires_grad for p in generator.stage1.parameters())
    trainable = generator.trainable_parameters()
    assert {id(p) for p in trainable} == {id(p) for n, p in generator.named_parameters() if not n.startswith("stage1.")}
    optimizer = torch.optim.Adam(trainable, lr=1e-3)
    text, noise = tiny_inputs(config, batch=4)
    for _ in range(2):
        out = generator(text, **noise)
        features = discriminator(out.image)
        loss = generator_loss(
            discriminator.cond_logits(features, out.mu.detach()), out.mu, out.logvar, 2.0,
            discriminator.uncond_logits(features),
        )  # fmt: skip
        optimizer.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
        assert all(p.grad is None for p in generator.stage1.parameters())
        optimizer.step()
    # Weights and batch-norm running statistics of stage I untouched by training steps.
    for key, value in generator.stage1.state_dict().items():
        assert torch.equal(value, stage1_before[key]), key


def test_initialisation_follows_the_official_weights_init() -> None:
    torch.manual_seed(0)
    discriminator = StageIIDiscriminator(df_dim=16, cond_dim=32, image_size=64)
    convs = torch.cat([m.weight.flatten() for m in discriminator.modules() if isinstance(m, nn.Conv2d)])
    assert convs.numel() > 10**6 and convs.mean().abs() < 1e-3 and abs(convs.std().item() - 0.02) < 5e-4
    norms = [m for m in discriminator.modules() if isinstance(m, nn.BatchNorm2d)]
    weights = torch.cat([m.weight for m in norms])
    assert abs(weights.mean().item() - 1) < 5e-3 and abs(weights.std().item() - 0.02) < 5e-3
    biases = [m.bias for m in discriminator.modules() if getattr(m, "bias", None) is not None]
    assert biases and all(torch.equal(b, torch.zeros_like(b)) for b in biases)
    generator = StageIGenerator(text_dim=64, gf_dim=8, z_dim=100, cond_dim=128, image_size=16)
    assert abs(generator.fc[0].weight.std().item() - 0.02) < 5e-4 and generator.fc[0].bias is None
    assert torch.equal(generator.ca.fc.bias, torch.zeros(256))


# --- Losses


def test_wrong_pairs_are_real_samples_with_the_next_samples_condition() -> None:
    torch.manual_seed(0)
    discriminator = StageIDiscriminator(df_dim=4, cond_dim=6, image_size=16).eval()
    features, condition = discriminator(torch.randn(4, 3, 16, 16)), torch.randn(4, 6)
    wrong = discriminator.cond_logits(*mismatched_pairs(features, condition))
    assert wrong.shape == (3,)
    for i in range(3):
        one = discriminator.cond_logits(features[i : i + 1], condition[i + 1 : i + 2])
        torch.testing.assert_close(wrong[i : i + 1], one)


def neg_log_sigmoid(x: float) -> float:
    return -math.log(1 / (1 + math.exp(-x)))


def neg_log_one_minus_sigmoid(x: float) -> float:
    return -math.log(1 - 1 / (1 + math.exp(-x)))


def test_losses_against_hand_computations() -> None:
    real, wrong, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5]), torch.tensor([-3.0, 1.0])
    uncond_real, uncond_fake = torch.tensor([0.0, 4.0]), torch.tensor([1.5, -0.5])
    r = (neg_log_sigmoid(2.0) + neg_log_sigmoid(-1.0)) / 2
    w = neg_log_one_minus_sigmoid(0.5)
    f = (neg_log_one_minus_sigmoid(-3.0) + neg_log_one_minus_sigmoid(1.0)) / 2
    ur = (neg_log_sigmoid(0.0) + neg_log_sigmoid(4.0)) / 2
    uf = (neg_log_one_minus_sigmoid(1.5) + neg_log_one_minus_sigmoid(-0.5)) / 2
    assert bce_real(real).item() == pytest.approx(r, rel=1e-6)
    assert bce_fake(fake).item() == pytest.approx(f, rel=1e-6)
    assert discriminator_loss(real, wrong, fake).item() == pytest.approx(r + (f + w) / 2, rel=1e-6)
    stage2 = discriminator_loss(real, wrong, fake, uncond_real, uncond_fake).item()
    assert stage2 == pytest.approx((r + ur) / 2 + (f + w + uf) / 3, rel=1e-6)
    with pytest.raises(ValueError, match="both unconditional"):
        discriminator_loss(real, wrong, fake, uncond_real)
    # G: BCE(fake -> 1) (+ uncond) + coeff_kl * KL, KL = -1/2 mean(1 + logvar - mu^2 - exp(logvar)).
    mu, logvar = torch.tensor([[0.5, 1.0]]), torch.tensor([[0.0, math.log(2.0)]])
    kl = -0.5 * ((1 + 0 - 0.25 - 1) + (1 + math.log(2.0) - 1 - 2)) / 2
    g_fake = (neg_log_sigmoid(-3.0) + neg_log_sigmoid(1.0)) / 2
    g_uncond = (neg_log_sigmoid(1.5) + neg_log_sigmoid(-0.5)) / 2
    assert generator_loss(fake, mu, logvar, 2.0).item() == pytest.approx(g_fake + 2 * kl, rel=1e-6)
    stage2_g = generator_loss(fake, mu, logvar, 2.0, uncond_fake).item()
    assert stage2_g == pytest.approx(g_fake + g_uncond + 2 * kl, rel=1e-6)


def test_losses_on_logits_equal_the_codes_bce_on_probabilities() -> None:
    # The official heads end in a sigmoid; its losses are nn.BCELoss against label tensors, the wrong pairs scored
    # against fake_labels[1:] (miscc/utils.py). Same numbers here from the logits.
    torch.manual_seed(1)
    batch = 6
    real, fake, wrong = torch.randn(batch) * 3, torch.randn(batch) * 3, torch.randn(batch - 1) * 3
    uncond_real, uncond_fake = torch.randn(batch) * 3, torch.randn(batch) * 3
    mu, logvar = torch.rand(batch, 5), torch.rand(batch, 5)
    bce, ones, zeros = nn.BCELoss(), torch.ones(batch), torch.zeros(batch)
    p = torch.sigmoid
    code_stage1_d = bce(p(real), ones) + (bce(p(fake), zeros) + bce(p(wrong), zeros[1:])) * 0.5
    code_stage2_d = (bce(p(real), ones) + bce(p(uncond_real), ones)) / 2.0 + (
        bce(p(fake), zeros) + bce(p(wrong), zeros[1:]) + bce(p(uncond_fake), zeros)
    ) / 3.0
    code_kl = torch.mean(mu.pow(2).add(logvar.exp()).mul(-1).add(1).add(logvar)).mul(-0.5)
    code_stage2_g = bce(p(fake), ones) + bce(p(uncond_fake), ones) + code_kl * 2.0
    torch.testing.assert_close(discriminator_loss(real, wrong, fake), code_stage1_d)
    torch.testing.assert_close(discriminator_loss(real, wrong, fake, uncond_real, uncond_fake), code_stage2_d)
    torch.testing.assert_close(generator_loss(fake, mu, logvar, 2.0, uncond_fake), code_stage2_g)
    # Where the sigmoid saturates in float32, BCELoss clamps log(0) to -100; the logit form stays exact.
    assert bce_fake(torch.tensor([40.0])).item() == pytest.approx(40.0, rel=1e-6)
    assert F.binary_cross_entropy(p(torch.tensor([40.0])), torch.zeros(1)).item() == pytest.approx(100.0)
