"""Word attention of the AttnGAN generator family (Xu et al., CVPR 2018, Sec. 3.1, Eq. 2): every pixel of a hidden
image attends over the caption's words; padding words are masked. Shared by AttnGAN and its descendants.

Layer layout and operation order follow taoxugit/AttnGAN code/GlobalAttention.py GlobalAttentionGeneral.
"""

from __future__ import annotations

import torch
from torch import nn

MASK_MODES = ("fixed", "official")


def tile_padding_mask(mask: torch.Tensor, num_pixels: int, mode: str = "fixed") -> torch.Tensor:
    """Expand a (B, T) padding mask to the (B, num_pixels, T) layout of the attention logits.

    "fixed": every pixel of sample b gets sample b's mask.
    "official": as code/GlobalAttention.py, the whole (B, T) block is repeated num_pixels times and laid over
    the logits flattened sample-major to (B * num_pixels, T), so flat row r = b * num_pixels + p receives the mask
    of sample r mod B. For B > 1 pixels see other samples' masks: padding
    words of a short caption become visible, real words of a long caption are hidden. Kept to reproduce
    released checkpoints exactly.
    """
    if mode == "fixed":
        return mask[:, None, :].expand(-1, num_pixels, -1)
    if mode == "official":
        batch, words = mask.shape
        return mask.repeat(num_pixels, 1).view(batch, num_pixels, words)
    raise ValueError(f"attention mask mode {mode!r}: choose one of {', '.join(MASK_MODES)}")


class WordAttention(nn.Module):
    """hidden (B, C, H, W), words (B, word_dim, T), mask (B, T) bool True at padding ->
    context (B, C, H, W), attention (B, T, H, W).

    The words are projected to the image width C by a 1x1 convolution without bias (`project`, the official
    `conv_context`); the logit of pixel p and word t is the dot product of the pixel's feature with the projected
    word; a softmax over unmasked words gives the attention, and the context is the attention-weighted sum of the
    projected words. `mask_mode` selects how the padding mask is tiled (see `tile_padding_mask`).
    """

    def __init__(self, channels: int, word_dim: int, mask_mode: str = "fixed") -> None:
        super().__init__()
        if mask_mode not in MASK_MODES:
            raise ValueError(f"attention mask mode {mask_mode!r}: choose one of {', '.join(MASK_MODES)}")
        self.channels, self.word_dim, self.mask_mode = int(channels), int(word_dim), mask_mode
        self.project = nn.Conv2d(word_dim, channels, kernel_size=1, bias=False)

    def forward(
        self, hidden: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, channels, height, width = hidden.shape
        assert channels == self.channels, f"hidden {tuple(hidden.shape)}, expected {self.channels} channels"
        assert words.dim() == 3 and words.shape[:2] == (batch, self.word_dim), f"words {tuple(words.shape)}"
        num_words, num_pixels = words.shape[2], height * width
        # (B, C, T): the projection as the official 1x1 convolution over a (B, D, T, 1) map.
        projected = self.project(words.unsqueeze(3)).squeeze(3)
        queries = hidden.reshape(batch, channels, num_pixels).transpose(1, 2).contiguous()
        logits = torch.bmm(queries, projected)  # (B, H*W, T)
        if mask is not None:
            assert mask.shape == (batch, num_words) and mask.dtype == torch.bool, f"mask {tuple(mask.shape)}"
            logits = logits.masked_fill(tile_padding_mask(mask, num_pixels, self.mask_mode), float("-inf"))
        attention = torch.softmax(logits, dim=2).transpose(1, 2).contiguous()  # (B, T, H*W)
        context = torch.bmm(projected, attention)  # (B, C, H*W)
        return context.view(batch, channels, height, width), attention.view(batch, num_words, height, width)
