"""DAMSM encoders: shapes and parameter counts, loss parity with a loop written from the formulas, R-precision
bounds, checkpoints (vocabulary refusal, backbone loading) and the import of AttnGAN's released key layout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from t2itool.data.store import Store
from t2itool.encoders import (
    ImageEncoder,
    TextEncoder,
    damsm_loss,
    import_attngan,
    load_backbone,
    load_damsm,
    r_precision,
    save_damsm,
)
from t2itool.encoders.losses import sentence_loss, word_loss
from t2itool.encoders.rprecision import mismatched_captions, summarize_hits
from t2itool.errors import T2IError


@pytest.fixture(scope="module")
def image_encoder() -> ImageEncoder:
    torch.manual_seed(0)
    encoder = ImageEncoder(image_size=80)
    load_backbone(encoder, "random", seed=0)
    return encoder.eval()


# --- encoders -------------------------------------------------------------------------------------------------------
def test_text_encoder_shapes_padding_and_parameter_count() -> None:
    torch.manual_seed(0)
    encoder = TextEncoder(5450).eval()
    # taoxugit/AttnGAN code/model.py RNN_ENCODER: 2,075,320 parameters at 5,450 words, 440,320 of them in the LSTM.
    assert sum(p.numel() for p in encoder.parameters()) == 2_075_320
    assert sum(p.numel() for p in encoder.rnn.parameters()) == 440_320
    tokens = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
    lengths = torch.tensor([3, 5])
    features = encoder.encode(tokens, lengths)
    assert features.words.shape == (2, 256, 5) and features.sentence.shape == (2, 256)
    assert torch.all(features.words[0, :, 3:] == 0) and torch.any(features.words[0, :, :3] != 0)
    assert features.mask.tolist() == [[False, False, False, True, True], [False] * 5]
    # The padded caption encodes like the same caption alone (padding is packed away, not read).
    alone = encoder.encode(tokens[:1, :3], lengths[:1])
    torch.testing.assert_close(alone.sentence, features.sentence[:1])
    torch.testing.assert_close(alone.words, features.words[:1, :, :3])
    # Sentence = [final forward state, final backward state]: the backward half of word 0's output.
    torch.testing.assert_close(features.sentence[:, 128:], features.words[:, 128:, 0])
    assert TextEncoder.from_config(encoder.config()).config() == encoder.config()


def test_image_encoder_shapes_frozen_backbone_and_counts() -> None:
    encoder = ImageEncoder()  # 299 px: AttnGAN's 17 x 17 regions
    assert sum(p.numel() for p in encoder.parameters()) == 22_506_720
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == 721_152
    encoder.train()
    assert encoder.emb_cnn_code.training and not encoder.Mixed_6e.training  # frozen means frozen, BN statistics too
    with torch.no_grad():
        regions, code = encoder(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert regions.shape == (1, 256, 17, 17) and code.shape == (1, 256)


def test_backbone_from_a_local_torchvision_file(tmp_path, image_encoder) -> None:
    from torchvision.models import inception_v3

    torch.manual_seed(1)
    reference = inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path / "inception_v3_google-0cc3c7bd.pth"
    torch.save(reference.state_dict(), path)  # torchvision's layout: AuxLogits and fc included
    encoder = ImageEncoder(image_size=80)
    assert load_backbone(encoder, path) == f"file:{path.name}"
    torch.testing.assert_close(encoder.Mixed_7c.branch_pool.conv.weight, reference.Mixed_7c.branch_pool.conv.weight)
    with pytest.raises(T2IError, match="no such file"):
        load_backbone(encoder, tmp_path / "missing.pth")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(T2IError, match="no Inception-v3 layers"):
        load_backbone(encoder, tmp_path / "other.pth")
    with pytest.warns(UserWarning, match="random Inception-v3 backbone"):
        assert load_backbone(encoder, "random") == "random"


# --- losses ---------------------------------------------------------------------------------------------------------
def _cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x * y).sum() / (x.norm() * y.norm()).clamp(min=1e-8)


def reference_damsm(regions, code, words, sentence, lengths, class_ids, gamma1, gamma2, gamma3):
    """AttnGAN paper Eq. 8-10 and code/miscc/losses.py words_loss / sent_loss, one pair at a time."""
    batch = len(code)
    v = regions.reshape(batch, regions.shape[1], -1)
    word_matrix = torch.zeros(batch, batch, dtype=torch.float64)
    sentence_matrix = torch.zeros(batch, batch, dtype=torch.float64)
    for i in range(batch):  # image
        for j in range(batch):  # caption
            e = words[j, :, : int(lengths[j])]
            s = e.t() @ v[i]  # (T, R)
            s_bar = torch.exp(s) / torch.exp(s).sum(0, keepdim=True)  # over words, for each region (Eq. 8)
            total = 0.0
            for t in range(e.shape[1]):
                alpha = torch.exp(gamma1 * s_bar[t]) / torch.exp(gamma1 * s_bar[t]).sum()  # over regions (Eq. 9)
                c = (alpha[None, :] * v[i]).sum(1)
                total = total + torch.exp(gamma2 * _cos(c, e[:, t]))
            word_matrix[i, j] = gamma3 * torch.log(total)
            sentence_matrix[i, j] = gamma3 * _cos(code[i], sentence[j])
    loss = 0.0
    for matrix in (word_matrix, sentence_matrix):
        for scores in (matrix, matrix.t()):
            for row in range(batch):
                logits = [
                    scores[row, k]
                    for k in range(batch)
                    if k == row or class_ids is None or class_ids[k] != class_ids[row]
                ]
                position = [
                    k for k in range(batch) if k == row or class_ids is None or class_ids[k] != class_ids[row]
                ].index(row)
                logits = torch.stack(logits)
                loss = loss - (logits[position] - torch.logsumexp(logits, 0)) / batch
    return loss


@pytest.mark.parametrize("class_ids", [None, [0, 1, 0, 2, 1]])
def test_damsm_loss_matches_the_loop_reference(class_ids) -> None:
    generator = torch.Generator().manual_seed(3)
    batch, dim, max_length = 5, 8, 6
    regions = torch.randn(batch, dim, 3, 3, generator=generator, dtype=torch.float64)
    code = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4, 1, 5])
    words = torch.randn(batch, dim, max_length, generator=generator, dtype=torch.float64)
    words = words * (torch.arange(max_length)[None, None, :] < lengths[:, None, None])  # zero padding, as the LSTM
    sentence = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    ids = None if class_ids is None else torch.tensor(class_ids)
    expected = reference_damsm(regions, code, words, sentence, lengths, class_ids, 4.0, 5.0, 10.0)
    got = damsm_loss(regions, code, words, sentence, lengths, ids, gamma1=4.0, gamma2=5.0, gamma3=10.0)
    assert torch.isfinite(got)
    assert math.isclose(float(got), float(expected), rel_tol=1e-4)
    assert math.isclose(
        float(word_loss(regions, words, lengths, ids) + sentence_loss(code, sentence, ids)), float(got), rel_tol=1e-6
    )


def test_damsm_loss_is_low_for_aligned_features_and_trains() -> None:
    torch.manual_seed(0)
    batch = 6
    text = TextEncoder(30)
    tokens = torch.randint(1, 30, (batch, 7))
    lengths = torch.tensor([7, 5, 6, 3, 7, 4])
    regions_param = torch.nn.Parameter(torch.randn(batch, 256, 4, 4))
    code_param = torch.nn.Parameter(torch.randn(batch, 256))
    optimizer = torch.optim.Adam([*text.parameters(), regions_param, code_param], lr=2e-3)
    losses = []
    for _ in range(15):
        words, sentence = text(tokens, lengths)
        loss = damsm_loss(regions_param, code_param, words, sentence, lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# --- R-precision ----------------------------------------------------------------------------------------------------
class _Pair:
    def __init__(self, text_encoder: torch.nn.Module, image_encoder: torch.nn.Module) -> None:
        self.text_encoder, self.image_encoder = text_encoder, image_encoder


class _TokenHash(torch.nn.Module):
    """Sentence vector = a random vector seeded by the caption's tokens: equal captions, equal vectors."""

    def forward(self, tokens, lengths):
        rows = [tuple(row[: int(n)].tolist()) for row, n in zip(tokens, lengths, strict=True)]
        sentence = torch.stack(
            [torch.randn(32, generator=torch.Generator().manual_seed(hash(r) % 2**31)) for r in rows]
        )
        return sentence[:, :, None], sentence


class _StoredCode(torch.nn.Module):
    """Image 'encoder' that returns the vector written into the image's first row: a perfect match by design."""

    def forward(self, images):
        code = images[:, 0, 0, :32]
        return code[:, :, None, None], code


def test_r_precision_is_one_for_a_perfect_pair(shapes_h5: str) -> None:
    store = Store(shapes_h5)
    captions = [store.caption_indices(int(i))[0] for i in store.split_indices("test")]
    text = _TokenHash()
    _, sentences = text(*_tokens(store, captions))
    images = torch.zeros(len(captions), 3, 2, 32)
    images[:, 0, 0] = sentences
    result = r_precision(_Pair(text, _StoredCode()), images, captions, store)
    assert result.mean == 1.0 and result.std == 0.0 and result.hits.all()
    # The same images against shuffled captions: the true caption is then a random one, near chance.
    shuffled = r_precision(_Pair(text, _StoredCode()), images.flip(0), captions, store)
    assert shuffled.mean < 0.2


def test_r_precision_of_random_encoders_is_near_chance(shapes_h5: str) -> None:
    store = Store(shapes_h5)
    captions = [store.caption_indices(int(i))[0] for i in store.split_indices("test")]
    many = [captions[k % len(captions)] for k in range(2000)]
    torch.manual_seed(1)
    noise = torch.randn(2000, 3, 2, 32)  # codes independent of the captions
    chance = r_precision(_Pair(_TokenHash(), _StoredCode()), noise, many, store)
    assert chance.num_images == 2000 and chance.num_groups == 10 and chance.num_candidates == 100
    assert 0.0 < chance.mean < 0.025  # 1/100 expected; 2000 draws put 2.5% beyond 4 standard errors


def _tokens(store, captions):
    from t2itool.data.text import pad_tokens

    rows = [store.caption_tokens(c) for c in captions]
    return torch.from_numpy(np.stack([pad_tokens(r, 18) for r in rows])), torch.tensor([min(len(r), 18) for r in rows])


def test_mismatched_captions_come_from_other_classes(shapes_h5: str) -> None:
    store = Store(shapes_h5)
    captions = [store.caption_indices(int(i))[0] for i in store.split_indices("test")[:10]]
    candidates = mismatched_captions(store, captions, seed=4)
    assert candidates.shape == (10, 100) and (candidates[:, 0] == captions).all()
    classes = store.class_ids[store.caption_images[candidates]]
    assert (classes[:, 1:] != classes[:, :1]).all()
    test_images = set(store.split_indices("test").tolist())
    assert all(int(store.caption_images[c]) in test_images for c in candidates[:, 1:].ravel())
    np.testing.assert_array_equal(candidates, mismatched_captions(store, captions, seed=4))


def test_summarize_hits_groups() -> None:
    hits = np.array([True] * 30 + [False] * 70)
    result = summarize_hits(hits, num_groups=10, num_candidates=100)
    assert result.mean == pytest.approx(0.3) and result.num_groups == 10
    rates = np.random.default_rng(0).permutation(hits).reshape(10, 10).mean(1)
    assert result.std == pytest.approx(rates.std())


# --- checkpoints and import -----------------------------------------------------------------------------------------
def test_checkpoint_round_trip_and_vocabulary_refusal(shapes_h5: str, cub_h5: str, tmp_path, image_encoder) -> None:
    store = Store(shapes_h5)
    torch.manual_seed(0)
    text = TextEncoder(len(store.vocab))
    path = save_damsm(tmp_path / "damsm.pt", text, image_encoder, store=store, backbone="random")
    damsm = load_damsm(tmp_path, store=store)  # a folder resolves to folder/damsm.pt
    assert damsm.backbone == "random" and damsm.vocab_sha256 == store.vocab_sha256 and damsm.path == path
    assert not damsm.text_encoder.training and not any(p.requires_grad for p in damsm.text_encoder.parameters())
    tokens, lengths = torch.tensor([[3, 4, 5]]), torch.tensor([3])
    torch.testing.assert_close(damsm.text_encoder(tokens, lengths)[1], text.eval()(tokens, lengths)[1])
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(damsm.image_encoder(x)[1], image_encoder(x)[1])
    other = Store(cub_h5)
    with pytest.raises(T2IError) as error:
        load_damsm(path, store=other)
    message = str(error.value)
    assert f"{len(store.vocab)} words" in message and f"{len(other.vocab)} words" in message
    assert store.vocab_sha256[:12] in message and other.vocab_sha256[:12] in message
    with pytest.raises(T2IError, match="text encoder has"):
        save_damsm(tmp_path / "x.pt", text, image_encoder, store=other)
    assert not (tmp_path / "x.pt").exists()


@pytest.fixture(scope="module")
def cub_h5(cub_root, tmp_path_factory) -> str:
    from typer.testing import CliRunner

    from t2itool.cli.main import app

    out = tmp_path_factory.mktemp("cubh5") / "birds.h5"
    result = CliRunner().invoke(app, ["prep", "cub", str(cub_root), "--out", str(out), "--image-size", "76"])
    assert result.exit_code == 0, result.output
    return str(out)


def _released_files(tmp_path, vocab_size: int, image_encoder: ImageEncoder):
    """State dicts in AttnGAN's released key layout, written with the old serialisation and without
    num_batches_tracked (files saved before PyTorch 0.4.1 lack it)."""
    torch.manual_seed(5)
    text = TextEncoder(vocab_size)
    text_state = {f"module.{k}" if k.startswith("rnn") else k: v for k, v in text.state_dict().items()}
    image_state = {k: v + 0.01 for k, v in image_encoder.state_dict().items() if "num_batches_tracked" not in k}
    text_path, image_path = tmp_path / "text_encoder200.pth", tmp_path / "image_encoder200.pth"
    torch.save(text_state, text_path, _use_new_zipfile_serialization=False)
    torch.save(image_state, image_path, _use_new_zipfile_serialization=False)
    return text, image_state, text_path, image_path


def test_import_released_encoders(cub_h5: str, tmp_path, image_encoder) -> None:
    store = Store(cub_h5)
    text, image_state, text_path, image_path = _released_files(tmp_path, len(store.vocab), image_encoder)
    damsm = import_attngan(text_path, image_path, store, tmp_path / "imported.pt")
    assert damsm.source == "import-damsm:text_encoder200.pth" and damsm.backbone == "attngan:image_encoder200.pth"
    tokens, lengths = torch.tensor([[2, 3, 4]]), torch.tensor([3])
    torch.testing.assert_close(damsm.text_encoder(tokens, lengths)[1], text.eval()(tokens, lengths)[1])
    torch.testing.assert_close(damsm.image_encoder.emb_cnn_code.weight, image_state["emb_cnn_code.weight"])
    torch.testing.assert_close(
        damsm.image_encoder.Conv2d_1a_3x3.bn.running_var, image_state["Conv2d_1a_3x3.bn.running_var"]
    )
    # The vocabulary size must match the data file's.
    (tmp_path / "wrong").mkdir()
    _, _, wrong_text, _ = _released_files(tmp_path / "wrong", len(store.vocab) + 1, image_encoder)
    with pytest.raises(T2IError, match="--vocab captions.pickle"):
        import_attngan(wrong_text, image_path, store, tmp_path / "refused.pt")
    assert not (tmp_path / "refused.pt").exists()
    with pytest.raises(T2IError, match="import-damsm"):
        load_damsm(text_path)  # a released file is not a t2itool checkpoint, and the error says what to do


def test_image_encoder_gradients_reach_only_projections(image_encoder) -> None:
    encoder = ImageEncoder(image_size=80)
    encoder.load_state_dict(image_encoder.state_dict())
    regions, code = encoder.train()(torch.rand(2, 3, 32, 32) * 2 - 1)
    (regions.square().mean() + code.square().mean()).backward()
    assert encoder.emb_features.weight.grad is not None and encoder.emb_cnn_code.bias.grad is not None
    assert all(p.grad is None for p in encoder.backbone_parameters())
    assert F.cosine_similarity(code[0], code[1], dim=0) < 0.9999  # different images, different codes


def test_unfrozen_backbone_trains_with_batch_statistics(image_encoder) -> None:
    encoder = ImageEncoder(image_size=80)
    encoder.load_state_dict(image_encoder.state_dict())
    encoder.unfreeze_backbone().train()
    assert encoder.Mixed_6e.training and all(p.requires_grad for p in encoder.backbone_parameters())
    bn = encoder.Conv2d_1a_3x3.bn
    before = bn.running_mean.clone()
    regions, code = encoder(torch.rand(4, 3, 32, 32) * 2 - 1)
    (regions.square().mean() + code.square().mean()).backward()
    assert all(p.grad is not None for p in encoder.backbone_parameters())
    assert not torch.equal(bn.running_mean, before)  # batch norm in train mode updates its statistics
    encoder.eval()
    assert not encoder.Mixed_6e.training
    encoder.requires_grad_(False).train()  # frozen again: batch norm keeps its statistics
    assert encoder.emb_cnn_code.training and not encoder.Mixed_6e.training


def test_text_encoder_is_float32_under_bf16_autocast() -> None:
    """oneDNN's CPU LSTM has no bf16 kernel: the encoder must step out of autocast, with unchanged results."""
    torch.manual_seed(0)
    encoder = TextEncoder(40).eval()
    tokens, lengths = torch.randint(1, 40, (4, 18)), torch.tensor([18, 18, 7, 3])
    with torch.no_grad():
        expected = encoder(tokens, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = encoder(tokens, lengths)
    assert got[0].dtype == torch.float32
    torch.testing.assert_close(got[1], expected[1])
