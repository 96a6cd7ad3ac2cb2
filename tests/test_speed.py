"""The step's speed settings (training/speed.py): defaults per device, foreach Adam with the same update, compile
fallback (the CUDA path itself: tests/test_train_loop.py)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from t2itool.training import speed


def test_defaults_per_device() -> None:
    cpu = speed.default_settings(torch.device("cpu"))
    assert (cpu.amp, cpu.channels_last, cpu.compile, cpu.foreach) == ("none", False, False, True)
    cuda = speed.default_settings(torch.device("cuda"))
    assert cuda.channels_last and cuda.compile
    assert speed.default_settings(torch.device("cuda"), "bf16", False, False).describe() == "bf16, foreach Adam"
    assert (
        speed.default_settings(torch.device("cpu")).with_options("bf16+contiguous").describe() == "bf16, foreach Adam"
    )
    with pytest.raises(ValueError, match="unknown step option 'turbo'"):
        cpu.with_options("turbo")


def test_foreach_adam_makes_the_same_update() -> None:
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    optimizers = {f"n{i}": torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.0, 0.9)) for i, net in enumerate(nets)}
    speed.tune_optimizers({"n1": optimizers["n1"]}, torch.device("cpu"))
    assert optimizers["n1"].param_groups[0]["foreach"] is True
    x = torch.randn(16, 4)
    for _ in range(5):
        for i, net in enumerate(nets):
            optimizers[f"n{i}"].zero_grad()
            net(x).square().mean().backward()
            optimizers[f"n{i}"].step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_compile_failure_leaves_the_network_eager(monkeypatch) -> None:
    net = nn.Linear(2, 2)

    def broken(**_: object) -> None:
        raise RuntimeError("no compiler")

    monkeypatch.setattr(net, "compile", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nets = speed.compile_networks({"generator": net}, ("generator",), torch.device("cpu"))
    assert nets["generator"] is net and net(torch.ones(1, 2)).shape == (1, 2)
    assert [str(w.message) for w in caught] == ["--compile: generator stays eager (RuntimeError: no compiler)"]
