"""Official SSA-GAN state-dict names -> ours, as data for `t2itool import-weights` (wtliao/text2image model.py
NetG and NetD at 256 px; main.py saves each network's state_dict() from DataParallel, so names carry `module.`).

A row is (official pattern, our network, our pattern), matched as in t2itool/models/dfgan/official_names.py: `{i}`
stands for an index, `{i+1}` for the next one; a name equal to the pattern or extending it by `.rest` maps to our
pattern plus `.rest`; the first matching row wins.
"""

from __future__ import annotations

Row = tuple[str, str, str]


def _affine_rows() -> list[Row]:
    # G_Block.affine0 / affine2 (no affine1) are our affine0 / affine1: batch_norm2d (no affine) and
    # fc_gamma / fc_beta = Sequential(linear1, relu1, linear2); ours norm and gamma / beta = Sequential(Linear, ReLU,
    # Linear).
    rows: list[Row] = []
    for official_affine, our_affine in (("affine0", "affine0"), ("affine2", "affine1")):
        rows.append((f"block{{i}}.{official_affine}.batch_norm2d", "generator", f"blocks.{{i}}.{our_affine}.norm"))
        for official_mlp, our_mlp in (("fc_gamma", "gamma"), ("fc_beta", "beta")):
            for official_layer, our_index in (("linear1", 0), ("linear2", 2)):
                rows.append(
                    (
                        f"block{{i}}.{official_affine}.{official_mlp}.{official_layer}",
                        "generator",
                        f"blocks.{{i}}.{our_affine}.{our_mlp}.{our_index}",
                    )
                )
    return rows


# NetG: conv_mask predicts block 0's mask from the fc output; block{i}.conv_mask predicts block i+1's from block i's
# output (ours: mask_predictors.{i} sees the features entering block i, the same tensor). block6 predicts none.
NET_G: tuple[Row, ...] = (
    ("conv_mask", "generator", "mask_predictors.0.layers"),
    ("fc", "generator", "fc"),
    ("block{i}.gamma", "generator", "blocks.{i}.gain"),
    ("block{i}.c1", "generator", "blocks.{i}.conv0"),
    ("block{i}.c2", "generator", "blocks.{i}.conv1"),
    ("block{i}.c_sc", "generator", "blocks.{i}.shortcut"),
    *_affine_rows(),
    ("block{i}.conv_mask", "generator", "mask_predictors.{i+1}.layers"),
    ("conv_img", "generator", "to_rgb"),  # (BN, LReLU, conv, tanh): indices 0 and 2 agree
)

# NetD (2020 DF-GAN layout) holds the logit head COND_DNET, which is our separate `head` network.
NET_D: tuple[Row, ...] = (
    ("conv_img", "discriminator", "conv_img"),
    ("block{i}.gamma", "discriminator", "blocks.{i}.gain"),
    ("block{i}.conv_r", "discriminator", "blocks.{i}.residual"),
    ("block{i}.conv_s", "discriminator", "blocks.{i}.shortcut"),
    ("COND_DNET.joint_conv", "head", "joint"),
)

# resD builds conv_s for every block but uses it only when fin != fout (block4, block5 at 256 px); ours builds none.
UNUSED_WHEN_SQUARE: tuple[str, ...] = ("block{i}.conv_s",)

NETWORKS: dict[str, tuple[Row, ...]] = {"netG": NET_G, "netD": NET_D}
