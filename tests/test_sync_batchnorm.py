"""Global batch norm and global gathers: two gloo processes with half the batch each compute what one process computes
with the whole batch (outputs, running statistics, gradients), and the conversion keeps state-dict keys. Spawned
workers split the cores between them."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from t2itool.training import dist
from t2itool.training.sync_batchnorm import GlobalBatchNorm, convert


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 5 * 5, 6), nn.BatchNorm1d(6))  # fmt: skip
    with torch.no_grad():  # non-trivial affine parameters
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model


def _inputs() -> torch.Tensor:
    return torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(1)) * 3 + 1


def _one_process() -> dict[str, torch.Tensor]:
    model = _model().train()
    x = _inputs().requires_grad_(True)
    out = model(x)
    # Rows weighted differently, so the gradients through the batch statistics matter.
    (out.square().mean(1) * torch.linspace(0.5, 2.0, 8)).mean().backward()
    return {"out": out.detach(), "grad_x": x.grad, "grad_w": model[1].weight.grad, "grad_fc": model[4].weight.grad,
            "running_mean": model[1].running_mean, "running_var": model[5].running_var}  # fmt: skip


def test_conversion_keeps_keys_and_is_plain_batch_norm_in_one_process() -> None:
    model = _model()
    converted = convert(_model())
    assert sum(isinstance(m, GlobalBatchNorm) for m in converted.modules()) == 2
    assert list(converted.state_dict()) == list(model.state_dict())
    x = _inputs()
    torch.testing.assert_close(converted.train()(x), model.train()(x), rtol=0, atol=0)
    torch.testing.assert_close(converted[1].running_var, model[1].running_var, rtol=0, atol=0)


@pytest.mark.slow
def test_two_processes_normalise_over_the_global_batch() -> None:
    one = _one_process()
    rank0 = {key: torch.from_numpy(value) for key, value in dist.launch(_gather_worker, (), 2).items()}
    out = torch.cat([rank0["out0"], rank0["out1"]])
    torch.testing.assert_close(out, one["out"], rtol=1e-5, atol=1e-5)
    grad_x = torch.cat([rank0["grad_x0"], rank0["grad_x1"]])
    # One process: d(mean over 8 rows)/dx; two: each process's mean over its 4 rows, averaged -> the same.
    torch.testing.assert_close(grad_x, one["grad_x"], rtol=1e-4, atol=1e-6)
    for key in ("grad_w", "grad_fc", "running_mean", "running_var"):
        torch.testing.assert_close(rank0[key], one[key], rtol=1e-4, atol=1e-6)


def _gather_worker() -> dict[str, torch.Tensor]:
    """Run `_worker` and hand rank 0 every rank's rows (so the test sees the whole batch)."""
    result = _worker_keep_group()
    outs = [torch.empty_like(result["out"]) for _ in range(2)]
    grads = [torch.empty_like(result["grad_x"]) for _ in range(2)]
    torch.distributed.all_gather(outs, result["out"])
    torch.distributed.all_gather(grads, result["grad_x"])
    dist.cleanup()
    values = {**result, "out0": outs[0], "out1": outs[1], "grad_x0": grads[0], "grad_x1": grads[1]}
    return {key: value.numpy() for key, value in values.items()}  # plain arrays cross the process boundary


def _worker_keep_group() -> dict[str, torch.Tensor]:
    dist.init_from_env("gloo")
    rank = dist.get_rank()
    model = convert(_model()).train()
    x = _inputs()[4 * rank : 4 * rank + 4].clone().requires_grad_(True)
    out = model(x)
    weights = torch.linspace(0.5, 2.0, 8)[4 * rank : 4 * rank + 4]
    (out.square().mean(1) * weights).mean().backward()
    grads = {"grad_w": model[1].weight.grad.clone(), "grad_fc": model[4].weight.grad.clone()}
    for grad in grads.values():  # the loop's gradient average
        torch.distributed.all_reduce(grad)
        grad /= 2
    return {"out": out.detach(), "grad_x": x.grad / 2, **grads,
            "running_mean": model[1].running_mean.clone(), "running_var": model[5].running_var.clone()}  # fmt: skip


def _threads_worker() -> int:
    return torch.get_num_threads()


@pytest.mark.slow
def test_spawned_workers_share_the_cores_unless_omp_num_threads_is_set(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    probe = [sys.executable, "-c", "import torch; print(torch.get_num_threads())"]
    default = int(subprocess.run(probe, capture_output=True, text=True, check=True).stdout)
    assert dist.launch(_threads_worker, (), 2) == max(1, default // 2)
    monkeypatch.setenv("OMP_NUM_THREADS", str(default))  # asked for explicitly: each worker keeps all of them
    assert dist.launch(_threads_worker, (), 2) == default
