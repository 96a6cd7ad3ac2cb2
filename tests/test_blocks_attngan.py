"""The AttnGAN-family blocks: word attention (against a hand computation, its padding mask in both tiling modes),
the generator stages (layout, the stage-size rule, the norm-layer factory) and the per-stage discriminator pieces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from t2itool.models.blocks.stage_discriminator import (
    ConditionalLogits,
    StageImageEncoder,
    UnconditionalLogits,
    encode_x16,
)
from t2itool.models.blocks.stage_generator import (
    ConditionalNorm,
    GLUResBlock,
    ImageHead,
    InitStage,
    NextStage,
    init_stage_up_blocks,
    stage_sizes,
)
from t2itool.models.blocks.word_attention import WordAttention, tile_padding_mask


def text_batch(lengths: list[int], num_words: int, word_dim: int = 6, seed: int = 0):
    """Words (B, D, T) zero past each length, as the text encoder pads, and the mask True at padding."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.arange(num_words)[None, :] >= torch.tensor(lengths)[:, None]
    words = torch.randn(len(lengths), word_dim, num_words, generator=generator).masked_fill(mask[:, None, :], 0.0)
    return words, mask


# --- word attention -------------------------------------------------------------------------------------------------


def test_word_attention_matches_a_hand_computation() -> None:
    torch.manual_seed(0)
    attention = WordAttention(channels=4, word_dim=6)
    assert {k: tuple(v.shape) for k, v in attention.state_dict().items()} == {"project.weight": (4, 6, 1, 1)}
    hidden = torch.randn(2, 4, 3, 5)
    words, mask = text_batch([5, 2], num_words=5)
    context, weights = attention(hidden, words, mask)
    assert context.shape == (2, 4, 3, 5) and weights.shape == (2, 5, 3, 5)
    projected = torch.einsum("cd,bdt->bct", attention.project.weight[:, :, 0, 0].detach(), words)
    for b in range(2):
        for y in range(3):
            for x in range(5):
                logits = [float(hidden[b, :, y, x] @ projected[b, :, t]) for t in range(5)]
                kept = [t for t in range(5) if not mask[b, t]]
                total = sum(torch.tensor(logits[t]).exp() for t in kept)
                expected = torch.tensor([torch.tensor(logits[t]).exp() / total if t in kept else 0.0 for t in range(5)])
                torch.testing.assert_close(weights[b, :, y, x], expected, rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(context[b, :, y, x], projected[b] @ expected, rtol=1e-5, atol=1e-6)


def test_attention_sums_to_one_over_real_words_and_is_zero_on_padding() -> None:
    torch.manual_seed(1)
    attention = WordAttention(8, 6)
    words, mask = text_batch([7, 3, 1, 5], num_words=7)
    _, weights = attention(torch.randn(4, 8, 4, 4), words, mask)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(4, 4, 4))
    assert (weights.permute(0, 2, 3, 1)[mask[:, None, None, :].expand(-1, 4, 4, -1)] == 0).all()
    assert (weights[2, 0] == 1).all()  # a one-word caption puts all attention on its word


def test_official_tiling_hands_pixels_other_samples_masks() -> None:
    mask = torch.tensor([[False, True, True], [False, False, True]])  # lengths 1 and 2
    official = tile_padding_mask(mask, num_pixels=3, mode="official")
    # flat row r = b * 3 + p gets the mask of sample r mod 2: sample 0's pixels 0, 1, 2 -> samples 0, 1, 0.
    assert official[0].tolist() == [mask[0].tolist(), mask[1].tolist(), mask[0].tolist()]
    assert official[1].tolist() == [mask[1].tolist(), mask[0].tolist(), mask[1].tolist()]
    assert (tile_padding_mask(mask, 3, "fixed") == mask[:, None, :]).all()
    with pytest.raises(ValueError, match="fixed"):
        tile_padding_mask(mask, 3, "other")


@pytest.mark.parametrize("mode", ["fixed", "official"])
def test_mask_does_not_leak_between_samples_unless_official(mode: str) -> None:
    """Sample 1's caption length (its padding) must not change sample 0's output; the official tiling lets it."""
    torch.manual_seed(2)
    attention = WordAttention(8, 6, mask_mode=mode)
    hidden = torch.randn(2, 8, 4, 4)
    words, mask = text_batch([3, 6], num_words=6, seed=3)
    context, weights = attention(hidden, words, mask)
    shorter_mask = mask.clone()
    shorter_mask[1, 2:] = True  # sample 1 now has 2 words: more padding
    shorter_words = words.masked_fill(shorter_mask[:, None, :], 0.0)
    context2, weights2 = attention(hidden, shorter_words, shorter_mask)
    # Changing sample 0's padded word vectors must not matter either.
    noisy_words = words.clone()
    noisy_words[0, :, 3:] = torch.randn(6, 3)
    context3, _ = attention(hidden, noisy_words, mask)
    if mode == "fixed":
        torch.testing.assert_close(context2[0], context[0], rtol=0, atol=0)
        torch.testing.assert_close(weights2[0], weights[0], rtol=0, atol=0)
        torch.testing.assert_close(context3[0], context[0], rtol=0, atol=0)
    else:
        assert (context2[0] - context[0]).abs().max() > 1e-3
        assert (context3[0] - context[0]).abs().max() > 1e-3
        assert weights[0, 3:].sum() > 0  # sample 0's padding receives attention from pixels holding sample 1's mask


# --- generator stages -----------------------------------------------------------------------------------------------


def test_stage_size_rule() -> None:
    assert stage_sizes(256) == (64, 128, 256) and stage_sizes(64) == (16, 32, 64) and stage_sizes(32) == (8, 16, 32)
    assert [init_stage_up_blocks(s) for s in (8, 16, 64, 128)] == [1, 2, 4, 5]
    for bad in (16, 48, 0):
        with pytest.raises(ValueError, match="image_size"):
            stage_sizes(bad)


def test_glu_res_block_adds_its_input_with_official_indices() -> None:
    torch.manual_seed(3)
    block = GLUResBlock(4).eval()
    shapes = {k: tuple(v.shape) for k, v in block.state_dict().items() if k.endswith("weight")}
    assert shapes == {"block.0.weight": (8, 4, 3, 3), "block.1.weight": (8,), "block.3.weight": (4, 4, 3, 3),
                      "block.4.weight": (4,)}  # fmt: skip
    x = torch.randn(2, 4, 5, 5)
    h = F.glu(block.block[1](F.conv2d(x, block.block[0].weight, padding=1)), dim=1)
    torch.testing.assert_close(block(x), x + block.block[4](F.conv2d(h, block.block[3].weight, padding=1)))


@pytest.mark.parametrize(("out_size", "blocks"), [(8, 1), (16, 2), (64, 4)])
def test_init_stage_widths_follow_the_size(out_size: int, blocks: int) -> None:
    stage = InitStage(input_dim=10, out_channels=3, out_size=out_size)
    assert len(stage.up_blocks) == blocks and stage.base_channels == 3 * 2**blocks
    assert stage.fc[0].weight.shape == (3 * 2**blocks * 32, 10) and stage.fc[0].bias is None
    for i, block in enumerate(stage.up_blocks):  # each block halves the width: conv out = 2 * (in / 2)
        assert block[1].weight.shape[:2] == (3 * 2 ** (blocks - i), 3 * 2 ** (blocks - i))
    assert stage(torch.randn(4, 10)).shape == (4, 3, out_size, out_size)


def test_next_stage_doubles_the_side_and_returns_attention_at_the_input_side() -> None:
    torch.manual_seed(4)
    stage = NextStage(channels=4, word_dim=6, num_residual=2)
    words, mask = text_batch([5, 2, 4], num_words=5)
    out, attention = stage(torch.randn(3, 4, 8, 8), words, mask)
    assert out.shape == (3, 4, 16, 16) and attention.shape == (3, 5, 8, 8)
    names = {k for k in stage.state_dict() if k.endswith("weight")}
    assert {"attention.project.weight", "residual.1.block.4.weight", "up_block.1.weight", "up_block.2.weight"} <= names
    head = ImageHead(4)
    image = head(out)
    assert image.shape == (3, 3, 16, 16) and image.abs().max() <= 1 and head.conv.bias is None


class ShiftedBatchNorm(ConditionalNorm):
    """Test norm: batch norm plus a per-sample shift given as the condition (B,)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.norm(x) + condition.view(-1, 1, 1, 1)


def test_norm_factory_reaches_up_blocks_and_receives_the_condition() -> None:
    torch.manual_seed(5)
    plain, conditioned = InitStage(10, 4, 16), InitStage(10, 4, 16, norm_layer=ShiftedBatchNorm)
    assert all(isinstance(block[2], ShiftedBatchNorm) for block in conditioned.up_blocks)
    # Same weights under the norm's own prefix: load the plain stage's state into the conditioned one.
    renamed = {
        k.replace(".2.", ".2.norm.") if k.startswith("up_blocks") else k: v for k, v in plain.state_dict().items()
    }
    conditioned.load_state_dict(renamed)
    code = torch.randn(3, 10)
    torch.testing.assert_close(conditioned(code, torch.zeros(3)), plain(code))
    assert (conditioned(code, torch.ones(3)) - plain(code)).abs().max() > 1e-3

    next_plain = NextStage(4, 6, 1)
    next_conditioned = NextStage(4, 6, 1, norm_layer=ShiftedBatchNorm)
    next_conditioned.load_state_dict(
        {k.replace("up_block.2.", "up_block.2.norm."): v for k, v in next_plain.state_dict().items()}
    )
    words, mask = text_batch([3, 2, 1], 3)
    hidden = torch.randn(3, 4, 4, 4)
    torch.testing.assert_close(
        next_conditioned(hidden, words, mask, torch.zeros(3))[0], next_plain(hidden, words, mask)[0]
    )


# --- discriminator pieces -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "strided", "down"), [(8, 1, 0), (16, 2, 0), (32, 3, 0), (64, 4, 0), (128, 4, 1),
                                                       (256, 4, 2)])  # fmt: skip
def test_stage_encoder_reaches_4x4_at_8ndf_for_every_size(size: int, strided: int, down: int) -> None:
    encoder = StageImageEncoder(size, ndf=4)
    convs = [m for m in encoder.encode_x16 if isinstance(m, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2] * strided + [1] * (4 - strided)
    assert [c.out_channels for c in convs] == [4, 8, 16, 32]
    assert len(encoder.down_blocks) == len(encoder.leaky_blocks) == down
    assert encoder(torch.randn(2, 3, size, size)).shape == (2, 32, 4, 4)


def test_encode_x16_has_the_official_indices() -> None:
    names = {k for k in encode_x16(64).state_dict() if k.endswith("weight")}
    assert names == {"0.weight", "2.weight", "3.weight", "5.weight", "6.weight", "8.weight", "9.weight"}


def test_spectral_norm_variant_without_batch_norm() -> None:
    torch.manual_seed(6)
    encoder = StageImageEncoder(128, ndf=4, batch_norm=False, spectral_norm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules())
    assert sum(k.endswith("weight_orig") for k in encoder.state_dict()) == 4 + 1 + 1
    assert encoder(torch.randn(2, 3, 128, 128)).shape == (2, 32, 4, 4)
    head = ConditionalLogits(32, 5, batch_norm=False, spectral_norm=True)
    assert head(torch.randn(2, 32, 4, 4), torch.randn(2, 5)).shape == (2,)


def test_logit_heads_against_hand_computation() -> None:
    torch.manual_seed(7)
    features, sentence = torch.randn(3, 8, 4, 4), torch.randn(3, 5)
    uncond = UnconditionalLogits(8)
    torch.testing.assert_close(uncond(features), (features * uncond.conv.weight).sum(dim=(1, 2, 3)) + uncond.conv.bias)
    cond = ConditionalLogits(8, 5).eval()
    assert cond.joint[0].weight.shape == (8, 13, 3, 3) and cond.joint[0].bias is None
    joint_in = torch.cat([features, sentence[:, :, None, None].expand(-1, -1, 4, 4)], dim=1)  # features first
    hidden = F.leaky_relu(cond.joint[1](F.conv2d(joint_in, cond.joint[0].weight, padding=1)), 0.2)
    torch.testing.assert_close(
        cond(features, sentence), (hidden * cond.conv.weight).sum(dim=(1, 2, 3)) + cond.conv.bias
    )
