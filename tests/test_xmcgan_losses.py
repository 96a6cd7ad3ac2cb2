"""XMC-GAN losses against hand computations (explicit loops over pairs, words and regions), padding invariance of the
word-region loss, and gradients that really reach G and D through every contrastive term (a loss wrapped in a fresh
leaf tensor, as one PyTorch port did, is caught)."""

from __future__ import annotations

import math

import pytest
import torch

from t2itool.models.xmcgan.image_features import FrozenImageFeatures
from t2itool.models.xmcgan.losses import (
    contrastive_loss,
    hinge_d_loss,
    hinge_g_loss,
    image_contrastive_loss,
    matching_accuracy,
    sentence_contrastive_loss,
    word_region_loss,
    word_region_scores,
)
from t2itool.models.xmcgan.networks import Discriminator, Generator


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _cross_entropy_both_ways(scores: list[list[float]]) -> float:
    """mean_i -log softmax(row i)[i] + mean_j -log softmax(column j)[j], one element at a time."""
    n = len(scores)
    rows = sum(-scores[i][i] + math.log(sum(math.exp(scores[i][k]) for k in range(n))) for i in range(n)) / n
    cols = sum(-scores[j][j] + math.log(sum(math.exp(scores[k][j]) for k in range(n))) for j in range(n)) / n
    return rows + cols


def contrastive_by_hand(a: torch.Tensor, b: torch.Tensor, tau: float) -> float:
    a_rows, b_rows = [_unit(r) for r in a.tolist()], [_unit(r) for r in b.tolist()]
    scores = [[_dot(x, y) / tau for y in b_rows] for x in a_rows]
    return _cross_entropy_both_ways(scores)


def test_contrastive_loss_matches_explicit_loops_over_pairs() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    for tau in (0.1, 0.5):
        assert contrastive_loss(a, b, tau).item() == pytest.approx(contrastive_by_hand(a, b, tau), rel=1e-5)
    assert contrastive_loss(a, b).item() == pytest.approx(contrastive_loss(b, a).item(), rel=1e-6)  # symmetric
    assert sentence_contrastive_loss(a, b).item() == pytest.approx(contrastive_by_hand(a, b, 0.1), rel=1e-5)
    assert image_contrastive_loss(a, b, 0.2).item() == pytest.approx(contrastive_by_hand(a, b, 0.2), rel=1e-5)
    # Scale-free (l2-normalised) and minimal for perfectly matched distinct directions.
    assert contrastive_loss(3 * a, 0.5 * b).item() == pytest.approx(contrastive_loss(a, b).item(), rel=1e-5)
    assert contrastive_loss(torch.eye(4), torch.eye(4), 0.1).item() < 1e-3


def test_losses_compute_in_float32_for_half_inputs_and_inside_autocast() -> None:
    torch.manual_seed(0)
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    loss = contrastive_loss(a.bfloat16(), b.bfloat16())
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(contrastive_by_hand(a.bfloat16().float(), b.bfloat16().float(), 0.1), rel=1e-5)
    region_map, words, mask = _word_batch((2, 4, 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_autocast = contrastive_loss(a, b), word_region_loss(region_map, words, mask)
    assert all(x.dtype == torch.float32 for x in in_autocast)
    assert in_autocast[0].item() == pytest.approx(contrastive_by_hand(a, b, 0.1), rel=1e-5)
    assert in_autocast[1].item() == pytest.approx(word_region_loss(region_map, words, mask).item(), rel=1e-5)


def word_region_by_hand(
    regions: torch.Tensor, words: torch.Tensor, lengths: list[int], rho1: float, rho2: float, scale: float
) -> tuple[list[list[float]], float]:
    """score[i][j] for image i (regions (N, D, R)) and caption j (words (N, D, T), first lengths[j] real), and the
    loss, with plain Python loops."""
    count, _, num_regions = regions.shape
    scores = []
    for i in range(count):
        region_vectors = [_unit(regions[i, :, r].tolist()) for r in range(num_regions)]
        row = []
        for j in range(count):
            terms = []
            for t in range(lengths[j]):
                word = _unit(words[j, :, t].tolist())
                sims = [rho1 * _dot(v, word) for v in region_vectors]
                top = max(sims)
                weights = [math.exp(s - top) for s in sims]
                total = sum(weights)
                context = [sum(w / total * v[d] for w, v in zip(weights, region_vectors, strict=True))
                           for d in range(len(word))]  # fmt: skip
                cosine = _dot(word, context) / math.sqrt(_dot(context, context))
                terms.append(rho2 * cosine)
            row.append(scale * math.log(sum(math.exp(x) for x in terms)) / rho2)
        scores.append(row)
    return scores, _cross_entropy_both_ways(scores)


def _word_batch(lengths: tuple[int, ...], dim: int = 3, num_words: int = 4, regions: int = 4, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    count = len(lengths)
    mask = torch.arange(num_words)[None] >= torch.tensor(lengths)[:, None]
    words = torch.randn(count, dim, num_words, generator=generator).masked_fill(mask[:, None], 0.0)
    region_map = torch.randn(count, dim, 2, regions // 2, generator=generator)
    return region_map, words, mask


@pytest.mark.parametrize(("rho1", "rho2", "scale"), [(5.0, 5.0, 50.0), (4.0, 2.0, 10.0)])
def test_word_region_loss_matches_explicit_loops(rho1: float, rho2: float, scale: float) -> None:
    lengths = (2, 4, 1)
    region_map, words, mask = _word_batch(lengths)
    scores, loss = word_region_by_hand(region_map.flatten(2), words, list(lengths), rho1, rho2, scale)
    got = word_region_scores(region_map, words, mask, rho1, rho2, scale)
    torch.testing.assert_close(got, torch.tensor(scores), rtol=1e-5, atol=1e-4)
    assert word_region_loss(region_map, words, mask, rho1, rho2, scale).item() == pytest.approx(loss, rel=1e-5)
    # (N, D, R) regions give the same as the (N, D, H, W) map.
    torch.testing.assert_close(word_region_scores(region_map.flatten(2), words, mask, rho1, rho2, scale), got)


def test_padding_words_never_influence_the_word_region_loss() -> None:
    lengths = (2, 4, 1)
    region_map, words, mask = _word_batch(lengths)
    clean = word_region_scores(region_map, words, mask)
    garbage = words + 50.0 * torch.randn(words.shape) * mask[:, None]
    torch.testing.assert_close(word_region_scores(region_map, garbage, mask), clean, rtol=0, atol=1e-5)
    # Each caption scores as if its padding were cut off: one image against one truncated caption.
    for i in range(3):
        for j in range(3):
            alone = word_region_scores(region_map[i : i + 1], words[j : j + 1, :, : lengths[j]], None)
            assert alone.item() == pytest.approx(clean[i, j].item(), rel=1e-5, abs=1e-4)
    # Without the mask the zero padding would count (cosine 0 -> exp(0) terms): the test can see it.
    assert (word_region_scores(region_map, words, None) - clean).abs().max() > 1e-2


def test_batch_coupled_losses_are_invariant_to_a_joint_permutation_only() -> None:
    torch.manual_seed(0)
    region_map, words, mask = _word_batch((2, 4, 1, 3))
    features, sentences = torch.randn(4, 6), torch.randn(4, 6)
    order = torch.tensor([2, 0, 3, 1])
    permuted_word = word_region_loss(region_map[order], words[order], mask[order])
    assert permuted_word.item() == pytest.approx(word_region_loss(region_map, words, mask).item(), rel=1e-5)
    assert contrastive_loss(features[order], sentences[order]).item() == pytest.approx(
        contrastive_loss(features, sentences).item(), rel=1e-5
    )
    # Shuffling one side only breaks the pairing: the loss changes.
    assert (
        abs(contrastive_loss(features[order], sentences).item() - contrastive_loss(features, sentences).item()) > 1e-3
    )


def test_hinge_losses_are_the_codes() -> None:
    real, fake = torch.tensor([1.5, 0.2, -0.3]), torch.tensor([-2.0, 0.4, -0.9])
    d_by_hand = sum(max(0.0, 1 - r) + max(0.0, 1 + f) for r, f in zip(real.tolist(), fake.tolist(), strict=True)) / 3
    assert hinge_d_loss(real, fake).item() == pytest.approx(d_by_hand)
    assert hinge_g_loss(fake).item() == pytest.approx(-sum(fake.tolist()) / 3)


def test_matching_accuracy_counts_diagonal_maxima_both_ways() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0], [0.0, 1.0, 4.0]])
    # rows: argmax 0, 2, 2 -> 2/3 right; columns: argmax 0, 1, 1 -> 2/3 right.
    assert matching_accuracy(logits).item() == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------- gradients through each term


def assert_reaches(loss: torch.Tensor, module: torch.nn.Module, what: str) -> None:
    """Every parameter of `module` is in the loss's graph, and every weight matrix/kernel gets a non-zero gradient
    (biases just before a training-mode batch norm legitimately get ~0)."""
    params = [p for p in module.parameters() if p.requires_grad]
    assert loss.requires_grad and loss.grad_fn is not None, f"{what}: the loss is detached from the networks"
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    unreached = [n for n, g in zip(names, grads, strict=True) if g is None]
    assert not unreached, f"{what}: no gradient for {unreached[:3]}"
    zero = [n for n, p, g in zip(names, params, grads, strict=True) if p.dim() > 1 and g.abs().max() == 0]
    assert not zero, f"{what}: zero gradient for {zero[:3]}"


@pytest.fixture(scope="module")
def step():
    """One tiny XMC-GAN forward as the recipe will run it: D on concat(real, fake) with the sentences once."""
    torch.manual_seed(0)
    generator = Generator(32, gf=2, z_dim=4, sentence_dim=6, word_dim=5)
    discriminator = Discriminator(32, df=2, sentence_dim=6, word_dim=5)
    count, num_words = 4, 6
    lengths = torch.tensor([2, 6, 3, 1])
    mask = torch.arange(num_words)[None] >= lengths[:, None]
    words = torch.randn(count, 5, num_words).masked_fill(mask[:, None], 0.0)
    sentence, z = torch.randn(count, 6), torch.randn(count, 4)
    real = torch.rand(count, 3, 32, 32) * 2 - 1
    fake = generator(z, sentence, words, mask).image
    out = discriminator(torch.cat([real, fake]), sentence)
    return generator, discriminator, real, fake, words, mask, out


def test_sentence_contrastive_gradients_reach_d_for_real_and_g_and_d_for_fake(step) -> None:
    generator, discriminator, _, _, _, _, out = step
    real_features, fake_features = out.features.chunk(2)
    assert_reaches(sentence_contrastive_loss(real_features, out.sentence_embedding), discriminator.block0, "real")
    assert_reaches(sentence_contrastive_loss(real_features, out.sentence_embedding), discriminator.sentence_proj, "r")
    assert_reaches(sentence_contrastive_loss(fake_features, out.sentence_embedding), generator, "sentence, fake -> G")


def test_word_region_gradients_reach_d_for_real_and_g_for_fake(step) -> None:
    generator, discriminator, _, _, words, mask, out = step
    real_regions, fake_regions = out.regions.chunk(2)
    assert_reaches(word_region_loss(real_regions, words, mask), discriminator.region_proj, "word, real -> D head")
    assert_reaches(word_region_loss(real_regions, words, mask), discriminator.block0, "word, real -> D trunk")
    assert_reaches(word_region_loss(fake_regions, words, mask), generator, "word, fake -> G")


def test_image_contrastive_gradients_reach_g_through_d_features_and_the_frozen_network(step) -> None:
    generator, discriminator, real, fake, _, _, out = step
    real_features, fake_features = out.features.chunk(2)
    assert_reaches(image_contrastive_loss(fake_features, real_features), generator, "image on D features -> G")
    assert_reaches(image_contrastive_loss(fake_features, real_features), discriminator.blocks, "image -> D trunk")
    torch.manual_seed(0)
    frozen = FrozenImageFeatures("resnet50")  # random weights: only the gradient path matters here
    with torch.no_grad():
        real_embedding = frozen(real[:2])  # two pairs keep ResNet-50 at 224 px cheap on CPU
    loss = image_contrastive_loss(frozen(fake[:2]), real_embedding)
    assert_reaches(loss, generator, "image on frozen features -> G")
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())


def test_a_detached_loss_is_caught(step) -> None:
    # The Baekpica/xmcgan_torch bug: the loss value re-wrapped in a fresh leaf tensor has no path to the networks.
    generator, _, _, _, _, _, out = step
    real_features, fake_features = out.features.chunk(2)
    loss = sentence_contrastive_loss(fake_features, out.sentence_embedding)
    rewrapped = torch.tensor(loss.item(), requires_grad=True)
    with pytest.raises(AssertionError, match="detached"):
        assert_reaches(rewrapped, generator, "rewrapped")
    with pytest.raises(AssertionError, match="no gradient"):
        assert_reaches(sentence_contrastive_loss(fake_features.detach(), out.sentence_embedding), generator, "cut")
