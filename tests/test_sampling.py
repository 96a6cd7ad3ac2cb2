"""The sampler: batch-size independence, seeds, file outputs, out-of-vocabulary reporting, protocol jobs, maps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from t2itool import sampling
from t2itool.data.text import Vocabulary
from t2itool.encoders.features import TextFeatures
from t2itool.encoders.kinds import TextSource
from t2itool.errors import T2IError
from t2itool.models.registry import GeneratorOutput, get_model
from t2itool.noise import draw_rows

WORDS = ["<end>", "a", "small", "red", "bird", "with", "blue", "wings", "green", "circle"]


class BagOfWordsEncoder(nn.Module):
    """A stand-in for the DAMSM text encoder with the same `encode` contract (per-caption, batch independent)."""

    def __init__(self, vocab_size: int, dim: int = 256) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> TextFeatures:
        words = self.embed(tokens).transpose(1, 2)
        sentence = words.sum(2) / lengths.clamp_min(1).unsqueeze(1).float()
        return TextFeatures(words, sentence, tokens == 0, lengths)


@dataclass
class FakeSnapshot:
    path: Path
    spec: Any
    config: Any
    generator: nn.Module
    text_encoder: nn.Module
    sha256: str
    vocab_words: list[str]
    vocab_sha256: str

    @property
    def text(self) -> TextSource:
        return TextSource("damsm", encoder=self.text_encoder)


def _snapshot(maps: bool = False) -> FakeSnapshot:
    torch.manual_seed(0)
    spec = get_model("dfgan")
    config = spec.make_config(None, {"image_size": 32, "ngf": 8, "noise_dim": 16, "max_words": 6})
    if maps:  # a spec whose generator also returns per-block maps, as SSA-GAN does
        import dataclasses

        def generate(generator, noise, text) -> GeneratorOutput:
            image = generator(noise["z"], text.sentence)
            return GeneratorOutput([image], {"mask": [image[:, :1, ::4, ::4], image[:, 1:2]]})

        spec = dataclasses.replace(spec, generate=generate)
    vocab = Vocabulary(WORDS)
    return FakeSnapshot(
        Path("snap.pt"),
        spec,
        config,
        spec.build_generator(config).eval(),
        BagOfWordsEncoder(len(WORDS)).eval(),
        "f" * 64,
        WORDS,
        vocab.sha256,
    )


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("c*.png"))}


def test_images_do_not_depend_on_batch_size(tmp_path: Path) -> None:
    snap = _snapshot()
    prompts = sampling.prompts_from_texts(
        ["a small red bird", "blue wings", "a green circle with wings"], Vocabulary(WORDS)
    )
    jobs = sampling.jobs_for(prompts, per_caption=2, seed=7)
    sampling.sample(snap, jobs, tmp_path / "b1", batch_size=1)
    sampling.sample(snap, jobs, tmp_path / "b4", batch_size=4)
    one, four = _pixels(tmp_path / "b1"), _pixels(tmp_path / "b4")
    assert len(one) == 6 and one.keys() == four.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], four[name])
    # different seeds give different images
    assert not np.array_equal(one["c000000-s0007.png"], one["c000000-s0008.png"])


def test_outputs_records_and_oov_words(tmp_path: Path) -> None:
    snap = _snapshot()
    prompts = sampling.prompts_from_texts(["A small purple bird!", "green circle"], Vocabulary(WORDS))
    assert prompts[0].missing == ["purple"] and prompts[0].tokens == ["a", "small", "purple", "bird"]
    result = sampling.sample(snap, sampling.jobs_for(prompts, 1, 0), tmp_path, truncation=None)
    assert result.missing_words == {"A small purple bird!": ["purple"]}
    records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["file"] for r in records] == ["c000000-s0000.png", "c000001-s0000.png"]
    assert records[0]["snapshot_sha256"] == "f" * 64 and records[0]["missing_words"] == ["purple"]
    assert records[0]["token_ids"] == [1, 2, 4] and records[0]["truncation"] is None
    assert np.asarray(Image.open(tmp_path / "c000000-s0000.png")).shape == (32, 32, 3)
    assert np.asarray(Image.open(tmp_path / "grid.png")).shape == (32, 64, 3)
    with pytest.raises(T2IError, match="none of its words"):
        sampling.prompts_from_texts(["purple hat"], Vocabulary(WORDS))


def test_truncation_default_and_noise_streams(tmp_path: Path) -> None:
    snap = _snapshot()
    assert snap.spec.default_truncation(snap.config) == pytest.approx(0.88)
    jobs = sampling.jobs_for(sampling.prompts_from_texts(["red bird"], Vocabulary(WORDS)), 1, 3)
    # The sampler's noise is the documented one: stream "z" keyed by (caption key, seed), truncated as asked.
    keys = sampling.noise_keys(jobs)
    assert keys == [("sample", 0, 3)]
    noise = draw_rows(keys, snap.spec.noise_streams(snap.config), 0.5)["z"]
    with torch.no_grad():
        expected = snap.generator(
            noise, snap.text_encoder.encode(torch.tensor([[3, 4, 0, 0, 0, 0]]), torch.tensor([2])).sentence
        )
    sampling.sample(snap, jobs, tmp_path, truncation=0.5)
    got = np.asarray(Image.open(tmp_path / "c000000-s0003.png"))
    np.testing.assert_array_equal(got, sampling.to_uint8(expected)[0])


def test_visualize_saves_maps(tmp_path: Path) -> None:
    snap = _snapshot(maps=True)
    prompts = sampling.prompts_from_texts(["red bird"], Vocabulary(WORDS))
    result = sampling.sample(snap, sampling.jobs_for(prompts, 1, 0), tmp_path, visualize=True)
    map_file = tmp_path / result.records[0]["maps"]["mask"]
    assert np.asarray(Image.open(map_file)).shape == (32, 64)  # two blocks side by side at image size


def test_split_prompts_and_protocol_jobs(shapes_h5: str) -> None:
    from t2itool.data.store import Store

    store = Store(shapes_h5)
    prompts = sampling.prompts_from_split(store, "test", store.vocab_sha256)
    test_images = store.split_indices("test")
    assert len(prompts) == sum(len(store.caption_indices(int(i))) for i in test_images)
    assert all(store.caption_image(p.caption_index) in set(test_images.tolist()) for p in prompts)
    jobs = sampling.protocol_jobs(store, "test", store.vocab_sha256, num_images=2 * len(test_images) + 1)
    assert len(jobs) == 2 * len(test_images) + 1
    assert [j.seed for j in jobs[: len(test_images)]] == [0] * len(test_images) and jobs[-1].seed == 2
    with pytest.raises(T2IError, match="vocabulary"):
        sampling.prompts_from_split(store, "test", "0" * 64)


def test_visualize_ssacn_masks_per_block(tmp_path: Path) -> None:
    # registers the model; it imports the DAMSM losses, so this runs once t2itool.encoders provides them
    pytest.importorskip("t2itool.models.dfgan_ssacn", exc_type=ImportError)

    spec = get_model("dfgan-ssacn")
    config = spec.make_config(None, {"image_size": 32, "ngf": 8, "noise_dim": 16, "max_words": 6})
    torch.manual_seed(0)
    snap = FakeSnapshot(
        Path("snap.pt"), spec, config, spec.build_generator(config).eval(), BagOfWordsEncoder(len(WORDS)).eval(),
        "e" * 64, WORDS, Vocabulary(WORDS).sha256,
    )  # fmt: skip
    prompts = sampling.prompts_from_texts(["red bird", "blue circle"], Vocabulary(WORDS))
    result = sampling.sample(snap, sampling.jobs_for(prompts, 1, 0), tmp_path, visualize=True, batch_size=2)
    noise = {"z": torch.zeros(1, 16)}
    text = snap.text_encoder.encode(torch.tensor([[3, 4, 0, 0, 0, 0]]), torch.tensor([2]))
    blocks = len(spec.generate(snap.generator, noise, text).maps["mask"])
    strip = np.asarray(Image.open(tmp_path / result.records[1]["maps"]["mask"]))
    assert blocks >= 1 and strip.shape == (32, 32 * blocks)


def test_long_captions_keep_a_seeded_random_in_order_subset(tmp_path: Path) -> None:
    """AttnGAN's get_caption rule at sampling: more than max_words (6) words -> 6 random positions kept in order."""
    snap = _snapshot()
    text = "a small red bird with blue wings green circle"  # 9 known words
    prompt = sampling.prompts_from_texts([text], Vocabulary(WORDS))[0]
    jobs = [sampling.Job(prompt, seed) for seed in range(8)]
    tokens, lengths = sampling.caption_rows(jobs, 6)
    assert lengths.tolist() == [6] * 8
    subsets = set()
    for row in tokens.tolist():
        positions = [prompt.ids.index(token) for token in row]  # the 9 ids are distinct
        assert positions == sorted(positions)
        subsets.add(tuple(row))
    assert len(subsets) > 1 and subsets != {tuple(prompt.ids[:6])}  # seeds differ; not the head truncation
    again, _ = sampling.caption_rows(jobs[::-1], 6)
    torch.testing.assert_close(again, tokens.flip(0), rtol=0, atol=0)  # keyed by (caption, seed), not batch position
    short = sampling.prompts_from_texts(["red bird"], Vocabulary(WORDS))[0]
    padded, short_lengths = sampling.caption_rows([sampling.Job(short, 0)], 6)
    assert padded.tolist() == [[3, 4, 0, 0, 0, 0]] and short_lengths.tolist() == [2]
    # The sampler feeds exactly these tokens to the text encoder.
    sampling.sample(snap, jobs[:1], tmp_path, truncation=None)
    noise = draw_rows(sampling.noise_keys(jobs[:1]), snap.spec.noise_streams(snap.config), None)["z"]
    with torch.no_grad():
        expected = snap.generator(noise, snap.text_encoder.encode(tokens[:1], lengths[:1]).sentence)
    png = np.asarray(Image.open(tmp_path / "c000000-s0000.png"))
    np.testing.assert_array_equal(png, sampling.to_uint8(expected)[0])


def test_pixels_are_truncated_as_the_official_code() -> None:
    # (x + 1) * 127.5 = 200.6, 0, 255, 127.5: truncation keeps 200 and 127 (rounding would give 201 and 128).
    values = torch.tensor([200.6 / 127.5 - 1, -1.0, 1.0, 0.0, -2.0, 2.0])
    images = values.view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert sampling.to_uint8(images)[0, 0, :, 0].tolist() == [200, 0, 255, 127, 0, 255]
    assert sampling.to_uint8(images, rounding=True)[0, 0, :, 0].tolist() == [201, 0, 255, 128, 0, 255]


def test_protocol_passes_follow_the_data_source() -> None:
    @dataclass
    class FakeStore:
        source: str

    assert [sampling.default_passes(FakeStore(s)) for s in ("cub", "coco", "shapes", "folder")] == [10, 1, 1, 1]
