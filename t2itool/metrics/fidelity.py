"""FID / IS / KID through torch-fidelity: image datasets, feature extraction with a progress bar, the cached reference
features of a data file's split, and `compute_fidelity`, which hands the features to `torch_fidelity.calculate_metrics`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_fidelity
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from t2itool.errors import T2IError
from t2itool.fileio import atomic_torch_save, sha256_file
from t2itool.metrics.extractors import TF_INCEPTION, TF_WEIGHTS_FILE

CACHE_FORMAT = "t2itool-reference-features"
CACHE_VERSION = 1


def progress_bar(console: Any = None) -> Any:
    """A rich bar on stderr on a terminal, plain progress lines otherwise (`t2itool.progress`)."""
    from t2itool.progress import progress_bar as bar

    return bar(console)


def resize_uint8(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (size, size, 3) with PIL bicubic (antialiased), or unchanged if already that size."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


class ReferenceImages(Dataset):
    """A data file's split as bare uint8 (3, S, S) tensors: the centre square of each stored image (format 3 keeps
    the aspect ratio) resized to the samples' resolution, never a squashed whole image; with `flips`, every image is
    followed by its horizontal mirror (the CUB convention for reference statistics)."""

    def __init__(self, data: str | os.PathLike, split: str, resolution: int, flips: bool) -> None:
        from t2itool.data.store import Store

        self.store = Store(data)
        self.indices = self.store.split_indices(split)
        if len(self.indices) == 0:
            raise T2IError(f"{data}: split {split!r} has no images")
        self.resolution, self.flips = int(resolution), bool(flips)

    def __len__(self) -> int:
        return len(self.indices) * (2 if self.flips else 1)

    def __getitem__(self, item: int) -> torch.Tensor:
        index, flip = (item // 2, item % 2 == 1) if self.flips else (item, False)
        image = resize_uint8(self.store.square_image(int(self.indices[index])), self.resolution)
        if flip:
            image = image[:, ::-1]
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


SAMPLES_INDEX = "samples.jsonl"


def _index_error(index: Path, line: int, what: str) -> T2IError:
    return T2IError(f"{index}:{line}: {what}")


def read_samples_index(root: Path) -> list[dict[str, Any]]:
    """The records of ROOT/samples.jsonl, checked: one JSON object a line, each with the image's `file` (a relative
    name inside the folder, listed once) and well-typed optional fields."""
    index = root / SAMPLES_INDEX
    if not index.is_file():
        raise T2IError(
            f"{index}: missing; `t2itool sample` writes it last, so without it the sampling did not finish (for "
            'images made elsewhere, list them one JSON object a line: {"file": "NAME.png", "caption": "..."})'
        )
    try:
        text = index.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise T2IError(f"{index}: not UTF-8 text") from None
    except OSError as exc:
        raise T2IError(f"{index}: cannot be read ({exc.strerror})") from None
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _index_error(index, number, f"not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise _index_error(index, number, f"expected a JSON object, found {type(record).__name__}")
        name = record.get("file")
        if not isinstance(name, str) or not name.strip():
            raise _index_error(index, number, "'file' must be the image's file name (a string)")
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts or not name.lower().endswith(".png"):
            raise _index_error(index, number, f"'file' {name!r}: expected a .png name inside the folder")
        if name in seen:
            raise _index_error(index, number, f"'file' {name!r} is listed twice")
        seen.add(name)
        for key, types, expected in (
            ("caption", (str,), "a string"),
            ("caption_index", (int, type(None)), "an integer"),
            ("snapshot_sha256", (str, type(None)), "a string"),
        ):
            if key in record and (not isinstance(record[key], types) or isinstance(record[key], bool)):
                raise _index_error(index, number, f"{key!r} must be {expected}, not {record[key]!r}")
        records.append(record)
    if not records:
        raise T2IError(f"{index}: lists no images")
    return records


class SampleImages(Dataset):
    """PNG files of a samples folder in the order of its samples.jsonl, as bare uint8 (3, H, W) tensors.

    The folder is checked on opening: samples.jsonl is present and well formed, lists every PNG of the folder (other
    than grid.png) and only existing files, and every listed file is an image of one common size."""

    def __init__(self, samples_dir: str | os.PathLike) -> None:
        self.root = Path(samples_dir)
        if not self.root.is_dir():
            raise T2IError(f"{self.root}: no such samples folder (make one with `t2itool sample ... --out DIR`)")
        self.records = read_samples_index(self.root)
        self.files = [self.root / record["file"] for record in self.records]
        index = self.root / SAMPLES_INDEX
        missing = [str(p) for p in self.files if not p.is_file()]
        if missing:
            raise T2IError(f"{index}: {len(missing)} listed files are missing, e.g. {missing[0]}")
        listed = {p.name for p in self.files if p.parent == self.root}
        unlisted = sorted(p.name for p in self.root.glob("*.png") if p.name != "grid.png" and p.name not in listed)
        if unlisted:
            raise T2IError(
                f"{index}: does not list {len(unlisted)} PNG files of the folder, e.g. {unlisted[0]} (left by another "
                "sampling?); sample into an empty folder"
            )
        self.size = self._common_size()

    def _common_size(self) -> tuple[int, int]:
        size, first = None, None
        for path in self.files:
            try:
                with Image.open(path) as image:
                    this = image.size
            except (OSError, SyntaxError, ValueError) as exc:
                raise T2IError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
            if size is None:
                size, first = this, path
            elif this != size:
                raise T2IError(
                    f"{path}: {this[0]}x{this[1]} px, but {first.name} is {size[0]}x{size[1]}; the samples of a "
                    "folder must all have one size"
                )
        assert size is not None
        return size

    def __len__(self) -> int:
        return len(self.files)

    def resolution(self) -> int:
        return int(self.size[0])

    def __getitem__(self, item: int) -> torch.Tensor:
        try:
            with Image.open(self.files[item]) as image:
                array = np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as exc:
            raise T2IError(f"{self.files[item]}: not a readable image ({type(exc).__name__}: {exc})") from None
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def default_layers(extractor: str, metrics: tuple[str, ...]) -> list[str]:
    if extractor not in FEATURE_EXTRACTORS_REGISTRY:
        raise T2IError(
            f"unknown feature extractor {extractor!r}; registered: {', '.join(sorted(FEATURE_EXTRACTORS_REGISTRY))}"
        )
    cls = FEATURE_EXTRACTORS_REGISTRY[extractor]
    return sorted({cls.get_default_feature_layer_for_metric(metric) for metric in metrics})


def build_extractor(extractor: str, layers: list[str], weights: Path | None, device: torch.device) -> torch.nn.Module:
    """The torch-fidelity extractor `calculate_metrics` would build, on `device`."""
    cls = FEATURE_EXTRACTORS_REGISTRY[extractor]
    kwargs = {"feature_extractor_weights_path": str(weights) if weights is not None else None}
    try:
        module = cls(extractor, layers, **kwargs)
    except (OSError, RuntimeError, EOFError) as exc:
        raise T2IError(f"feature extractor {extractor}: cannot load its weights ({type(exc).__name__}: {exc})") from exc
    return module.requires_grad_(False).eval().to(device)


@torch.no_grad()
def extract_features(
    dataset: Dataset,
    extractor: str,
    layers: list[str],
    weights: Path | None,
    device: torch.device,
    batch_size: int = 64,
    description: str = "features",
    console: Any = None,
    model: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """Features of every image, per layer (float32, CPU), batch by batch as torch-fidelity does, with a progress bar.
    `model` overrides the registry lookup (the torchvision flavour's extractor)."""
    model = build_extractor(extractor, layers, weights, device) if model is None else model.eval().to(device)
    loader = DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=False, num_workers=0)
    chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    with progress_bar(console) as progress:
        task = progress.add_task(description, total=len(dataset))
        for batch in loader:
            assert batch.dtype == torch.uint8 and batch.dim() == 4 and batch.shape[1] == 3, tuple(batch.shape)
            output = model.convert_features_tuple_to_dict(model(batch.to(device)))
            for layer in layers:
                chunks[layer].append(output[layer].detach().float().cpu())
            progress.advance(task, batch.shape[0])
    return {layer: torch.cat(parts) for layer, parts in chunks.items()}


def weights_id(extractor: str, weights: Path | None) -> str:
    """What identifies the extractor's weights in cache keys and scores.jsonl: the file's sha256 when there is one."""
    if weights is not None:
        return f"sha256:{sha256_file(weights)}"
    return TF_WEIGHTS_FILE if extractor == TF_INCEPTION else "builtin"


@dataclass
class ReferenceFeatures:
    features: dict[str, torch.Tensor]
    key: dict[str, Any]
    path: Path
    from_cache: bool


def default_cache_dir() -> Path:
    return Path(os.environ.get("T2ITOOL_CACHE", Path(torch.hub.get_dir()).parent / "t2itool")) / "reference"


def reference_features(
    data: str | os.PathLike,
    *,
    split: str = "test",
    resolution: int,
    flips: bool = True,
    extractor: str = TF_INCEPTION,
    layers: list[str],
    weights: Path | None = None,
    weights_hash: str | None = None,
    device: torch.device = torch.device("cpu"),
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    console: Any = None,
    model: torch.nn.Module | None = None,
) -> ReferenceFeatures:
    """Features of the reference images, computed once and cached under a hash of every input that changes them."""
    from t2itool.data.store import Store

    store = Store(data)
    key = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "data_content_sha256": store.content_sha256,
        "split": split,
        "resolution": int(resolution),
        "resize": "pil-bicubic" if store.image_size != int(resolution) else "none",
        "crop": "centre-square",
        "flips": bool(flips),
        "extractor": extractor,
        "layers": sorted(layers),
        "weights": weights_hash or weights_id(extractor, weights),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(cache_dir or default_cache_dir()) / f"ref-{split}-{resolution}px-{extractor}-{digest}.pt"
    if path.is_file():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a foreign or damaged file is recomputed, never trusted
            obj = None
        if isinstance(obj, dict) and obj.get("key") == key:
            return ReferenceFeatures(obj["features"], key, path, True)
    dataset = ReferenceImages(data, split, resolution, flips)
    features = extract_features(
        dataset, extractor, sorted(layers), weights, device, batch_size, f"reference {split}", console, model
    )
    atomic_torch_save({"key": key, "features": features}, path)
    return ReferenceFeatures(features, key, path, False)


@dataclass
class FidelityResult:
    values: dict[str, float]  # torch-fidelity keys
    num_images: int
    num_reference: int
    notes: list[str] = field(default_factory=list)


def _seed_cache(root: Path, name: str, extractor: str, features: dict[str, torch.Tensor]) -> None:
    # torch-fidelity's documented cache layout: `<input cache name>-<extractor>-features-<layer>.pt`; a hit means it
    # reads these features instead of running the network again.
    for layer, tensor in features.items():
        torch.save(tensor, root / f"{name}-{extractor}-features-{layer}.pt")


def compute_fidelity(
    samples: Dataset,
    sample_features: dict[str, torch.Tensor],
    reference: Dataset | None,
    reference_features: dict[str, torch.Tensor] | None,
    *,
    isc: bool = False,
    fid: bool = False,
    kid: bool = False,
    extractor: str = TF_INCEPTION,
    weights: Path | None = None,
    device: torch.device = torch.device("cpu"),
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    isc_splits: int = 10,
) -> FidelityResult:
    """IS / FID / KID by `torch_fidelity.calculate_metrics` on precomputed features (fed through its cache)."""
    if not (isc or fid or kid):
        raise T2IError("choose at least one of --is, --fid, --kid")
    if (fid or kid) and (reference is None or reference_features is None):
        raise ValueError("FID and KID need reference features")
    num_images = len(next(iter(sample_features.values())))
    num_reference = len(next(iter(reference_features.values()))) if reference_features else 0
    notes: list[str] = []
    common = {
        "cuda": device.type == "cuda",
        "feature_extractor": extractor,
        "feature_extractor_weights_path": str(weights) if weights is not None else None,
        "verbose": False,
        "save_cpu_ram": True,
        "cache": True,
        "input1_cache_name": "samples",
        "input2_cache_name": "reference",
    }
    values: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="t2itool-fidelity-") as tmp:
        root = Path(tmp)
        _seed_cache(root, "samples", extractor, sample_features)
        if reference_features is not None:
            _seed_cache(root, "reference", extractor, reference_features)
        if isc:
            if num_images < isc_splits:
                raise T2IError(f"IS needs at least {isc_splits} images (one per split); the samples have {num_images}")
            values.update(
                torch_fidelity.calculate_metrics(
                    input1=samples, isc=True, isc_splits=isc_splits, cache_root=tmp, **common
                )
            )
        if fid or kid:
            subset = kid_subset_size
            if kid and min(num_images, num_reference) < subset:
                subset = min(num_images, num_reference)
                notes.append(f"KID subset size lowered from {kid_subset_size} to {subset} (fewer images)")
            values.update(
                torch_fidelity.calculate_metrics(
                    input1=samples,
                    input2=reference,
                    fid=fid,
                    kid=kid,
                    kid_subset_size=subset,
                    kid_subsets=kid_subsets,
                    cache_root=tmp,
                    **common,
                )
            )
    return FidelityResult({k: float(v) for k, v in values.items()}, num_images, num_reference, notes)
