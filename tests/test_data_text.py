"""Tokenizer parity with AttnGAN's rules, the vocabulary, and the restricted pickle reader."""

from __future__ import annotations

import pickle

import pytest

from t2itool.data.text import Vocabulary, load_attngan_vocabulary, load_plain_pickle, tokenize
from t2itool.errors import T2IError


@pytest.mark.parametrize(
    ("caption", "tokens"),
    [
        ("It's a bird", ["it", "s", "a", "bird"]),
        ("3.5cm long", ["3", "5cm", "long"]),
        ("yellow-crowned", ["yellow", "crowned"]),
        ("café", ["caf"]),
        ("über straße", ["ber", "strae"]),
        ("a\ufffd\ufffdbird", ["a", "bird"]),
        ("snake_case WORDS", ["snake_case", "words"]),
        ("!!! ...", []),
        ("日本", []),
    ],
)
def test_tokenizer_matches_attngan(caption: str, tokens: list[str]) -> None:
    assert tokenize(caption) == tokens


def test_vocabulary_encode_decode_and_hash() -> None:
    vocab = Vocabulary.build([["a", "bird"], ["a", "red", "bird"], ["a"]])
    assert vocab.words[0] == "<end>" and vocab.words[1] == "a" and len(vocab) == 4
    ids, missing = vocab.encode(["a", "blue", "bird"])
    assert missing == ["blue"] and vocab.decode(ids) == "a bird" and 0 not in ids
    assert Vocabulary(vocab.words).sha256 == vocab.sha256
    assert Vocabulary.build([["a", "bird"]]).sha256 != vocab.sha256
    assert Vocabulary.build([["a", "bird"], ["a"]], min_word_count=2).words == ["<end>", "a"]
    with pytest.raises(T2IError):
        Vocabulary(["a", "<end>"])


def _attngan_pickle(path, ixtoword: dict, wordtoix: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump([[[1, 2]], [[2]], ixtoword, wordtoix], handle, protocol=2)


def test_vocabulary_import_is_exact(tmp_path) -> None:
    ixtoword = {0: "<end>", 1: "zebra", 2: "a", 3: "bird"}
    path = tmp_path / "captions.pickle"
    _attngan_pickle(path, ixtoword, {word: index for index, word in ixtoword.items()})
    vocab = load_attngan_vocabulary(path)
    assert vocab.words == ["<end>", "zebra", "a", "bird"]
    assert vocab.encode(["a", "zebra"])[0] == [2, 1]


def test_vocabulary_import_rejects_inconsistent_and_foreign_pickles(tmp_path) -> None:
    bad = tmp_path / "bad.pickle"
    _attngan_pickle(bad, {0: "<end>", 1: "a"}, {"<end>": 0, "a": 2})
    with pytest.raises(T2IError, match="disagrees"):
        load_attngan_vocabulary(bad)
    evil = tmp_path / "evil.pickle"
    with open(evil, "wb") as handle:
        pickle.dump([set(), {"x": 1.5}], handle, protocol=2)  # set needs a global: refused
    with pytest.raises(T2IError, match=str(evil.name)):
        load_plain_pickle(evil)
    with pytest.raises(T2IError, match="no such file"):
        load_attngan_vocabulary(tmp_path / "missing.pickle")


def test_python2_byte_strings_become_str(tmp_path) -> None:
    path = tmp_path / "py2.pickle"
    # Protocol-2 SHORT_BINSTRING opcodes, as Python 2 writes `str`: decoded as latin1.
    path.write_bytes(b"\x80\x02]q\x00(U\x05a/b_1q\x01U\x03cafq\x02e.")
    assert load_plain_pickle(path) == ["a/b_1", "caf"]
