"""The one write path: umask-respecting modes, write failures as one line with nothing left behind, stale temporary
files of killed writers, and checkpoint loading of empty files."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
import torch

from t2itool import fileio
from t2itool.data.sources.shapes import build_shapes
from t2itool.errors import T2IError
from t2itool.fileio import (
    atomic_path,
    atomic_torch_save,
    atomic_write_text,
    load_checkpoint,
    remove_stale_temporaries,
    write_error_reason,
)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_modes_follow_the_umask(tmp_path, mask: int) -> None:
    previous = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "b.pt")
        build_shapes(tmp_path / "c.h5", num_images=4, image_size=16)
        with atomic_path(tmp_path / "d.png", suffix=".png") as tmp:
            tmp.write_bytes(b"png")
    finally:
        os.umask(previous)
    for name in ("a.txt", "b.pt", "c.h5", "d.png"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.pt", "c.h5", "d.png"]  # no temporaries
    assert torch.equal(load_checkpoint(tmp_path / "b.pt", "test")["w"], torch.zeros(2))


def _disk_full(monkeypatch, after_bytes: int = 0) -> None:
    """Every write through fileio's guarded files fails with ENOSPC once `after_bytes` were written."""
    real = os.pwrite
    written = [0]

    def pwrite(fd, data, offset):
        if written[0] >= after_bytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written[0] += len(data)
        return real(fd, data, offset)

    monkeypatch.setattr(fileio.os, "pwrite", pwrite)


def test_torch_save_on_a_full_disk(tmp_path, monkeypatch) -> None:
    _disk_full(monkeypatch, after_bytes=100)
    with pytest.raises(T2IError, match=r"^cannot write .*w\.pt: No space left on device$"):
        atomic_torch_save({"w": torch.zeros(1000)}, tmp_path / "w.pt")
    assert list(tmp_path.iterdir()) == []


def test_prep_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    build_shapes(tmp_path / "s.h5", num_images=4, image_size=16)
    before = (tmp_path / "s.h5").read_bytes()
    _disk_full(monkeypatch, after_bytes=20_000)
    with pytest.raises(T2IError, match=r"^cannot write .*s\.h5: No space left on device$"):
        build_shapes(tmp_path / "s.h5", num_images=64, image_size=32)
    assert [p.name for p in tmp_path.iterdir()] == ["s.h5"] and (tmp_path / "s.h5").read_bytes() == before


def test_write_error_reasons() -> None:
    assert write_error_reason(OSError(errno.ENOSPC, "x")) == "No space left on device"
    h5py_style = RuntimeError("Unable to flush raw data (file write failed: ..., errno = 27, error message = 'F')")
    assert write_error_reason(h5py_style) == "File too large"
    assert write_error_reason(RuntimeError("PytorchStreamWriter failed writing file data/0\nmore")) == (
        "PytorchStreamWriter failed writing file data/0"
    )


def test_stale_temporaries_only_of_dead_writers_of_this_machine(tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = fileio._host()
    names = {
        "dead": f".x.h5.{host}.{dead.pid}.abcd1234.tmp.h5",
        "alive": f".x.h5.{host}.{os.getppid()}.abcd1234.tmp.h5",
        "other-host": f".x.h5.otherhost.{dead.pid}.abcd1234.tmp.h5",
        "other-target": f".y.h5.{host}.{dead.pid}.abcd1234.tmp.h5",
        "not-ours": ".x.h5.something",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    removed = remove_stale_temporaries(tmp_path / "x.h5")
    assert [p.name for p in removed] == [names["dead"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v for k, v in names.items() if k != "dead")


def test_out_checks_and_empty_checkpoint(tmp_path) -> None:
    (tmp_path / "folder.h5").mkdir()
    with pytest.raises(T2IError, match="is a folder"):
        fileio.check_writable(tmp_path / "folder.h5")
    (tmp_path / "file").write_text("x")
    with pytest.raises(T2IError, match="cannot write"):
        fileio.check_writable(tmp_path / "file" / "out.h5")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(T2IError, match=r"empty\.pt: cannot be read as a snapshot \(\w+: .+\)"):
        load_checkpoint(tmp_path / "empty.pt", "snapshot")
