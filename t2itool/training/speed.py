"""The training step's speed settings, shared by the loop and `benchmarks/bench_step.py`: the optimizer
implementation (foreach / fused Adam), channels-last and `torch.compile`, each on by default only where it was
measured faster (see the README's step benchmark).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import torch
from torch import nn

# Only the generator: the discriminator's MA-GP needs a double backward, which compiled graphs do not support.
COMPILED = ("generator",)


def tune_optimizers(optimizers: dict[str, torch.optim.Optimizer], device: torch.device) -> None:
    """Switch every Adam/AdamW to its multi-tensor (foreach) implementation before the first step.

    The per-parameter loop of the default CPU implementation costs one small kernel per tensor and operation; foreach
    does the same arithmetic on all of a group's tensors at once. The update is the same up to float rounding.
    """
    for optimizer in optimizers.values():
        if not isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
            continue
        for group in optimizer.param_groups:
            if group.get("fused") or group.get("differentiable"):
                continue
            group["foreach"] = True
        optimizer.defaults["foreach"] = True


def compile_networks(nets: dict[str, nn.Module], names: tuple[str, ...], device: torch.device) -> dict[str, nn.Module]:
    """`torch.compile` the networks in `names` (in place, `module.compile()`: state-dict names are unchanged).

    A network that cannot be compiled (no compiler, an unsupported backend) stays eager, with one warning line.
    """
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # a graph that fails to compile at its first call runs eager
    for name in names:
        if name not in nets:
            continue
        try:
            nets[name].compile(dynamic=False)
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to eager
            warnings.warn(f"--compile: {name} stays eager ({type(exc).__name__}: {exc})", stacklevel=2)
    return nets


@dataclass
class StepSettings:
    """How the loop runs a step: precision, memory format, compiled networks, optimizer implementation."""

    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    foreach: bool = True

    def with_options(self, options: str) -> StepSettings:
        """A copy with '+'-joined options applied: channels-last, contiguous, compile, eager, bf16, fp32, loop-adam."""
        changes = {
            "channels-last": ("channels_last", True), "contiguous": ("channels_last", False),
            "compile": ("compile", True), "eager": ("compile", False), "bf16": ("amp", "bf16"),
            "fp32": ("amp", "none"), "loop-adam": ("foreach", False),
        }  # fmt: skip
        values = dataclasses.asdict(self)
        for option in options.split("+"):
            if option not in changes:
                raise ValueError(f"unknown step option {option!r}; expected one of {', '.join(changes)}")
            key, value = changes[option]
            values[key] = value
        return StepSettings(**values)

    def describe(self) -> str:
        parts = [self.amp if self.amp != "none" else "fp32"]
        parts += ["channels-last"] * self.channels_last + ["compile"] * self.compile + ["foreach Adam"] * self.foreach
        return ", ".join(parts)


def default_settings(
    device: torch.device, amp: str = "none", channels_last: bool | None = None, compile: bool | None = None
) -> StepSettings:
    """The loop's settings: the flags given, else the defaults measured faster on `device` (benchmarks/bench_step.py).

    Channels-last is on for CUDA; on CPU it is opt-in (`--channels-last`): its oneDNN convolutions round differently
    at different batch sizes, and Adam turns those last-bit differences into lr-sized steps, so 2 processes with half
    the batch no longer equal 1 process (tests/test_models_registry.py failed for sdgan). `torch.compile` is on for
    CUDA only: on CPU it gained ~3% at a minute's compile time. Precision stays the user's choice (`--amp`).
    """
    return StepSettings(
        amp=amp,
        channels_last=device.type == "cuda" if channels_last is None else channels_last,
        compile=device.type == "cuda" if compile is None else compile,
    )


def channels_last_names(nets: dict[str, nn.Module], device: torch.device) -> set[str]:
    """The networks that gain from channels-last on `device`: all on CUDA; on CPU those without batch norm, whose
    channels-last backward is several times slower there than the contiguous one (measured: SSA-GAN's generator
    loses more in batch norm than it gains in convolutions)."""
    if device.type != "cpu":
        return set(nets)
    return {
        name
        for name, net in nets.items()
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    }


def prepare_step(
    nets: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    recipe: object,
    device: torch.device,
    settings: StepSettings,
    frozen: tuple[nn.Module | None, ...] = (),
) -> dict[str, nn.Module]:
    """Apply `settings` to networks already on `device`, their optimizers and the `frozen` encoders the step runs
    images through (the DAMSM image encoder: a channels-last image into a contiguous encoder is reordered at every
    convolution), before the first step."""
    if settings.channels_last:
        chosen = channels_last_names(nets, device)
        nets = {n: net.to(memory_format=torch.channels_last) if n in chosen else net for n, net in nets.items()}
        for module in frozen:
            if module is not None and "generator" in chosen:
                module.to(memory_format=torch.channels_last)
    if settings.foreach:
        tune_optimizers(optimizers, device)
    if settings.compile:
        nets = compile_networks(nets, COMPILED, device)
    return nets
