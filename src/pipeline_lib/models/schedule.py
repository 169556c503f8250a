"""Learning-rate schedules of the trainer: constant or cosine, with an optional linear warm-up.

The factor depends on the global step only, so it needs no state of its own: a
resumed run recomputes it from the step it resumes at. Every optimiser of the
model is scaled by the same factor, relative to the learning rate it was created
with (kept in each parameter group as ``initial_lr``, as torch's schedulers do).

* constant: 1.
* cosine: 0.5 (1 + cos(pi s / S)) over the step budget S (Loshchilov and Hutter, SGDR, without restarts),
  reaching 0 at the last step.
* warm-up: the factor ramps linearly from 1/W at step 1 to 1 at step W (Goyal et al. 2017), then
  follows the schedule (the cosine counts its steps from the end of the warm-up).
"""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, schedule: str, warmup_steps: int = 0, total_steps: int | None = None) -> float:
    """Multiplier of the initial learning rate for the update of (1-based) ``step``."""
    if warmup_steps and step <= warmup_steps:
        return step / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        if not total_steps:
            raise ValueError("the cosine schedule needs the total number of steps")
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        return 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown learning-rate schedule '{schedule}'")


def remember_initial_lr(optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Record every parameter group's learning rate as the one the schedule scales."""
    for opt in optimizers.values():
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])


def set_lr_factor(optimizers: dict[str, torch.optim.Optimizer], factor: float) -> None:
    for opt in optimizers.values():
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * factor
