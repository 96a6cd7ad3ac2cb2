"""Reading released checkpoints of the official codes: `torch.load(weights_only=True)` only (a file that needs to
run code or build classes is refused, never unpickled), the containers they come in (DF-GAN's state files, bare
state dicts) and the `module.` prefix of networks saved from nn.DataParallel / DistributedDataParallel.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from t2itool.errors import T2IError

WRAPPER_PREFIX = "module"  # the attribute under which DataParallel and DDP keep the wrapped network


def read_official(path: str | Path) -> Any:
    """The object in an official checkpoint (zip or pre-1.6 serialisation), loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise T2IError(f"{path}: no such file (expected an official checkpoint)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+) was not an allowed global", str(exc))
        if found:  # the pickle names a class or function: code it would run or build
            raise T2IError(
                f"{path}: refused: it holds more than tensors and plain containers (it references "
                f"{found.group(1)}); only weights are read (torch.load weights_only=True), never code"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(exc))
        reason = detail.group(1).strip() if detail else str(exc).splitlines()[0][:200]
        raise T2IError(f"{path}: cannot be read as a torch checkpoint ({reason})") from None
    except Exception as exc:  # torch raises several types for truncated or foreign files
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else "empty or unreadable file"
        raise T2IError(f"{path}: cannot be read as a torch checkpoint ({type(exc).__name__}: {message})") from None


def is_state_dict(obj: Any) -> bool:
    """A non-empty mapping of string names to tensors."""
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def container_networks(obj: Any) -> dict[str, Any] | None:
    """The networks of a DF-GAN-style state file ({"model": {"netG": ..., ...}, ...}), or None for other layouts."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) and not is_state_dict(obj):
        return dict(obj["model"])
    return None


def strip_wrapper(state: Mapping[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Drop the `module.` level that DataParallel / DDP put in front of every name (repeatedly, for a DDP inside a
    DataParallel). The first name component is compared whole; a file where only some names carry it is refused."""
    names = list(state)
    while names and all(name.split(".", 1)[0] == WRAPPER_PREFIX and "." in name for name in names):
        state = {name.split(".", 1)[1]: value for name, value in state.items()}
        names = list(state)
    wrapped = [name for name in names if name.split(".", 1)[0] == WRAPPER_PREFIX]
    if wrapped:
        raise T2IError(f"{where}: {wrapped[0]} carries a '{WRAPPER_PREFIX}.' prefix that other names lack")
    return dict(state)


def network_state(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """A checked state dict (names -> tensors) with the wrapper prefix removed."""
    if not isinstance(obj, Mapping) or not obj:
        raise T2IError(f"{where}: not a state dict (found {type(obj).__name__})")
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise T2IError(f"{where}: entry {name!r} is a {type(value).__name__}, not a tensor (expected a state dict)")
    return strip_wrapper(obj, where)
