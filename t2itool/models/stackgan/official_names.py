"""Official StackGAN state-dict names -> ours, for importing released weights (hanzhanggit/StackGAN-Pytorch
code/model.py STAGE1_G, STAGE1_D, STAGE2_G, STAGE2_D at the paper sizes, 64 px and 256 px).

Tables map official module paths to our module paths; a state-dict entry keeps its last component (weight, bias,
running_mean, running_var, num_batches_tracked). Checkpoints saved from nn.DataParallel carry a `module.` prefix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

STAGE1_G: dict[str, str] = {
    "ca_net.fc": "ca.fc",
    "fc.0": "fc.0",
    "fc.1": "fc.1",
    "upsample1.1": "up_blocks.0.1",
    "upsample1.2": "up_blocks.0.2",
    "upsample2.1": "up_blocks.1.1",
    "upsample2.2": "up_blocks.1.2",
    "upsample3.1": "up_blocks.2.1",
    "upsample3.2": "up_blocks.2.2",
    "upsample4.1": "up_blocks.3.1",
    "upsample4.2": "up_blocks.3.2",
    "img.0": "to_image.0",
}

# The official encode_img is one Sequential (conv, [BN], LeakyReLU, ...); ours groups each conv with its BN.
_DOWN_CHAIN: dict[str, str] = {
    "encode_img.0": "down.0.0",
    "encode_img.2": "down.1.0",
    "encode_img.3": "down.1.1",
    "encode_img.5": "down.2.0",
    "encode_img.6": "down.2.1",
    "encode_img.8": "down.3.0",
    "encode_img.9": "down.3.1",
}

_CONDITIONAL_HEAD: dict[str, str] = {
    "get_cond_logits.outlogits.0": "cond_head.joint.0",
    "get_cond_logits.outlogits.1": "cond_head.joint.1",
    "get_cond_logits.outlogits.3": "cond_head.out",
}

STAGE1_D: dict[str, str] = {**_DOWN_CHAIN, **_CONDITIONAL_HEAD}

STAGE2_G: dict[str, str] = {
    **{f"STAGE1_G.{official}": f"stage1.{ours}" for official, ours in STAGE1_G.items()},
    "ca_net.fc": "ca.fc",
    **{f"encoder.{index}": f"encoder.{index}" for index in (0, 2, 3, 5, 6)},
    "hr_joint.0": "joint.0",
    "hr_joint.1": "joint.1",
    **{
        f"residual.{block}.block.{index}": f"residual.{block}.block.{index}"
        for block in (0, 1)
        for index in (0, 1, 3, 4)
    },
    **{f"upsample{n}.{index}": f"up_blocks.{n - 1}.{index}" for n in (1, 2, 3, 4) for index in (1, 2)},
    "img.0": "to_image.0",
}

STAGE2_D: dict[str, str] = {
    **_DOWN_CHAIN,
    "encode_img.11": "down.4.0",
    "encode_img.12": "down.4.1",
    "encode_img.14": "down.5.0",
    "encode_img.15": "down.5.1",
    "encode_img.17": "reduce.0.0",
    "encode_img.18": "reduce.0.1",
    "encode_img.20": "reduce.1.0",
    "encode_img.21": "reduce.1.1",
    **_CONDITIONAL_HEAD,
    "get_uncond_logits.outlogits.0": "uncond_head",
}

TABLES: dict[str, dict[str, str]] = {
    "STAGE1_G": STAGE1_G,
    "STAGE1_D": STAGE1_D,
    "STAGE2_G": STAGE2_G,
    "STAGE2_D": STAGE2_D,
}


def stage2_generator_table(r_num: int) -> dict[str, str]:
    """STAGE2_G's table for any R_NUM (the released coco config has 2 residual blocks, the code's default is 4)."""
    table = {k: v for k, v in STAGE2_G.items() if not k.startswith("residual.")}
    for block in range(r_num):
        table.update({f"residual.{block}.block.{i}": f"residual.{block}.block.{i}" for i in (0, 1, 3, 4)})
    return table


def official_to_ours(name: str, table: Mapping[str, str]) -> str:
    """One official state-dict name -> ours; a leading `module.` (DataParallel) is dropped. KeyError if unknown."""
    if name.startswith("module."):
        name = name[len("module.") :]
    module, _, entry = name.rpartition(".")
    if module not in table:
        raise KeyError(f"{name}: no such module in the official layout")
    return f"{table[module]}.{entry}"


def rename_state_dict(names: Iterable[str], table: Mapping[str, str]) -> dict[str, str]:
    """official name -> our name for every name given; ValueError if two official names land on the same name."""
    renamed = {name: official_to_ours(name, table) for name in names}
    if len(set(renamed.values())) != len(renamed):
        raise ValueError("two official names map to the same name")
    return renamed
