"""Official AttnGAN state-dict names -> ours, as data for importing released weights (taoxugit/AttnGAN code/model.py
G_NET saved as bird_AttnGAN2.pth / coco_AttnGAN2.pth, D_NET64/128/256 saved as netD0/1/2.pth).

Each table is a tuple of (official prefix, our prefix) pairs; a name maps by its first matching prefix. The shapes
are equal under the mapping, and every official name maps to exactly one of ours.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

Table = tuple[tuple[str, str], ...]


def _generator_table() -> Table:
    pairs = [("ca_net.fc.", "ca.fc."), ("h_net1.fc.", "init_stage.fc.")]
    pairs += [(f"h_net1.upsample{k}.", f"init_stage.up_blocks.{k - 1}.") for k in range(1, 5)]
    for official, ours in (("h_net2", "next_stages.0"), ("h_net3", "next_stages.1")):
        pairs += [
            (f"{official}.att.conv_context.", f"{ours}.attention.project."),
            (f"{official}.residual.", f"{ours}.residual."),
            (f"{official}.upsample.", f"{ours}.up_block."),
        ]
    pairs += [(f"img_net{k}.img.0.", f"image_heads.{k - 1}.conv.") for k in range(1, 4)]
    return tuple(pairs)


_HEADS = (
    ("UNCOND_DNET.outlogits.0.", "uncond_head.conv."),
    ("COND_DNET.jointConv.", "cond_head.joint."),
    ("COND_DNET.outlogits.0.", "cond_head.conv."),
)

# G_NET at BRANCH_NUM 3 (any GF_DIM / R_NUM; the residual blocks keep their indices).
GENERATOR: Table = _generator_table()
# D_NET64 / D_NET128 / D_NET256, keyed by stage size.
DISCRIMINATORS: dict[int, Table] = {
    64: (("img_code_s16.", "encoder.encode_x16."), *_HEADS),
    128: (
        ("img_code_s16.", "encoder.encode_x16."),
        ("img_code_s32.", "encoder.down_blocks.0."),
        ("img_code_s32_1.", "encoder.leaky_blocks.0."),
        *_HEADS,
    ),
    256: (
        ("img_code_s16.", "encoder.encode_x16."),
        ("img_code_s32.", "encoder.down_blocks.0."),
        ("img_code_s64.", "encoder.down_blocks.1."),
        ("img_code_s64_1.", "encoder.leaky_blocks.0."),
        ("img_code_s64_2.", "encoder.leaky_blocks.1."),
        *_HEADS,
    ),
}


def official_to_ours(name: str, table: Table) -> str:
    """Our name for an official one (a DataParallel / DDP `module.` prefix is dropped first); KeyError if unmapped."""
    if name.startswith("module."):
        name = name[len("module.") :]
    for official, ours in table:
        if name.startswith(official):
            return ours + name[len(official) :]
    raise KeyError(f"no mapping for official name {name!r}")


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor], table: Table) -> dict[str, torch.Tensor]:
    """An official state dict renamed to ours; ValueError if two official names land on one of ours."""
    converted: dict[str, torch.Tensor] = {}
    for name, value in state_dict.items():
        ours = official_to_ours(name, table)
        if ours in converted:
            raise ValueError(f"official names map twice onto {ours!r}")
        converted[ours] = value
    return converted
