"""The one write path of every file the tool writes, and safe loading of checkpoints.

Nothing is ever half-written at its final path: a writer fills a temporary file in the destination folder (created
with mode 0666 minus the umask, like any new file), fsyncs it and renames it into place, so a crash, Ctrl-C or
SIGTERM leaves the old file or none. A write failure (disk full, file-size limit, read-only folder) becomes one
`T2IError` line, "cannot write X: <reason>", with the temporary file removed. Temporary files left by a killed run
are removed by the next writer of the same target.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from t2itool.errors import T2IError

_TEMP_TAG = ".tmp"  # temporary names: .{final}.{host}.{pid}.{random}.tmp{suffix}


def write_error_reason(exc: BaseException) -> str:
    """The short reason of a failed write ("No space left on device"), also from h5py's and torch's long messages."""
    code = getattr(exc, "errno", None)
    message = str(exc)
    if not isinstance(code, int) or not code:
        found = re.search(r"errno = (\d+)", message)
        code = int(found.group(1)) if found else None
    if isinstance(code, int) and code:
        return os.strerror(code)
    first = message.splitlines()[0].strip() if message.strip() else type(exc).__name__
    return first[:200]


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return True
    return True


def remove_stale_temporaries(final: Path) -> list[Path]:
    """Remove temporary files of `final` left by writers of this machine that no longer run (killed runs)."""
    removed = []
    prefix, host = f".{final.name}.", _host()
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or _TEMP_TAG not in name[len(prefix) :]:
            continue
        parts = name[len(prefix) :].split(".")
        # host may not contain dots (see _host); parts = [host, pid, random, "tmp" + suffix...]
        if len(parts) < 4 or parts[0] != host or not parts[1].isdigit() or not parts[3].startswith("tmp"):
            continue
        pid = int(parts[1])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):  # a staged folder (staged_folder)
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def check_writable(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Fail early (before long work) when `path` cannot be written: a folder, under a file, or no permission."""
    final = Path(path)
    if final.is_dir():
        raise T2IError(f"{flag} {final}: is a folder; give a file path inside it (e.g. {final / 'data.h5'})")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise T2IError(f"cannot write {final}: {write_error_reason(exc)}") from None
    with _temporary(final, ""):  # a real create/remove: also catches read-only file systems, even as root
        pass
    return final


@contextlib.contextmanager
def _temporary(final: Path, suffix: str) -> Iterator[Path]:
    """Create the temporary file beside `final` (mode from the umask) and remove it when the block fails or ends
    without the file having been renamed."""
    tmp = final.parent / f".{final.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}{_TEMP_TAG}{suffix}"
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise T2IError(f"cannot write {final}: {write_error_reason(exc)}") from None
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if not directory or exc.errno not in (errno_codes.EINVAL, errno_codes.ENOTSUP):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path` for the caller to write; on success it is fsynced and replaces `path`;
    on any exception it is removed, and an OSError (or a torch/h5py RuntimeError) becomes one T2IError line."""
    final = Path(path)
    if final.is_dir():
        raise T2IError(f"cannot write {final}: it is a folder")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise T2IError(f"cannot write {final}: {write_error_reason(exc)}") from None
    remove_stale_temporaries(final)
    with _temporary(final, suffix) as tmp:
        try:
            yield tmp
            _fsync(tmp)
            os.replace(tmp, final)
        except (OSError, RuntimeError) as exc:
            raise T2IError(f"cannot write {final}: {write_error_reason(exc)}") from None
    with contextlib.suppress(OSError):  # durability of the rename; not every file system supports it
        _fsync(final.parent, directory=True)


class GuardedFile:
    """A binary file for libraries that write through a file object (h5py's `fileobj` driver, `torch.save`).

    The first OSError of a write is recorded in `error` and that write and all later ones are discarded while
    reporting success, so the library never sees a failure it cannot recover from (HDF5 crashes at process exit after
    a failed flush: a disk-full `prep` used to end in a segmentation fault). Callers check `raise_error()` after each
    step; the file is garbage then and must be removed (atomic_path does).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        self._position = 0
        self.error: OSError | None = None

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self._position = offset
        elif whence == os.SEEK_CUR:
            self._position += offset
        else:
            self._position = os.fstat(self._fd).st_size + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, os.fstat(self._fd).st_size - self._position)
        data = os.pread(self._fd, size, self._position)
        self._position += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        view[len(data) :] = bytes(len(view) - len(data))  # past the end (or a discarded write): zeros
        self._position += len(view) - len(data)
        return len(view)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += os.pwrite(self._fd, view[done:], self._position + done)
            except OSError as exc:
                self.error = exc
        self._position += len(view)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        size = self._position if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as exc:
                self.error = exc
        return size

    def flush(self) -> None:
        return None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> GuardedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` through a temporary file. Only tensors, containers and plain values: no classes, no code."""
    with atomic_path(path) as tmp:
        with GuardedFile(tmp) as handle:
            torch.save(obj, handle)
        handle.raise_error()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON object as a line (a crash can lose at most the line being written)."""
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
    except OSError as exc:
        raise T2IError(f"cannot write {path}: {write_error_reason(exc)}") from None


class StagedFolder:
    """Files that must appear in a folder together: `path(name)` gives where to write `name` in the hidden staging
    folder; `write(name)` also turns a failed write into one line naming the final file."""

    def __init__(self, final: Path, staging: Path) -> None:
        self.final = final
        self.staging = staging

    def path(self, name: str) -> Path:
        target = self.staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    @contextlib.contextmanager
    def write(self, name: str) -> Iterator[Path]:
        try:
            yield self.path(name)
        except (OSError, RuntimeError) as exc:
            raise T2IError(f"cannot write {self.final / name}: {write_error_reason(exc)}") from None

    def _commit(self, last: str | None) -> None:
        files = sorted(p.relative_to(self.staging) for p in self.staging.rglob("*") if p.is_file())
        files.sort(key=lambda name: str(name) == last)  # `last` moves in last: its presence means the set is whole
        self.final.mkdir(parents=True, exist_ok=True)
        if last is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.final / last).unlink()  # the previous set's index: it stops describing the folder now
        for name in files:
            _fsync(self.staging / name)
            (self.final / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.staging / name, self.final / name)
        with contextlib.suppress(OSError):
            _fsync(self.final, directory=True)


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike, last: str | None = None) -> Iterator[StagedFolder]:
    """Write a set of files into `path` all or nothing: they are written to a hidden folder beside `path`
    (.NAME.HOST.PID.RANDOM.tmp) and moved in when the block succeeds, `last` (e.g. an index of the others) last; on
    any exception (a failed write, Ctrl-C, SIGTERM) the staging folder is removed and `path` is left as it was."""
    final = Path(path)
    if final.exists() and not final.is_dir():
        raise T2IError(f"cannot write {final}: it is a file, not a folder")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise T2IError(f"cannot write {final}: {write_error_reason(exc)}") from None
    remove_stale_temporaries(final)
    staging = final.parent / f".{final.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}{_TEMP_TAG}"
    try:
        os.mkdir(staging, 0o777)
    except OSError as exc:
        raise T2IError(f"cannot write {final}: {write_error_reason(exc)}") from None
    try:
        stage = StagedFolder(final, staging)
        yield stage
        try:
            stage._commit(last)
        except OSError as exc:
            raise T2IError(f"cannot write {final}: {write_error_reason(exc)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation of torch.load")


def _load_failure(exc: BaseException) -> str:
    """The informative part of torch.load's message (its weights-only text suggests weights_only=False: never)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_TORCH_BOILERPLATE)]
    text = useful[0] if useful else (lines[0] if lines else "empty or unreadable file")
    text = text.removeprefix("WeightsUnpickler error:").strip() or "unreadable"
    found = re.search(r"GLOBAL (\S+)", text)
    if found:
        return f"it holds a pickled call of {found.group(1)}, refused and not run: only tensors and plain values load"
    return f"{type(exc).__name__}: {text[:200]}"


def load_checkpoint(path: str | os.PathLike, kind: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a t2itool checkpoint with `weights_only=True`; `kind` names what the caller expected, for the error."""
    path = Path(path)
    if not path.is_file():
        raise T2IError(f"{path}: no such file (expected a {kind})")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise T2IError(f"{path}: cannot be read as a {kind} ({_load_failure(exc)})") from exc
    if not isinstance(obj, dict):
        raise T2IError(f"{path}: not a {kind} (found {type(obj).__name__}, expected a dict)")
    return obj


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
