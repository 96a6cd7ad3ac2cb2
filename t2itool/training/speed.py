"""The training step's speed settings, shared by the loop and `benchmarks/bench_step.py`: the optimizer
implementation (foreach / fused Adam), channels-last and `torch.compile`, each on by default only where it was
measured faster (see the README's step benchmark).
"""

from __future__ import annotations

import dataclasses
import logging
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

    A network that cannot be compiled (no C++ compiler for the CPU backend, an unsupported operation found at its
    first call) stays eager, with one warning line instead of torch's traceback.
    """
    import torch._dynamo

    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception as exc:  # noqa: BLE001 - inductor's CPU code needs a working C++ compiler
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            warnings.warn(f"--compile: networks stay eager (no C++ compiler: {message})", stacklevel=2)
            return nets
    torch._dynamo.config.suppress_errors = True  # a graph that fails to compile at its first call runs eager
    _one_line_compile_failures()
    for name in names:
        if name not in nets:
            continue
        try:
            nets[name].compile(dynamic=False)
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to eager
            warnings.warn(f"--compile: {name} stays eager ({type(exc).__name__}: {exc})", stacklevel=2)
    return nets


class _OneLineCompileFailure(logging.Filter):
    """Turns dynamo's logged traceback of a graph that failed to compile (and runs eager) into one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        lines = [line.strip() for line in record.getMessage().splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line.split(":")[0] or "Exception" in line.split(":")[0]]
        reason = errors[-1] if errors else (lines[0] if lines else "unknown error")
        warnings.warn(f"--compile: a compiled network runs eager ({reason})", stacklevel=2)
        return False


def _one_line_compile_failures() -> None:
    logger = logging.getLogger("torch._dynamo.convert_frame")
    if not any(isinstance(f, _OneLineCompileFailure) for f in logger.filters):
        logger.addFilter(_OneLineCompileFailure())


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


# A CPU run compiles its generator when it is at least this long: compiling takes 40-70 s on one core (measured for
# dfgan and dfgan-ssacn at 64 px with an empty inductor cache) and saves 3-7% of a ~2 s step, so it pays for itself
# after several hundred steps; short runs (tests, the demo) stay eager.
COMPILE_MIN_STEPS_CPU = 2000


def default_settings(
    device: torch.device,
    amp: str = "none",
    channels_last: bool | None = None,
    compile: bool | None = None,
    steps: int | None = None,
) -> StepSettings:
    """The loop's settings: the flags given, else the defaults measured faster on `device` (benchmarks/bench_step.py).

    Channels-last is on by default; which networks take it is `channels_last_names` (on CPU those without batch
    norm). `torch.compile` (of the generator) is on for CUDA, and on CPU for runs of `steps` >= COMPILE_MIN_STEPS_CPU
    (`steps` None: a long run). Precision stays the user's choice (`--amp`).
    """
    long_run = steps is None or steps >= COMPILE_MIN_STEPS_CPU
    return StepSettings(
        amp=amp,
        channels_last=True if channels_last is None else channels_last,
        compile=(device.type == "cuda" or long_run) if compile is None else compile,
    )


def channels_last_names(nets: dict[str, nn.Module], device: torch.device) -> set[str]:
    """The networks that gain from channels-last on `device`: all on CUDA; on CPU those without batch norm, whose
    channels-last backward is several times slower there than the contiguous one (measured: SSA-GAN's generator
    loses more in batch norm than it gains in convolutions), and whose batch statistics would then be summed in an
    order that depends on the batch size (N processes would no longer train like one)."""
    if device.type != "cpu":
        return set(nets)
    return {
        name
        for name, net in nets.items()
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    }


def to_channels_last(
    nets: dict[str, nn.Module], device: torch.device, frozen: tuple[nn.Module | None, ...] = ()
) -> tuple[dict[str, nn.Module], bool]:
    """Convert the networks `channels_last_names` chooses and the `frozen` encoders (eval mode: their batch norm uses
    running statistics, so channels-last costs it nothing; a contiguous image is reordered once at the first
    convolution, measured 3% faster for dfgan-ssacn's DAMSM term on CPU than a contiguous encoder).
    Returns the networks and whether the batch images should be channels-last: only when some network is, else
    contiguous networks would run channels-last convolutions on them."""
    chosen = channels_last_names(nets, device)
    nets = {n: net.to(memory_format=torch.channels_last) if n in chosen else net for n, net in nets.items()}
    for module in frozen:
        if module is not None:
            module.to(memory_format=torch.channels_last)
    return nets, bool(chosen)


def prepare_step(
    nets: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    recipe: object,
    device: torch.device,
    settings: StepSettings,
    frozen: tuple[nn.Module | None, ...] = (),
) -> tuple[dict[str, nn.Module], bool]:
    """Apply `settings` to networks already on `device`, their optimizers and the `frozen` encoders the step runs
    images through, before the first step. Returns the networks and whether batch images go channels-last."""
    images_channels_last = False
    if settings.channels_last:
        nets, images_channels_last = to_channels_last(nets, device, frozen)
    if settings.foreach:
        tune_optimizers(optimizers, device)
    if settings.compile:
        nets = compile_networks(nets, COMPILED, device)
    return nets, images_channels_last
