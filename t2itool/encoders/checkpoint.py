"""DAMSM checkpoints that rebuild themselves: both encoders' state dicts and configs, the loss gammas, the backbone's
origin, the vocabulary hash and the data file's identity. `load_damsm` refuses a vocabulary other than the data's;
`import_attngan` converts AttnGAN's released `text_encoder*.pth` / `image_encoder*.pth`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from t2itool.encoders.image import PROJECTION_KEYS, ImageEncoder
from t2itool.encoders.text import TextEncoder
from t2itool.errors import T2IError
from t2itool.fileio import atomic_torch_save, load_checkpoint, sha256_file

DAMSM_FORMAT = "t2itool-damsm"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "damsm.pt"  # what `pretrain-damsm --out DIR` leaves as DIR/damsm.pt
DEFAULT_GAMMAS = {"gamma1": 4.0, "gamma2": 5.0, "gamma3": 10.0}


@dataclass
class DAMSM:
    """A loaded checkpoint: the encoders (on `device`, eval mode, frozen unless asked otherwise) and their record."""

    text_encoder: TextEncoder
    image_encoder: ImageEncoder
    gamma1: float
    gamma2: float
    gamma3: float
    vocab_size: int
    vocab_sha256: str
    backbone: str
    path: Path | None = None
    sha256: str = ""
    epoch: int = 0
    source: str = "pretrain-damsm"
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def gammas(self) -> dict[str, float]:
        return {"gamma1": self.gamma1, "gamma2": self.gamma2, "gamma3": self.gamma3}


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in state.items()}


def damsm_record(
    text_encoder: TextEncoder,
    image_encoder: ImageEncoder,
    *,
    vocab_sha256: str,
    backbone: str,
    data: dict[str, Any] | None = None,
    gammas: dict[str, float] | None = None,
    epoch: int = 0,
    source: str = "pretrain-damsm",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint as a dict of plain types and tensors (what `save_damsm` writes)."""
    from t2itool import __version__

    return {
        "format": DAMSM_FORMAT,
        "format_version": FORMAT_VERSION,
        "t2itool_version": __version__,
        "source": source,
        "epoch": int(epoch),
        "text_encoder": _cpu(text_encoder.state_dict()),
        "text_encoder_config": text_encoder.config(),
        "image_encoder": _cpu(image_encoder.state_dict()),
        "image_encoder_config": image_encoder.config(),
        "backbone": backbone,
        "gammas": {key: float(value) for key, value in (gammas or DEFAULT_GAMMAS).items()},
        "vocab_size": int(text_encoder.vocab_size),
        "vocab_sha256": vocab_sha256,
        "data": dict(data or {}),
        **(extra or {}),
    }


def save_damsm(
    path: str | Path,
    text_encoder: TextEncoder,
    image_encoder: ImageEncoder,
    *,
    store: Any,
    backbone: str = "unrecorded",
    gammas: dict[str, float] | None = None,
    epoch: int = 0,
    source: str = "pretrain-damsm",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint for `store`'s vocabulary, atomically. Refuses a text encoder of another vocabulary size."""
    if text_encoder.vocab_size != len(store.vocab):
        raise T2IError(
            f"text encoder has {text_encoder.vocab_size} words, {store.path} has {len(store.vocab)}: "
            "a DAMSM checkpoint must match its data file's vocabulary"
        )
    record = damsm_record(
        text_encoder,
        image_encoder,
        vocab_sha256=store.vocab_sha256,
        backbone=backbone,
        data=store.identity(),
        gammas=gammas,
        epoch=epoch,
        source=source,
        extra=extra,
    )
    atomic_torch_save(record, path)
    return Path(path)


def resolve_damsm_path(path: str | Path) -> Path:
    """A checkpoint file, or a `pretrain-damsm --out` folder holding damsm.pt."""
    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT_NAME).is_file():
            raise T2IError(
                f"{path}: folder without {CHECKPOINT_NAME} (expected a `t2itool pretrain-damsm --out` folder)"
            )
        return path / CHECKPOINT_NAME
    return path


def read_damsm(path: str | Path) -> tuple[Path, dict[str, Any]]:
    file = resolve_damsm_path(path)
    record = load_checkpoint(file, "DAMSM checkpoint")
    if record.get("format") != DAMSM_FORMAT:
        hint = (
            " (AttnGAN's released encoders: convert them with `t2itool import-damsm`)"
            if "encoder.weight" in record
            else ""
        )
        raise T2IError(f"{file}: not a t2itool DAMSM checkpoint{hint}")
    if int(record.get("format_version", 0)) > FORMAT_VERSION:
        raise T2IError(f"{file}: DAMSM format {record['format_version']} is newer than this t2itool reads")
    return file, record


def check_vocabulary(record: dict[str, Any], store: Any, where: str) -> None:
    """Refuse an encoder trained on another vocabulary, naming both sizes and hashes."""
    if record["vocab_sha256"] != store.vocab_sha256 or int(record["vocab_size"]) != len(store.vocab):
        raise T2IError(
            f"{where}: DAMSM vocabulary ({record['vocab_size']} words, sha256 {record['vocab_sha256'][:12]}) differs "
            f"from {store.path} ({len(store.vocab)} words, sha256 {store.vocab_sha256[:12]}); use the encoder "
            "pretrained on this file, or re-run prep with the encoder's vocabulary (--vocab captions.pickle)"
        )


def load_damsm(
    path: str | Path,
    store: Any = None,
    device: str | torch.device = "cpu",
    trainable_text: bool = False,
) -> DAMSM:
    """Rebuild both encoders from a checkpoint; with `store`, refuse a vocabulary other than the data file's.
    The text encoder comes back frozen in eval mode unless `trainable_text` (then train mode, gradients on)."""
    file, record = read_damsm(path)
    if store is not None:
        check_vocabulary(record, store, str(file))
    text_encoder = TextEncoder.from_config(record["text_encoder_config"])
    image_encoder = ImageEncoder.from_config(record["image_encoder_config"])
    try:
        text_encoder.load_state_dict(record["text_encoder"])
        image_encoder.load_state_dict(record["image_encoder"])
    except RuntimeError as exc:
        raise T2IError(
            f"{file}: encoder weights do not fit their recorded config ({str(exc).splitlines()[0]})"
        ) from exc
    text_encoder.to(device).train(trainable_text).requires_grad_(trainable_text)
    image_encoder.to(device).eval().requires_grad_(False)
    gammas = {**DEFAULT_GAMMAS, **record.get("gammas", {})}
    return DAMSM(
        text_encoder=text_encoder,
        image_encoder=image_encoder,
        vocab_size=int(record["vocab_size"]),
        vocab_sha256=str(record["vocab_sha256"]),
        backbone=str(record.get("backbone", "unrecorded")),
        path=file,
        sha256=sha256_file(file),
        epoch=int(record.get("epoch", 0)),
        source=str(record.get("source", "")),
        data=dict(record.get("data", {})),
        **gammas,
    )


def _released_state(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A released AttnGAN state dict (old or new torch serialisation), read with weights_only=True."""
    state = load_checkpoint(path, f"AttnGAN {what} state dict")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    if not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise T2IError(f"{path}: not a plain state dict of tensors (expected AttnGAN's {what}*.pth)")
    return state


def import_attngan(text_path: str | Path, image_path: str | Path, store: Any, out: str | Path) -> DAMSM:
    """Convert AttnGAN's released `text_encoder*.pth` + `image_encoder*.pth` for `store` (checked by vocabulary
    size: prep with `--vocab captions.pickle` for AttnGAN's exact word order) and write a t2itool checkpoint."""
    text_state = _released_state(text_path, "text_encoder")
    image_state = _released_state(image_path, "image_encoder")
    if "encoder.weight" not in text_state or "rnn.weight_hh_l0" not in text_state:
        raise T2IError(f"{text_path}: no encoder.weight / rnn.weight_hh_l0 (expected AttnGAN's text_encoder*.pth)")
    missing = [key for key in PROJECTION_KEYS if key not in image_state]
    if missing:
        raise T2IError(f"{image_path}: no {missing[0]} (expected AttnGAN's image_encoder*.pth)")
    vocab_size, embedding_dim = text_state["encoder.weight"].shape
    gates, hidden_dim = text_state["rnn.weight_hh_l0"].shape
    rnn_type = {4: "lstm", 3: "gru"}.get(gates // hidden_dim)
    if rnn_type is None or "rnn.weight_hh_l0_reverse" not in text_state:
        raise T2IError(f"{text_path}: not a one-layer bidirectional LSTM/GRU text encoder")
    if vocab_size != len(store.vocab):
        raise T2IError(
            f"{text_path}: encoder vocabulary has {vocab_size} words, {store.path} has {len(store.vocab)}; "
            "re-run prep with --vocab captions.pickle (the captions.pickle released with these encoders)"
        )
    embedding_dim_image = image_state["emb_cnn_code.weight"].shape[0]
    if embedding_dim_image != 2 * hidden_dim:
        raise T2IError(f"{image_path}: projects to {embedding_dim_image}, the text encoder gives {2 * hidden_dim}")
    text_encoder = TextEncoder(int(vocab_size), int(embedding_dim), int(hidden_dim), rnn_type)
    image_encoder = ImageEncoder(int(embedding_dim_image))
    for encoder, state, where in ((text_encoder, text_state, text_path), (image_encoder, image_state, image_path)):
        try:
            result = encoder.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatch
            raise T2IError(f"{where}: {str(exc).splitlines()[-1].strip()}") from exc
        # Files saved before PyTorch 0.4.1 lack BatchNorm's num_batches_tracked; nothing else may be missing.
        missing = [key for key in result.missing_keys if not key.endswith("num_batches_tracked")]
        if missing or result.unexpected_keys:
            detail = f"missing {missing[0]}" if missing else f"unexpected {result.unexpected_keys[0]}"
            raise T2IError(f"{where}: key layout differs from AttnGAN's ({detail})")
    backbone = f"attngan:{Path(image_path).name}"
    save_damsm(
        out,
        text_encoder,
        image_encoder,
        store=store,
        backbone=backbone,
        source=f"import-damsm:{Path(text_path).name}",
        extra={"imported_from": {"text": sha256_file(text_path), "image": sha256_file(image_path)}},
    )
    return load_damsm(out, store=store)
