"""DF-GAN networks: parameter counts derived from the layer list (tobran/DF-GAN code/models/GAN.py), shapes, losses,
noise."""

from __future__ import annotations

import pytest
import torch

from t2itool.models.blocks import ConditionalHead, DownBlock, hinge_d_loss, hinge_g_loss, matching_aware_gp
from t2itool.models.dfgan import NetD, NetG, build_head
from t2itool.models.registry import get_model

# Block tables of tobran/DF-GAN code/models/GAN.py (channel multipliers of nf), written out here rather than derived
# from our code.
G_BLOCKS = {
    64: [(8, 8), (8, 4), (4, 2), (2, 1)],
    128: [(8, 8), (8, 8), (8, 4), (4, 2), (2, 1)],
    256: [(8, 8), (8, 8), (8, 8), (8, 4), (4, 2), (2, 1)],
}
D_BLOCKS = {
    64: [(1, 2), (2, 4), (4, 8), (8, 8)],
    128: [(1, 2), (2, 4), (4, 8), (8, 8), (8, 8)],
    256: [(1, 2), (2, 4), (4, 8), (8, 8), (8, 8), (8, 8)],
}
# Totals of tobran/DF-GAN code/models/GAN.py NetG/NetD built on CPU (D minus the 1x1 convs that forward never uses).
PAPER_G = {64: 4_868_867, 128: 7_306_499, 256: 9_744_131}
PAPER_D = {64: 3_210_820 - 65_792, 128: 4_915_013 - 131_584, 256: 6_619_206 - 197_376}
PAPER_C = 295_936


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def linear(cin: int, cout: int) -> int:
    return cin * cout + cout


def affine(cond: int, channels: int) -> int:  # gamma and beta MLPs: Linear(cond, C) -> ReLU -> Linear(C, C)
    return 2 * (linear(cond, channels) + linear(channels, channels))


def expected_g(nf: int, size: int, nz: int = 100, cond: int = 256) -> int:
    total = linear(nz, 8 * nf * 16) + conv(nf, 3, 3)
    for i, o in G_BLOCKS[size]:
        cin, cout = nf * i, nf * o
        total += 2 * affine(nz + cond, cin) + conv(cin, cout, 3) + 2 * affine(nz + cond, cout) + conv(cout, cout, 3)
        total += conv(cin, cout, 1) if cin != cout else 0
    return total


def expected_d(nf: int, size: int) -> int:
    total = conv(3, nf, 3)
    for i, o in D_BLOCKS[size]:
        cin, cout = nf * i, nf * o
        total += conv(cin, cout, 4, bias=False) + conv(cout, cout, 3, bias=False) + 1  # + residual gain
        total += conv(cin, cout, 1) if cin != cout else 0
    return total


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("size", [64, 128, 256])
def test_parameter_counts_match_layer_list_and_paper(size: int) -> None:
    assert count(NetG(32, 100, 256, size)) == expected_g(32, size) == PAPER_G[size]
    assert count(NetD(32, size)) == expected_d(32, size) == PAPER_D[size]
    head = build_head(32, 256)
    assert count(head) == conv(8 * 32 + 256, 64, 3, bias=False) + conv(64, 1, 4, bias=False) == PAPER_C


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_and_identity_affine_init(size: int) -> None:
    torch.manual_seed(0)
    g, d, c = NetG(8, 100, 256, size), NetD(8, size), build_head(8, 256)
    noise, sentence = torch.randn(2, 100), torch.randn(2, 256)
    image = g(noise, sentence)
    assert image.shape == (2, 3, size, size) and image.abs().max() <= 1
    features = d(image)
    assert features.shape == (2, 64, 4, 4)
    assert c(features, sentence).shape == (2,)
    # Affines start as the identity; D blocks start as their shortcut (gain 0).
    x = torch.randn(2, 64, 4, 4)
    assert torch.equal(g.blocks[0].fuse0.affine0(x, torch.cat([noise, sentence], 1)), x)
    block = DownBlock(8, 16)
    y = torch.randn(1, 8, 8, 8)
    assert torch.allclose(block(y), torch.nn.functional.avg_pool2d(block.shortcut(y), 2))


def test_hinge_losses() -> None:
    real, fake, mis = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0]), torch.tensor([1.0, -1.0])
    assert hinge_d_loss(real, fake, mis).item() == pytest.approx(0.25 + 0.5 * (0.5 + 1.0))
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.25 + 0.5)
    assert hinge_g_loss(fake).item() == pytest.approx(1.0)


def test_matching_aware_gp_matches_explicit_norm() -> None:
    torch.manual_seed(0)
    head = ConditionalHead(4, 3, 2)
    features = torch.randn(3, 4, 4, 4, requires_grad=True)
    sentence = torch.randn(3, 3, requires_grad=True)
    logits = head(features, sentence)
    value = matching_aware_gp(logits, (features, sentence), weight=2.0, power=6.0)
    grads = torch.autograd.grad(logits.sum(), (features, sentence), retain_graph=True)
    norms = torch.cat([grads[0].reshape(3, -1), grads[1].reshape(3, -1)], 1).norm(dim=1)
    assert value.item() == pytest.approx(2.0 * (norms**6).mean().item(), rel=1e-5)
    value.backward()  # create_graph: the penalty is differentiable w.r.t. the head
    assert head.joint[0].weight.grad is not None and head.joint[0].weight.grad.abs().sum() > 0


def test_spec_config_and_presets() -> None:
    spec = get_model("dfgan")
    config = spec.make_config("birds", {"beta1": 0, "image_size": 64})
    assert isinstance(config.beta1, float) and config.beta1 == 0.0  # torch >= 2.6 rejects mixed int/float betas
    assert spec.default_truncation(config) == 0.88 and [(n.name, n.dim) for n in spec.noise_streams(config)] == [
        ("z", 100)
    ]
    optimizers = spec.recipe_cls(config).build_optimizers(spec.recipe_cls(config).build_networks(), None)
    assert optimizers["generator"].defaults["lr"] == 1e-4 and optimizers["discriminator"].defaults["lr"] == 4e-4
    assert optimizers["discriminator"].defaults["betas"] == (0.0, 0.9)
    # Paper global batch; epochs as the code's range(1, max_epoch): max_epoch 1301 / 301 / 1001 run 1300 / 300 / 1000.
    assert spec.train_presets["birds"] == {"global_batch": 32, "epochs": 1300}
    assert spec.train_presets["coco"] == {"global_batch": 32, "epochs": 300}
    assert spec.train_presets["flowers"] == {"global_batch": 32, "epochs": 1000}
    assert spec.presets["flowers"] == {"image_size": 256}


@pytest.mark.slow
def test_dfgan_learns_the_colours_of_its_captions(learning_data, tmp_path) -> None:
    """On the shapes data DF-GAN follows its captions' colours within 300 steps when its generator learns as fast as
    its discriminator (`lr_g=4e-4`, the small-data setting of docs/training.md); at the paper's 1e-4 it takes longer
    (the table there)."""
    from learning import colour_agreement

    colour = colour_agreement("dfgan", learning_data, tmp_path, steps=300, image_size=32, batch_size=32,
                              sets={"ngf": "32", "ndf": "32", "lr_g": "4e-4"})  # fmt: skip
    print(f"dfgan colour agreement {colour['value']:.3f}, chance {colour['chance']:.3f}")  # shown with pytest -s
    assert colour["value"] > 2.0 * colour["chance"], colour
