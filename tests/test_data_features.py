"""Precomputed caption features: StackGAN's char-CNN-RNN pickles, keyed .npz/.h5 and store-order .npy through prep,
info, Store and CaptionDataset (averaging, mixed pairs); the refusals of bad feature files."""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest
import torch
from conftest import add_char_cnn_rnn, make_cub, python2_array_pickle
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from t2itool.cli.main import app
from t2itool.data.dataset import CaptionDataset
from t2itool.data.sources.shapes import build_shapes
from t2itool.data.store import Store
from t2itool.errors import T2IError

runner = CliRunner()


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    """A CUB tree with StackGAN's per-split embedding pickles, prepared with them (via the CLI)."""
    root = make_cub(tmp_path_factory.mktemp("birds_features"))
    arrays = add_char_cnn_rnn(root, dim=16)
    out = root.parent / "birds.h5"
    result = runner.invoke(app, ["prep", "cub", str(root), "--out", str(out), "--image-size", "16", "--workers", "1",
                                 "--caption-features", "char-CNN-RNN-embeddings.pickle"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return root, arrays, out


def _fixture_row(root, arrays, key: str) -> np.ndarray:
    """The (10, D) fixture embeddings of image `key` (its split's filenames.pickle position)."""
    for split in ("train", "test"):
        keys = pickle.load(open(root / split / "filenames.pickle", "rb"))
        if key in keys:
            return arrays[split][keys.index(key)]
    raise KeyError(key)


def test_char_cnn_rnn_pickles_stored_and_reported(birds) -> None:
    root, arrays, out = birds
    info = runner.invoke(app, ["info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    features = json.loads(info.stdout)["caption_features"]
    assert features["name"] == "char-CNN-RNN" and features["sentence_dim"] == 16 and features["dtype"] == "float32"
    assert features["word_dim"] is None and features["max_tokens"] is None
    assert features["source"] == "train/char-CNN-RNN-embeddings.pickle,test/char-CNN-RNN-embeddings.pickle"
    assert len(features["sha256"]) == 64
    text = runner.invoke(app, ["info", str(out)])
    assert text.exit_code == 0 and "char-CNN-RNN (sentence 16, no words, float32)" in text.stdout
    assert features["sha256"][:12] in text.stdout
    store = Store(out)
    assert store.caption_features is not None and store.caption_features.sha256 == features["sha256"]
    # Specific captions: image 7 is the 2nd test image, caption 3 its 4th caption -> arrays["test"][1, 3].
    assert store.keys[7] == pickle.load(open(root / "test" / "filenames.pickle", "rb"))[1]
    caption = store.caption_indices(7)[3]
    got = store.caption_sentence(caption)
    assert got.dtype == np.float32 and got.shape == (16,)
    np.testing.assert_array_equal(got, arrays["test"][1, 3])
    np.testing.assert_array_equal(store.caption_sentence(store.caption_indices(0)[0]), arrays["train"][0, 0])
    np.testing.assert_array_equal(store.image_sentences(4), arrays["train"][4])


def test_dataset_items_carry_the_rows_of_their_captions(birds) -> None:
    root, arrays, out = birds
    store = Store(out)
    for split in ("train", "test"):
        dataset = CaptionDataset(out, split, image_sizes=(16,), text_features=True, seed=1)
        for position in range(len(dataset)):
            item = dataset[position]
            row = _fixture_row(root, arrays, store.keys[item["index"]])
            caption_number = item["caption_index"] - store.caption_indices(item["index"]).start
            assert item["sentence_features"].dtype == torch.float32 and "word_features" not in item
            np.testing.assert_array_equal(item["sentence_features"].numpy(), row[caption_number])


def test_per_split_form_float16_and_hash(birds, tmp_path) -> None:
    root, arrays, out = birds
    name = "char-CNN-RNN-embeddings.pickle"
    spec = f"train={root / 'train' / name},test={root / 'test' / name}"
    same = tmp_path / "same.h5"
    half = tmp_path / "half.h5"
    plain = tmp_path / "plain.h5"
    for path, extra in ((same, []), (half, ["--caption-features-dtype", "float16"])):
        result = runner.invoke(app, ["prep", "cub", str(root), "--out", str(path), "--image-size", "16",
                                     "--workers", "1", "--caption-features", spec, *extra])  # fmt: skip
        assert result.exit_code == 0, result.output
    runner.invoke(app, ["prep", "cub", str(root), "--out", str(plain), "--image-size", "16", "--workers", "1"])
    reference = Store(out)
    assert Store(same).content_sha256 == reference.content_sha256
    assert Store(same).caption_features.sha256 == reference.caption_features.sha256
    assert Store(plain).content_sha256 != reference.content_sha256  # the features count in the content hash
    assert Store(plain).caption_features is None
    small = Store(half)
    assert small.caption_features.dtype == "float16"
    assert small.caption_features.sha256 != reference.caption_features.sha256
    got = small.caption_sentence(small.caption_indices(2)[5])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, arrays["train"][2, 5].astype(np.float16).astype(np.float32))


def _keyed_features(store: Store, dim: int = 6, tokens: int = 5, word_dim: int = 3, seed: int = 0):
    """Features for every image of `store`, listed in reverse order plus one unknown key, with word features."""
    rng = np.random.default_rng(seed)
    count = len(store.caption_indices(0))
    keys = [*reversed(store.keys), "not/an/image"]
    sentence = rng.standard_normal((len(keys), count, dim))  # float64 on purpose: stored as float32
    words = rng.standard_normal((len(keys), count, tokens, word_dim)).astype(np.float32)
    lengths = rng.integers(1, tokens + 1, size=(len(keys), count))
    return keys, sentence, words, lengths


def test_npz_and_h5_with_words(tmp_path, shapes_h5) -> None:
    reference = Store(shapes_h5)
    keys, sentence, words, lengths = _keyed_features(reference)
    npz, h5 = tmp_path / "bert.npz", tmp_path / "bert.h5"
    np.savez(npz, keys=np.array(keys), sentence=sentence, words=words, word_lengths=lengths)
    with h5py.File(h5, "w") as handle:
        handle["keys"] = np.array(keys, dtype=object).astype(h5py.string_dtype())
        handle["sentence"], handle["words"], handle["word_lengths"] = sentence, words, lengths
    stores = []
    for source in (npz, h5):
        out = tmp_path / f"{source.suffix[1:]}.h5"
        build_shapes(out, num_images=96, image_size=76, seed=0, caption_features=str(source))
        stores.append(Store(out))
    a, b = stores
    assert a.caption_features.sha256 == b.caption_features.sha256
    assert (a.caption_features.name, a.caption_features.word_dim, a.caption_features.max_tokens) == ("bert", 3, 5)
    row = keys.index(a.keys[10])
    caption = a.caption_indices(10)[2]
    np.testing.assert_allclose(a.caption_sentence(caption), sentence[row, 2].astype(np.float32), rtol=0, atol=0)
    got_words, length = a.caption_words(caption)
    assert got_words.shape == (5, 3) and length == lengths[row, 2]
    np.testing.assert_array_equal(got_words[:length], words[row, 2, :length])
    assert not got_words[length:].any()  # zero-padded past the length
    dataset = CaptionDataset(a.path, "train", image_sizes=(16,), text_features=True, pair_same_probability=0.5)
    batch = next(iter(DataLoader(dataset, batch_size=8)))
    assert batch["word_features"].shape == (8, 5, 3) and batch["word_features2"].shape == (8, 5, 3)
    for i in range(8):
        image, caption = int(batch["index"][i]), int(batch["caption_index"][i])
        row = keys.index(a.keys[image])
        number = caption - a.caption_indices(image).start
        assert int(batch["word_length"][i]) == lengths[row, number]
        torch.testing.assert_close(batch["sentence_features"][i], torch.from_numpy(sentence[row, number]).float())
    with pytest.raises(T2IError, match="word features, which cannot be averaged"):
        CaptionDataset(a.path, "train", text_features=True, features_average=4)


def test_npy_in_store_order(tmp_path, shapes_h5) -> None:
    store = Store(shapes_h5)
    rng = np.random.default_rng(3)
    array = rng.standard_normal((store.num_images, 5, 4)).astype(np.float32)
    np.save(tmp_path / "mine.npy", array)
    out = tmp_path / "npy.h5"
    build_shapes(out, num_images=96, image_size=76, seed=0, caption_features=str(tmp_path / "mine.npy"))
    result = runner.invoke(app, ["info", str(out), "--list"])
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["key"] for r in records] == store.keys and records[3]["captions"][1] == store.caption_text(16)
    got = Store(out)
    np.testing.assert_array_equal(got.caption_sentence(got.caption_indices(40)[4]), array[40, 4])
    assert got.caption_features.name == "mine"


def test_averaging_is_the_mean_of_distinct_captions_of_the_image(tmp_path, shapes_h5) -> None:
    """Caption j of image i gets the one-hot feature e_j (scaled by i + 1): the mean shows exactly which captions
    were averaged."""
    store = Store(shapes_h5)
    one_hot = np.zeros((store.num_images, 5, 5), dtype=np.float32)
    for image in range(store.num_images):
        one_hot[image] = np.eye(5) * (image + 1)
    np.save(tmp_path / "onehot.npy", one_hot)
    out = tmp_path / "avg.h5"
    build_shapes(out, num_images=96, image_size=76, seed=0, caption_features=str(tmp_path / "onehot.npy"))
    dataset = CaptionDataset(out, "train", image_sizes=(16,), text_features=True, features_average=4,
                             pair_same_probability=0.5)  # fmt: skip
    chosen_sets = set()
    for position in range(len(dataset)):
        item = dataset[position]
        for suffix, image, caption in (("", item["index"], item["caption_index"]),
                                       ("2", item["index2"], item["caption_index2"])):  # fmt: skip
            features = item[f"sentence_features{suffix}"].numpy() / (image + 1)
            chosen = np.flatnonzero(features)
            np.testing.assert_allclose(features[chosen], 0.25, rtol=1e-6)
            assert len(chosen) == 4  # four distinct captions of this image
            assert caption - dataset.store.caption_indices(image).start in chosen  # the item's own caption is one
            chosen_sets.add(tuple(chosen))
    assert len(chosen_sets) > 3  # random subsets, not always the same four


def test_mixed_pairs_frequency_correctness_and_worker_independence(shapes_h5) -> None:
    store = Store(shapes_h5)
    dataset = CaptionDataset(shapes_h5, "train", image_sizes=(8,), max_words=30, pair_same_probability=0.3, seed=5)
    labels = []
    for epoch in range(8):
        dataset.set_epoch(epoch)
        for position in range(len(dataset)):
            item = dataset[position]
            labels.append(item["pair_label"])
            captions = store.caption_indices(item["index"])
            if item["pair_label"] == 1:
                assert item["index2"] == item["index"] and item["caption_index2"] in captions
                assert item["caption_index2"] != item["caption_index"]
            else:
                assert item["index2"] != item["index"] and item["caption_index2"] not in captions
                assert item["caption_index2"] in store.caption_indices(item["index2"])
                assert item["index2"] in dataset.indices
            tokens = store.caption_tokens(item["caption_index2"])  # shapes captions are short: no word subset
            assert item["length2"] == len(tokens) and item["tokens2"][: len(tokens)].tolist() == tokens.tolist()
    # 8 epochs x 86 images: the standard deviation of the frequency is 0.016; allow 4 of them.
    assert abs(np.mean(labels) - 0.3) < 0.064
    dataset.set_epoch(2)
    batches = [list(DataLoader(dataset, batch_size=16, num_workers=workers)) for workers in (0, 2)]
    for a, b in zip(*batches, strict=True):
        for key in ("pair_label", "index2", "caption_index2", "tokens2", "tokens"):
            assert torch.equal(a[key], b[key])


def test_old_pair_names_are_p_one_and_zero(shapes_h5) -> None:
    for name, probability in (("same", 1.0), ("other", 0.0)):
        old = CaptionDataset(shapes_h5, "train", image_sizes=(8,), pair=name, seed=2)
        new = CaptionDataset(shapes_h5, "train", image_sizes=(8,), pair_same_probability=probability, seed=2)
        for position in range(0, 40, 7):
            a, b = old[position], new[position]
            assert a["pair_label"] == b["pair_label"] == int(probability)
            assert torch.equal(a["tokens2"], b["tokens2"]) and torch.equal(a["images"][0], b["images"][0])
    with pytest.raises(T2IError, match="not both"):
        CaptionDataset(shapes_h5, pair="same", pair_same_probability=0.5)
    with pytest.raises(T2IError, match="between 0 and 1"):
        CaptionDataset(shapes_h5, pair_same_probability=1.5)
    with pytest.raises(T2IError, match="no caption features"):
        CaptionDataset(shapes_h5, text_features=True)


def _prep_cub(root, out, spec: str):
    return runner.invoke(app, ["prep", "cub", str(root), "--out", str(out), "--image-size", "16", "--workers", "1",
                               "--caption-features", spec])  # fmt: skip


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    return " ".join(result.output.split())  # the console may wrap the line


def test_wrong_caption_count_names_file_image_and_counts(tmp_path) -> None:
    root = make_cub(tmp_path / "birds", 3, 2)
    add_char_cnn_rnn(root, dim=8)
    keys = pickle.load(open(root / "test" / "filenames.pickle", "rb"))
    (root / "test" / "char-CNN-RNN-embeddings.pickle").write_bytes(python2_array_pickle(np.zeros((2, 9, 8))))
    result = _prep_cub(root, tmp_path / "x.h5", "char-CNN-RNN-embeddings.pickle")
    message = _one_error_line(result)
    assert "test/char-CNN-RNN-embeddings.pickle" in message and repr(keys[0]) in message
    assert "9 caption rows" in message and "10 captions" in message and not (tmp_path / "x.h5").exists()


def test_missing_image_names_the_first(tmp_path, shapes_h5) -> None:
    store = Store(shapes_h5)
    keys, sentence, _, _ = _keyed_features(store)
    np.savez(tmp_path / "f.npz", keys=np.array(keys[2:]), sentence=sentence[2:])
    result = runner.invoke(app, ["prep", "shapes", "--out", str(tmp_path / "x.h5"), "--num-images", "96",
                                 "--image-size", "76", "--caption-features", str(tmp_path / "f.npz")])  # fmt: skip
    message = _one_error_line(result)
    assert f"no features for image {keys[1]!r}" in message and not (tmp_path / "x.h5").exists()


def test_pickle_payload_is_refused_not_run(tmp_path) -> None:
    root = make_cub(tmp_path / "birds", 3, 2)
    add_char_cnn_rnn(root, dim=8)
    marker = tmp_path / "pwned"
    payload = b"\x80\x02cos\nsystem\nX" + bytes([len(f"touch {marker}")]) + b"\x00\x00\x00"
    payload += f"touch {marker}".encode() + b"\x85R."
    (root / "train" / "char-CNN-RNN-embeddings.pickle").write_bytes(payload)
    message = _one_error_line(_prep_cub(root, tmp_path / "x.h5", "char-CNN-RNN-embeddings.pickle"))
    assert "os.system is not allowed" in message and not marker.exists() and not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("bomb", ["deep", "self"])
def test_recursion_bombs_end_in_one_line(tmp_path, bomb: str) -> None:
    root = make_cub(tmp_path / "birds", 3, 2)
    add_char_cnn_rnn(root, dim=8)
    if bomb == "deep":  # 100000 nested lists
        data = b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b"."
    else:  # a list that contains itself
        data = b"\x80\x02]q\x00h\x00a."
    (root / "train" / "char-CNN-RNN-embeddings.pickle").write_bytes(data)
    message = _one_error_line(_prep_cub(root, tmp_path / "x.h5", "char-CNN-RNN-embeddings.pickle"))
    assert "char-CNN-RNN-embeddings.pickle" in message and not (tmp_path / "x.h5").exists()


def test_verify_recomputes_image_and_feature_hashes(birds, tmp_path) -> None:
    import shutil

    _, _, out = birds
    good = runner.invoke(app, ["info", str(out), "--verify", "--json"])
    assert good.exit_code == 0 and json.loads(good.stdout)["verified"] is True
    damaged = tmp_path / "damaged.h5"
    shutil.copy(out, damaged)
    with h5py.File(damaged, "r") as handle:
        offset = handle["caption_features/sentence"].id.get_chunk_info(0).byte_offset
    with open(damaged, "r+b") as raw:  # one feature value changes; layout and indices stay valid
        raw.seek(offset + 2)
        byte = raw.read(1)[0]
        raw.seek(offset + 2)
        raw.write(bytes([byte ^ 0x10]))
    assert runner.invoke(app, ["info", str(damaged)]).exit_code == 0  # opening does not read every value
    result = runner.invoke(app, ["info", str(damaged), "--verify"])
    message = _one_error_line(result)
    assert "caption features hash mismatch" in message and "re-run prep" in message
