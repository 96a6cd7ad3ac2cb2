"""Format 3: images stored with their aspect ratio (torchvision's Resize of the shorter side, bit for bit), crops
anywhere in them as the official transforms take them, `--square`, and refusal of older files."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from conftest import make_coco_official
from PIL import Image
from torchvision import transforms
from typer.testing import CliRunner

from t2itool.cli.main import app
from t2itool.data.dataset import CaptionDataset, resized_shape
from t2itool.data.sources.coco import build_coco
from t2itool.data.store import Store
from t2itool.errors import T2IError

runner = CliRunner()


@pytest.fixture(scope="module")
def coco_640(tmp_path_factory):
    """COCO-2014 layout with 640 x 480 photos (textured, so every crop position is recognisable), stored at 76 px."""
    root = make_coco_official(tmp_path_factory.mktemp("coco640") / "coco", 3, 1, size=(640, 480), textured=True)
    out = root.parent / "coco.h5"
    build_coco(root, out, image_size=76, workers=1, show_progress=False)
    return root, out


def test_whole_image_stored_as_torchvision_resizes_it(coco_640) -> None:
    root, out = coco_640
    store = Store(out)
    assert store.image_resize == "shorter-side" and store.image_size == 76
    original = Image.open(root / "train2014" / "COCO_train2014_000000000010.jpg").convert("RGB")
    expected = np.asarray(transforms.Resize(76)(original))  # 480 x 640 -> 76 x int(76 * 640 / 480) = 76 x 101
    assert store.image(0).shape == (76, 101, 3) and np.array_equal(store.image(0), expected)
    assert resized_shape(480, 640, 76) == (76, 101) and resized_shape(640, 480, 76) == (101, 76)
    assert store.square_image(0).shape == (76, 76, 3)
    assert np.array_equal(store.square_image(0), expected[:, 12:88])


def _crop_position(stored: np.ndarray, crop: np.ndarray) -> tuple[int, int, bool]:
    """(top, left, flipped) of the one window of `stored` that `crop` is."""
    size = crop.shape[0]
    found = []
    for flipped, candidate in ((False, crop), (True, crop[:, ::-1])):
        corner = np.all(stored[: stored.shape[0] - size + 1, : stored.shape[1] - size + 1] == candidate[0, 0], axis=-1)
        for top, left in np.argwhere(corner):
            if np.array_equal(stored[top : top + size, left : left + size], candidate):
                found.append((int(top), int(left), flipped))
    assert len(found) == 1, found
    return found[0]


def test_crops_cover_the_whole_width_of_640x480_images(coco_640) -> None:
    """The official RandomCrop(64) of the 76 x 101 resize reaches every column; the older centre square of 76 only
    the middle 76 (columns 12..87 of the resize)."""
    _, out = coco_640
    store = Store(out)
    dataset = CaptionDataset(out, "train", image_sizes=(64,), uint8=True, seed=0)
    covered = np.zeros(101, dtype=bool)
    lefts, tops, flips = set(), set(), set()
    for epoch in range(100):
        dataset.set_epoch(epoch)
        for position in range(len(dataset)):
            item = dataset[position]
            crop = item["images"][0].permute(1, 2, 0).numpy()
            top, left, flipped = _crop_position(store.image(item["index"]), crop)
            covered[left : left + 64] = True
            lefts.add(left)
            tops.add(top)
            flips.add(flipped)
    assert covered.all()  # all 101 columns
    assert min(lefts) == 0 and max(lefts) == 101 - 64 and len(lefts) > 30
    assert min(tops) == 0 and max(tops) == 76 - 64 and flips == {False, True}


def test_centre_crop_without_augment_and_resize_keeps_aspect(coco_640) -> None:
    _, out = coco_640
    store = Store(out)
    plain = CaptionDataset(out, "train", image_sizes=(64,), augment=False, uint8=True)
    crop = plain[0]["images"][0].permute(1, 2, 0).numpy()
    assert _crop_position(store.image(plain[0]["index"]), crop) == (6, 18, False)  # ((76-64)//2, (101-64)//2)
    # A 32 crop resizes the stored 76 x 101 to its 38 margin with the aspect kept (38 x 50), then crops.
    small = CaptionDataset(out, "train", image_sizes=(32, 16), augment=True)
    assert [tuple(x.shape) for x in small[0]["images"]] == [(3, 32, 32), (3, 16, 16)]


def test_square_flag_and_jpeg_format(coco_640, tmp_path) -> None:
    root, out = coco_640
    square = tmp_path / "square.h5"
    jpeg = tmp_path / "jpeg.h5"
    result = runner.invoke(app, ["prep", "coco", str(root), "--out", str(square), "--image-size", "76", "--square"])
    assert result.exit_code == 0, result.output
    build_coco(root, jpeg, image_size=76, image_format="jpeg", workers=1, show_progress=False)
    assert Store(square).image(0).shape == (76, 76, 3) and Store(square).image_resize == "centre-square"
    decoded = Store(jpeg).image(0)
    assert decoded.shape == (76, 101, 3) and Store(jpeg).image_shape(0) == (76, 101)
    assert np.abs(decoded.astype(int) - Store(out).image(0).astype(int)).mean() < 6  # JPEG (q 95) of noise
    info = runner.invoke(app, ["info", str(jpeg), "--json"])
    assert info.exit_code == 0 and '"image_resize": "shorter-side"' in info.stdout


@pytest.mark.parametrize("version", [1, 2])
def test_older_files_are_refused_with_one_line(coco_640, tmp_path, version: int) -> None:
    _, out = coco_640
    old = tmp_path / f"v{version}.h5"
    shutil.copy(out, old)
    with h5py.File(old, "a") as handle:
        handle.attrs["format_version"] = version
    with pytest.raises(T2IError, match=f"data format version {version}, this t2itool reads 3; re-run prep"):
        Store(old)
    result = runner.invoke(app, ["info", str(old)])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "re-run prep" in result.output


def test_fid_reference_is_the_centre_square_not_a_squashed_image(coco_640) -> None:
    from t2itool.metrics.fidelity import ReferenceImages, resize_uint8

    _, out = coco_640
    store = Store(out)
    reference = ReferenceImages(out, "test", 32, flips=False)
    index = int(store.split_indices("test")[0])
    whole = store.image(index)
    assert whole.shape[0] != whole.shape[1]  # 76 x 101: aspect kept
    side, left = whole.shape[0], (whole.shape[1] - whole.shape[0]) // 2
    expected = resize_uint8(np.ascontiguousarray(whole[:, left : left + side]), 32)
    assert np.array_equal(reference[0].permute(1, 2, 0).numpy(), np.asarray(expected))
    assert not np.array_equal(np.asarray(expected), np.asarray(resize_uint8(whole, 32)))
