"""Reading the field's legacy Python-2 pickles without running them: restricted unpicklers for plain containers
(AttnGAN's captions.pickle, filenames.pickle, class_info.pickle) and for numeric numpy arrays (StackGAN's
char-CNN-RNN-embeddings.pickle). A global the format does not need is refused before anything is built.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from t2itool.errors import T2IError

MAX_DEPTH = 32  # the legacy pickles nest 3-4 levels; deeper input is refused instead of recursing without bound
_LOAD_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError)
_NUMPY_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array rebuild function, wherever this numpy keeps it


class _PlainUnpickler(pickle.Unpickler):
    """Refuses every global: only the built-in containers and scalars pickle opcodes create directly can load."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def _safe_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("object arrays are not allowed")
    return dtype


def _safe_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray or not isinstance(dtype, (bytes, str, np.dtype)):
        raise pickle.UnpicklingError("only plain numpy arrays are allowed")
    return _NUMPY_RECONSTRUCT(np.ndarray, shape, _safe_dtype(dtype))


class _ArrayUnpickler(_PlainUnpickler):
    """Allows exactly what a pickled numeric ndarray needs (Python 2 and 3 module names); nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed (only numpy arrays)")


def _load(path: Path, unpickler: type[pickle.Unpickler], what: str) -> Any:
    if not path.is_file():
        raise T2IError(f"{path}: no such file (expected {what})")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise T2IError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        # latin1: the Python-2 str objects inside these pickles are bytes; numpy needs them undecoded (AttnGAN#15).
        return unpickler(io.BytesIO(data), encoding="latin1").load()
    except RecursionError:
        raise T2IError(f"{path}: nested too deeply to be {what}") from None
    except _LOAD_ERRORS as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise T2IError(f"{path}: not {what} ({message})") from None


def _plain(value: object, where: str, depth: int = 0) -> object:
    """Check that a loaded value is only list/tuple/dict/str/int, nested at most MAX_DEPTH deep; bytes become str."""
    if depth > MAX_DEPTH:
        raise T2IError(f"{where}: nested deeper than {MAX_DEPTH} levels; not a caption/key pickle")
    if isinstance(value, bytes):
        return value.decode("latin1")
    if isinstance(value, bool) or value is None:
        raise T2IError(f"{where}: unexpected {type(value).__name__} in pickle")
    if isinstance(value, (str, int)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item, where, depth + 1) for item in value]
    if isinstance(value, dict):
        return {_plain(key, where, depth + 1): _plain(item, where, depth + 1) for key, item in value.items()}
    raise T2IError(f"{where}: unexpected {type(value).__name__} in pickle (only lists, dicts, str and int)")


def load_plain_pickle(path: str | os.PathLike) -> object:
    """Load a (Python-2, protocol 2) pickle holding only lists, dicts, str, int; anything else is refused."""
    path = Path(path)
    value = _load(path, _PlainUnpickler, "a plain pickle of lists/dicts/str/int")
    try:
        return _plain(value, str(path))
    except RecursionError:
        raise T2IError(f"{path}: nested too deeply; not a caption/key pickle") from None


def load_array_pickle(path: str | os.PathLike, what: str = "a pickled numeric array") -> np.ndarray:
    """Load a pickled numeric ndarray, or a list of equally shaped ones (stacked), e.g. StackGAN's embeddings."""
    path = Path(path)
    value = _load(path, _ArrayUnpickler, what)
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(item, np.ndarray) for item in value):
            raise T2IError(f"{path}: expected {what} (found a list that is not a list of arrays)")
        if len({item.shape for item in value}) != 1:
            raise T2IError(f"{path}: the arrays in the list differ in shape; expected {what}")
        value = np.stack(value)
    if not isinstance(value, np.ndarray):
        raise T2IError(f"{path}: expected {what} (found {type(value).__name__})")
    if value.dtype.kind not in "fiu":
        raise T2IError(f"{path}: expected {what} (found dtype {value.dtype})")
    return value
