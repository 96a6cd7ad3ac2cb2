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
    assert (cpu.amp, cpu.channels_last, cpu.compile, cpu.foreach) == ("none", True, True, True)
    short = speed.default_settings(torch.device("cpu"), steps=speed.COMPILE_MIN_STEPS_CPU - 1)
    assert short.channels_last and not short.compile  # a short CPU run would spend longer compiling than it saves
    assert speed.default_settings(torch.device("cpu"), steps=speed.COMPILE_MIN_STEPS_CPU).compile
    assert speed.default_settings(torch.device("cuda"), steps=10).compile
    cuda = speed.default_settings(torch.device("cuda"))
    assert cuda.channels_last and cuda.compile
    assert speed.default_settings(torch.device("cuda"), "bf16", False, False).describe() == "bf16, foreach Adam"
    assert (
        speed.default_settings(torch.device("cpu")).with_options("bf16+contiguous+eager").describe()
        == "bf16, foreach Adam"
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


def test_channels_last_only_where_a_network_takes_it() -> None:
    """On CPU, networks with batch norm stay contiguous, and the batch images go channels-last only when some network
    does (contiguous networks fed channels-last images would run channels-last convolutions)."""
    cpu = torch.device("cpu")
    plain = nn.Sequential(nn.Conv2d(3, 4, 3))
    normed = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    encoder = nn.Conv2d(3, 2, 3)
    nets, images = speed.to_channels_last({"generator": normed, "discriminator": plain}, cpu, (encoder,))
    assert images
    assert nets["discriminator"][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not nets["generator"][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert encoder.weight.is_contiguous(memory_format=torch.channels_last)  # frozen, eval mode: always
    normed2 = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    nets, images = speed.to_channels_last({"generator": normed2}, cpu)
    assert not images and not nets["generator"][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_no_cpp_compiler_leaves_the_networks_eager_with_one_line() -> None:
    """On CPU inductor needs a C++ compiler: without one, --compile warns once and the networks run eager."""
    import torch._inductor.config as inductor_config

    net = nn.Linear(2, 2)
    # inductor's own patch restores the setting (monkeypatch's undo deleted it, breaking later compiles)
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",)}), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        speed.compile_networks({"generator": net}, ("generator",), torch.device("cpu"))
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert str(caught[0].message).startswith("--compile: networks stay eager (no C++ compiler: ")
    assert net._compiled_call_impl is None and net(torch.ones(1, 2)).shape == (1, 2)


def test_a_graph_that_fails_at_its_first_call_is_reported_in_one_line() -> None:
    """Dynamo logs a multi-line traceback when a graph fails to compile and runs eager; the loop shows one line."""
    import logging

    speed._one_line_compile_failures()
    speed._one_line_compile_failures()  # idempotent: still one filter
    logger = logging.getLogger("torch._dynamo.convert_frame")
    (one_line,) = [f for f in logger.filters if isinstance(f, speed._OneLineCompileFailure)]
    traceback = "Traceback (most recent call last):\n  File 'x.py', line 1\nInductorError: LoweringException: boom\n\n"
    traceback += "Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace"
    record = logger.makeRecord(logger.name, logging.WARNING, "x.py", 1, traceback, None, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert one_line.filter(record) is False  # the traceback itself is not printed
    assert [str(w.message) for w in caught] == [
        "--compile: a compiled network runs eager (InductorError: LoweringException: boom)"
    ]
