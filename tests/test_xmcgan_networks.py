"""XMC-GAN networks: shapes at 32 and 64 px, the width rules, parameter counts of the released configuration (equal to
the official Flax networks built from google-research/xmcgan_image_generation), spectral norm on every D layer, the
projection head, the word attention against a hand computation, and that padding words never matter."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from t2itool.models.xmcgan import networks
from t2itool.models.xmcgan.config import XMCGANConfig
from t2itool.models.xmcgan.networks import (
    Discriminator,
    Generator,
    build_discriminator,
    build_generator,
    discriminator_plan,
    generator_multipliers,
    word_attention,
)

GF = DF = 4
Z_DIM, SENTENCE_DIM, WORD_DIM = 8, 6, 5


def tiny_networks(size: int, seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    generator = Generator(size, gf=GF, z_dim=Z_DIM, sentence_dim=SENTENCE_DIM, word_dim=WORD_DIM)
    discriminator = Discriminator(size, df=DF, sentence_dim=SENTENCE_DIM, word_dim=WORD_DIM)
    return generator, discriminator


def text(lengths: tuple[int, ...] = (3, 7, 1), num_words: int = 7, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    mask = torch.arange(num_words)[None] >= torch.tensor(lengths)[:, None]
    words = torch.randn(batch, WORD_DIM, num_words, generator=generator).masked_fill(mask[:, None], 0.0)
    sentence = torch.randn(batch, SENTENCE_DIM, generator=generator)
    z = torch.randn(batch, Z_DIM, generator=generator)
    return z, sentence, words, mask


@pytest.mark.parametrize("size", [32, 64])
def test_tiny_networks_build_and_give_the_documented_shapes(size: int) -> None:
    generator, discriminator = tiny_networks(size)
    z, sentence, words, mask = text()
    out = generator(z, sentence, words, mask)
    assert out.image.shape == (3, 3, size, size)
    assert out.image.abs().max() <= 1.0  # tanh: t2itool's [-1, 1]
    assert out.attention.shape == (3, 7, 16, 16)
    torch.testing.assert_close(out.attention.sum(dim=1), torch.ones(3, 16, 16))
    assert (out.attention[mask] == 0).all()  # no weight on padding words
    real = torch.rand(3, 3, size, size) * 2 - 1
    result = discriminator(torch.cat([real, out.image]), sentence)
    assert result.logits.shape == (6,)
    assert result.features.shape == (6, 16 * DF)
    assert (result.features >= 0).all()  # sum-pooled after ReLU
    assert result.sentence_embedding.shape == (3, 16 * DF)
    assert result.regions.shape == (6, WORD_DIM, 16, 16)
    (result.logits.sum() + result.regions.sum()).backward()  # the whole graph is differentiable
    assert generator.fc.weight.grad is not None and generator.fc.weight.grad.abs().sum() > 0


def test_width_rules_follow_the_code_at_128_and_256_px_and_bigGAN_below() -> None:
    assert generator_multipliers(256) == [16, 8, 8, 4, 2, 1]
    assert generator_multipliers(128) == [16, 8, 4, 2, 1]
    assert generator_multipliers(64) == [16, 8, 4, 2]
    assert generator_multipliers(32) == [16, 8, 4]
    assert discriminator_plan(256) == [(2, True), (4, True), (8, True), (8, True), (16, True), (16, False)]
    assert discriminator_plan(128) == [(2, True), (4, True), (8, True), (16, True), (16, False)]
    assert discriminator_plan(64) == [(2, True), (4, True), (8, True), (16, False)]
    assert discriminator_plan(32) == [(2, True), (4, True), (16, False)]
    for bad in (16, 48, 512):
        with pytest.raises(ValueError, match="32, 64, 128 or 256"):
            generator_multipliers(bad)
        with pytest.raises(ValueError, match="32, 64, 128 or 256"):
            discriminator_plan(bad)


@pytest.mark.parametrize(("size", "region_width"), [(32, 1), (64, 2), (128, 4), (256, 8)])
def test_region_head_reads_the_16x16_map(size: int, region_width: int) -> None:
    torch.manual_seed(0)
    discriminator = Discriminator(size, df=2, sentence_dim=3, word_dim=5)
    seen: dict[int, tuple[int, torch.Tensor]] = {}

    def remember(index: int, output: torch.Tensor) -> None:
        seen.setdefault(output.shape[-1], (index, output))

    for index, block in enumerate([discriminator.block0, *discriminator.blocks]):
        block.register_forward_hook(lambda _m, _i, out, index=index: remember(index, out))
    result = discriminator(torch.randn(2, 3, size, size), torch.randn(2, 3))
    index, region_map = seen[16]
    assert index == discriminator.region_index and region_map.shape[1] == 2 * region_width
    assert discriminator.region_proj.in_channels == 2 * region_width  # 128 px: 384 at df 96, as the code
    expected = discriminator.region_proj(region_map)
    torch.testing.assert_close(result.regions, expected)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("size", "text_dim", "generator_params", "discriminator_params"),
    [
        (128, 256, 75_885_827, 86_928_161),
        (128, 768, 78_507_779, 87_911_713),
        (256, 256, 88_670_723, 98_235_425),
        (256, 768, 92_865_539, 99_415_585),
    ],
)
def test_parameter_counts_equal_the_official_networks(
    monkeypatch, size: int, text_dim: int, generator_params: int, discriminator_params: int
) -> None:
    # Reference figures: xmc_net.Generator / Discriminator (gf = df = 96, z 128) initialised with Flax on CPU, text
    # features of width text_dim. Spectral norm adds buffers only; it is skipped here so the meta build is instant.
    monkeypatch.setattr(networks, "spectral_norm", lambda module: module)
    config = XMCGANConfig(image_size=size, sentence_dim=text_dim, word_dim=text_dim)
    with torch.device("meta"):
        assert _count(build_generator(config)) == generator_params
        assert _count(build_discriminator(config)) == discriminator_params


def test_text_width_changes_only_the_text_facing_layers() -> None:
    torch.manual_seed(0)
    narrow = Generator(32, gf=2, z_dim=4, sentence_dim=6, word_dim=6).state_dict()
    wide = Generator(32, gf=2, z_dim=4, sentence_dim=10, word_dim=10).state_dict()
    assert narrow.keys() == wide.keys()
    changed = {key for key in narrow if narrow[key].shape != wide[key].shape}
    # Dense(sentence), the 16x16 projection to the word width, and the per-pixel norms whose condition is
    # concat(word context, global condition).
    expected = {"sentence_proj.weight", "region_proj.weight", "region_proj.bias"}
    expected |= {k for k in narrow if ("spatial_blocks" in k or "head_norm" in k) and k.endswith(("gamma.weight",
                 "beta.weight"))}  # fmt: skip
    assert changed == expected
    d_narrow = Discriminator(32, df=2, sentence_dim=6, word_dim=6).state_dict()
    d_wide = Discriminator(32, df=2, sentence_dim=10, word_dim=10).state_dict()
    changed = {key.split(".")[0] for key in d_narrow if d_narrow[key].shape != d_wide[key].shape}
    assert changed == {"sentence_proj", "region_proj"}


def test_every_discriminator_conv_and_linear_is_spectrally_normalised_and_none_in_the_generator() -> None:
    generator, discriminator = tiny_networks(64)
    layers = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(layers) == 3 + 4 * 3 + 3  # optimized block, 4 blocks (all change width: shortcut), 3 heads
    for layer in layers:
        assert parametrize.is_parametrized(layer, "weight")
        (norm,) = layer.parametrizations.weight
        assert type(norm).__name__ == "_SpectralNorm"
    assert not any(parametrize.is_parametrized(m) for m in generator.modules())
    # Converged power iterations (each training-mode forward runs one) give every effective weight spectral norm 1.
    with torch.no_grad():
        for layer in layers:
            layer.parametrizations.weight[0]._power_method(layer.parametrizations.weight.original.flatten(1), 500)
    discriminator.eval()
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=1e-3)


def test_projection_head_is_dense_plus_inner_product_with_the_projected_sentence() -> None:
    _, discriminator = tiny_networks(32)
    discriminator.eval()
    images, sentence = torch.randn(4, 3, 32, 32), torch.randn(2, SENTENCE_DIM)
    with torch.no_grad():
        result = discriminator(images, sentence)
        adversarial, projection = discriminator.adversarial, discriminator.sentence_proj
        embedding = sentence @ projection.weight.T + projection.bias
        tiled = torch.cat([embedding, embedding])  # 4 images for 2 sentences: concat(real, fake), as the code
        by_hand = result.features @ adversarial.weight[0] + adversarial.bias[0] + (result.features * tiled).sum(1)
    torch.testing.assert_close(result.sentence_embedding, embedding)
    torch.testing.assert_close(result.logits, by_hand)


def test_word_attention_matches_a_hand_computation() -> None:
    torch.manual_seed(0)
    regions, words = torch.randn(2, 4, 3), torch.randn(2, 5, 3)
    mask = torch.tensor([[False, False, True, True, True], [False] * 5])
    context, attention = word_attention(regions, words, mask, rho0=15.0)
    for b in range(2):
        valid = [t for t in range(5) if not mask[b, t]]
        unit_words = {t: [x / math.sqrt(sum(y * y for y in words[b, t].tolist())) for x in words[b, t].tolist()]
                      for t in valid}  # fmt: skip
        for r in range(4):
            region = regions[b, r].tolist()
            norm = math.sqrt(sum(x * x for x in region))
            logits = {t: 15.0 * sum(x * w for x, w in zip(region, unit_words[t], strict=True)) / norm for t in valid}
            top = max(logits.values())
            total = sum(math.exp(v - top) for v in logits.values())
            weights = {t: math.exp(logits[t] - top) / total for t in valid}
            for t in range(5):
                assert attention[b, r, t].item() == pytest.approx(weights.get(t, 0.0), abs=1e-6)
            for d in range(3):
                expected = sum(weights[t] * unit_words[t][d] for t in valid)
                assert context[b, r, d].item() == pytest.approx(expected, abs=1e-6)
    # A caption with every word masked gets uniform attention, not NaN.
    context, attention = word_attention(regions, words, torch.ones(2, 5, dtype=torch.bool), rho0=15.0)
    torch.testing.assert_close(attention, torch.full((2, 4, 5), 0.2))


@pytest.mark.parametrize("train", [True, False])
def test_padding_words_never_influence_the_generator(train: bool) -> None:
    generator, _ = tiny_networks(32)
    generator.train(train)
    z, sentence, words, mask = text()
    garbage = words + 100.0 * torch.randn(words.shape) * mask[:, None]
    assert not torch.equal(garbage, words)
    with torch.no_grad():
        clean, noisy = generator(z, sentence, words, mask), generator(z, sentence, garbage, mask)
    torch.testing.assert_close(noisy.image, clean.image, rtol=0, atol=1e-6)
    torch.testing.assert_close(noisy.attention, clean.attention, rtol=0, atol=1e-7)
    # Without the mask the same garbage does change the image: the test can see an influence.
    with torch.no_grad():
        unmasked = generator(z, sentence, garbage, None)
    assert (unmasked.image - clean.image).abs().max() > 1e-3


def test_generator_draws_no_random_numbers() -> None:
    generator, _ = tiny_networks(32)
    z, sentence, words, mask = text()
    for mode in (True, False):
        generator.train(mode)
        state = torch.get_rng_state()
        with torch.no_grad():
            first = generator(z, sentence, words, mask).image
            second = generator(z, sentence, words, mask).image
        assert torch.equal(torch.get_rng_state(), state)
        torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_generator_batch_norms_are_plain_and_follow_the_code() -> None:
    generator = build_generator(XMCGANConfig(image_size=32, gf_dim=2, z_dim=4))
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 2 * 3 + 1  # two per block, one in the head
    for norm in norms:
        assert type(norm) is nn.BatchNorm2d and not norm.affine  # gamma/beta come from the condition
        assert norm.momentum == pytest.approx(0.1) and norm.eps == pytest.approx(1e-5)  # Flax momentum 0.9
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(build_generator(XMCGANConfig(image_size=32, gf_dim=2, z_dim=4)))
    assert synced.state_dict().keys() == generator.state_dict().keys()


def test_conditional_batch_norm_is_xhat_times_one_plus_gamma_plus_beta() -> None:
    torch.manual_seed(0)
    norm = networks.ConditionalBatchNorm(3, 4, momentum=0.1, eps=1e-5).train()
    x, cond = torch.randn(5, 3, 2, 2), torch.randn(5, 4)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    x_hat = (x - mean) / torch.sqrt(var + 1e-5)
    gamma = (cond @ norm.gamma.weight.T + norm.gamma.bias)[:, :, None, None]
    beta = (cond @ norm.beta.weight.T + norm.beta.bias)[:, :, None, None]
    torch.testing.assert_close(norm(x, cond), x_hat * (1 + gamma) + beta)


def test_weights_use_jax_glorot_normal_and_zero_biases() -> None:
    torch.manual_seed(0)
    layer = networks.conv(256, 128, 3)
    fan_in, fan_out = 256 * 9, 128 * 9
    target = math.sqrt(2.0 / (fan_in + fan_out))
    weight = layer.weight.detach()
    assert weight.std().item() == pytest.approx(target, rel=0.02)  # variance kept after truncation
    assert weight.abs().max().item() <= 2 * target / networks.JAX_TRUNCATED_NORMAL_STD + 1e-6
    assert torch.count_nonzero(layer.bias) == 0


def test_generator_output_relates_to_the_codes_zero_one_range() -> None:
    # The code's image is (tanh + 1) / 2; ours is the tanh: the head's pre-activation maps through tanh only.
    generator, _ = tiny_networks(32)
    generator.eval()
    z, sentence, words, mask = text()
    captured = {}
    generator.head_conv.register_forward_hook(lambda _m, _i, out: captured.update(x=out))
    with torch.no_grad():
        image = generator(z, sentence, words, mask).image
    torch.testing.assert_close(image, torch.tanh(captured["x"]))
    assert F.relu((image + 1) / 2 - 1).max() == 0 and ((image + 1) / 2).min() >= 0
