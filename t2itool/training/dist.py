"""A tiny distributed helper: join a torchrun group or start local processes, rank queries, rank-0 printing.

One process: everything is a no-op. `--gpus 0,1` / `--nproc 2`: `launch` spawns one process per GPU (NCCL) or per CPU
slot (gloo). Under torchrun (RANK and WORLD_SIZE set) nothing is spawned: `init_from_env` joins the existing group.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from t2itool.errors import T2IError


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_from_env(backend: str) -> None:
    """Join the process group described by RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (single process: no-op)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return get_rank() == 0


_log_file: list[Path | None] = [None]  # rank 0's RUN/log.txt while a training loop runs


def set_log_file(path: str | Path | None) -> None:
    """Mirror `print0` lines into `path` (RUN/log.txt) from now on; None stops mirroring."""
    _log_file[0] = None if path is None else Path(path)


def print0(*args: Any, **kwargs: Any) -> None:
    """Print on rank 0 (stderr), and append the line to the run's log.txt when one is set."""
    if is_main():
        print(*args, **kwargs, file=sys.stderr, flush=True)
        if _log_file[0] is not None:
            with open(_log_file[0], "a", encoding="utf-8") as log:
                print(*args, sep=kwargs.get("sep", " "), file=log)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if `flag` is true on any rank (used to agree on stopping)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def cleanup() -> None:
    set_log_file(None)
    if dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def select_gpus(gpus: list[int]) -> None:
    """Restrict CUDA to `gpus` (before any CUDA call in the workers) and fail clearly without CUDA."""
    if not torch.cuda.is_available():
        raise T2IError(
            f"--gpus {','.join(map(str, gpus))}: CUDA is not available on this machine; "
            "use --device cpu, or --nproc N for N CPU processes"
        )
    if max(gpus) >= torch.cuda.device_count():
        raise T2IError(f"--gpus {','.join(map(str, gpus))}: only {torch.cuda.device_count()} GPU(s) visible")
    if len(gpus) > 1:  # spawned workers start fresh interpreters: this applies before their first CUDA call
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)


def _spawn_entry(local_rank: int, world_size: int, port: int, fn: Callable, args: tuple, queue: Any) -> None:
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    if "OMP_NUM_THREADS" not in os.environ:
        # The workers share the machine's cores: each takes its share instead of torch's default of all of them
        # (torchrun sets OMP_NUM_THREADS=1 for the same reason); an explicit OMP_NUM_THREADS is left alone.
        torch.set_num_threads(max(1, torch.get_num_threads() // world_size))
    try:
        result = fn(*args)
    except T2IError as exc:
        queue.put((local_rank, "error", str(exc)))
        return
    except BaseException as exc:
        queue.put((local_rank, "crash", f"{type(exc).__name__}: {exc}"))
        raise
    queue.put((local_rank, "ok", result))


def launch(fn: Callable[..., Any], args: tuple, nproc: int) -> Any:
    """Run `fn(*args)` in `nproc` fresh processes (spawn) forming one group; return rank 0's result.

    `fn` must be importable (top level of a module). A T2IError in any worker is re-raised here.
    """
    import signal

    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    # Ctrl-C reaches the workers too (same process group); they agree on stopping and save a state themselves,
    # so the launcher waits for them instead of tearing them down.
    previous = signal.signal(signal.SIGINT, lambda *_: None)
    workers = mp.start_processes(
        _spawn_entry, args=(nproc, free_port(), fn, args, queue), nprocs=nproc, join=False, start_method="spawn"
    )

    def forward_term(*_: Any) -> None:  # `kill LAUNCHER`: the workers save a state and stop, as for Ctrl-C
        for process in workers.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    previous_term = signal.signal(signal.SIGTERM, forward_term)
    try:
        while not workers.join():
            pass
    except mp.ProcessRaisedException as exc:
        messages = _drain(queue)
        errors = [m for _, status, m in messages if status == "error"]
        if errors:
            raise T2IError(errors[0]) from None
        raise RuntimeError(f"a training process failed: {str(exc).strip().splitlines()[-1]}") from exc
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
    messages = _drain(queue)
    errors = [m for _, status, m in messages if status == "error"]
    if errors:
        raise T2IError(errors[0])
    results = {rank: m for rank, status, m in messages if status == "ok"}
    if 0 not in results:
        raise RuntimeError("rank 0 returned no result")
    return results[0]


def _drain(queue: Any) -> list[tuple[int, str, Any]]:
    items = []
    while not queue.empty():
        items.append(queue.get())
    return items
