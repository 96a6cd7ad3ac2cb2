"""Shared assertions of the engine tests: two training runs (e.g. 1 process vs 2) made the same updates."""

from __future__ import annotations

import torch


def assert_same_updates(a: dict, b: dict, lr: float) -> None:
    """The networks of resume states `a` and `b` agree, up to what float order can change in a few Adam steps.

    Adam's first updates are ~lr * sign(grad) whatever the gradient's size, so a weight whose gradient is rounding
    noise (a conv bias right before batch norm, whose true gradient is 0) can move by ~lr per update in either
    direction; a systematic difference (noise, pairing, sharding, batch statistics) moves most weights by ~lr. So: at
    most 2% of the weights may differ by more than lr / 4.
    """
    for net in a["nets"]:
        floats = [k for k, v in a["nets"][net].items() if v.is_floating_point() and "running" not in k]
        diffs = torch.cat([(a["nets"][net][k].float() - b["nets"][net][k].float()).abs().flatten() for k in floats])
        moved = (diffs > 0.25 * lr).float().mean().item()
        assert moved <= 0.02, (net, f"{moved:.1%} of the weights differ by more than lr/4")
