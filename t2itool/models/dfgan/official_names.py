"""Official DF-GAN state-dict names -> ours, as data for `t2itool import-weights` (tobran/DF-GAN code/models/GAN.py,
2022 code; released `state_epoch_*.pth` hold {"model": {"netG", "netD", "netC"}, "optimizers": ..., "epoch"}).

A row is (official pattern, our network, our pattern). A pattern is a dotted path in which `{i}` (`{j}`, ...) stands
for an index; a state-dict name matches a row when it equals the pattern or extends it by `.rest`, and our name is our
pattern with the same indices plus the same `.rest`. The first matching row wins. Names are the same at every image
size (only the number of blocks changes), so one table serves 64, 128 and 256 px.
"""

from __future__ import annotations

Row = tuple[str, str, str]


def _affine_rows() -> list[Row]:
    # G_Block's fuse1 / fuse2 (each a DFBLK of affine0 / affine1) are our fuse0 / fuse1; an Affine's fc_gamma and
    # fc_beta are Sequential(linear1, relu, linear2), ours gamma / beta = Sequential(Linear, ReLU, Linear).
    rows = []
    for official_fuse, our_fuse in (("fuse1", "fuse0"), ("fuse2", "fuse1")):
        for official_mlp, our_mlp in (("fc_gamma", "gamma"), ("fc_beta", "beta")):
            for official_layer, our_index in (("linear1", 0), ("linear2", 2)):
                rows.append(
                    (
                        f"GBlocks.{{i}}.{official_fuse}.affine{{j}}.{official_mlp}.{official_layer}",
                        "generator",
                        f"blocks.{{i}}.{our_fuse}.affine{{j}}.{our_mlp}.{our_index}",
                    )
                )
    return rows


# NetG: fc, GBlocks.{i} (c1, c2, c_sc when the width changes, fuse1, fuse2), to_rgb = (LReLU, conv, tanh).
NET_G: tuple[Row, ...] = (
    ("fc", "generator", "fc"),
    ("GBlocks.{i}.c1", "generator", "blocks.{i}.conv0"),
    ("GBlocks.{i}.c2", "generator", "blocks.{i}.conv1"),
    ("GBlocks.{i}.c_sc", "generator", "blocks.{i}.shortcut"),
    *_affine_rows(),
    ("to_rgb.1", "generator", "to_rgb.1"),
)

# NetD: conv_img, DBlocks.{i} (gamma, conv_r = (conv, LReLU, conv, LReLU), conv_s).
NET_D: tuple[Row, ...] = (
    ("conv_img", "discriminator", "conv_img"),
    ("DBlocks.{i}.gamma", "discriminator", "blocks.{i}.gain"),
    ("DBlocks.{i}.conv_r", "discriminator", "blocks.{i}.residual"),
    ("DBlocks.{i}.conv_s", "discriminator", "blocks.{i}.shortcut"),
)

# NetC: joint_conv = (conv3x3, LReLU, conv4x4).
NET_C: tuple[Row, ...] = (("joint_conv", "head", "joint"),)

# D_Block builds conv_s for every block but its forward uses it only when in != out channels; ours builds none
# there. Entries matching these patterns are dropped exactly when ours has no such module and the conv is square.
UNUSED_WHEN_SQUARE: tuple[str, ...] = ("DBlocks.{i}.conv_s",)

# The networks of a state file under state["model"], in the order they are checked.
NETWORKS: dict[str, tuple[Row, ...]] = {"netG": NET_G, "netD": NET_D, "netC": NET_C}
