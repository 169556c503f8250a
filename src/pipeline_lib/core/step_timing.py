"""A training run's measured speed, kept beside its checkpoints so the next attempt's time limit
comes from the work that is left (``core/resources.train_time_limit``).

The trainer writes ``results/checkpoints/{model}/seed{seed}/step_timing.json`` with each checkpoint
(atomically): seconds per optimisation step, steps done, target steps, the device, the checkpoint
folder (fingerprint) it belongs to and a key of the run's settings. The workflow reads it while it
builds the DAG, once per train job: this module imports neither numpy nor torch.

Seconds per step are measured between points where the host has waited for the device (the rows
of the losses table: reading a loss back synchronises), over the attempt's steps after its warm-up
(first steps: kernel selection, the data loader's start, caches), so they include validation,
snapshots and checkpoint saving, everything the remaining steps will also pay for. A step time
taken between two host-side clock reads would be the launch time on a GPU, not the step's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

FILE_NAME = "step_timing.json"
#: The trainer's checkpoint file inside a run's fingerprint folder: a measurement's steps done count
#: only while it exists (the next attempt resumes from it).
CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = "pipeline_lib-step-timing/1"
#: Steps of every attempt left out of its measurement (start-up of kernels, loader and caches).
WARMUP_STEPS = 10
#: Budget keys that change neither the result nor the checkpoint (time only).
TIME_ONLY_BUDGET_KEYS = ("minutes", "seconds_per_step")


def settings_key(result_block: Mapping[str, Any]) -> str:
    """Short hash of a run's result settings (seed included), the budget's time-only keys left out:
    a measurement counts only for a run with the same settings (a larger network is slower)."""
    block = dict(result_block)
    if isinstance(block.get("budget"), Mapping):
        block["budget"] = {k: v for k, v in block["budget"].items() if k not in TIME_ONLY_BUDGET_KEYS}
    return hashlib.sha256(json.dumps(block, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StepTiming:
    seconds_per_step: float
    steps_done: int
    target_steps: int
    device: str
    fingerprint: str
    settings: str
    measured_steps: int  # steps the speed was measured over

    @property
    def steps_left(self) -> int:
        return max(self.target_steps - self.steps_done, 0)


class StepClock:
    """Seconds per step of one attempt, from synchronised points after ``warmup`` steps."""

    def __init__(self, first_step: int, warmup: int = WARMUP_STEPS):
        self.warm_from = first_step + warmup
        self.start: tuple[int, float] | None = None
        self.last: tuple[int, float] | None = None

    def synced(self, step: int, now: float) -> None:
        """The device has finished ``step`` at monotonic time ``now``."""
        if self.start is None:
            if step >= self.warm_from:
                self.start = (step, now)
            return
        self.last = (step, now)

    @property
    def measured_steps(self) -> int:
        return self.last[0] - self.start[0] if self.start and self.last else 0

    def seconds_per_step(self) -> float | None:
        if not self.measured_steps:
            return None
        return (self.last[1] - self.start[1]) / self.measured_steps


def write_timing(root: Path, clock: StepClock, previous: StepTiming | None, *, steps_done: int,
                 target_steps: int, device: str, fingerprint: str, settings: str) -> StepTiming | None:
    """Record this attempt's speed (or, before its warm-up is over, the previous attempt's) with the
    steps done; None (and nothing written) while no attempt has measured one."""
    speed, measured = clock.seconds_per_step(), clock.measured_steps
    if speed is None:
        if previous is None or previous.settings != settings:
            return None
        speed, measured, device = previous.seconds_per_step, previous.measured_steps, previous.device
    from pipeline_lib.core.io import write_json  # numpy and pandas: the trainer's side only

    timing = StepTiming(seconds_per_step=speed, steps_done=int(steps_done), target_steps=int(target_steps),
                        device=device, fingerprint=fingerprint, settings=settings, measured_steps=int(measured))
    write_json(Path(root) / FILE_NAME, {"format": FORMAT, **vars(timing)})
    return timing


def read_timing(root: str | os.PathLike) -> StepTiming | None:
    """The measurement in ``root`` (a run's checkpoint folder), None where there is none or it is not
    one this version wrote (a time limit falls back to the estimate; it is never an error)."""
    path = Path(root) / FILE_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    try:
        timing = StepTiming(**{k: v for k, v in data.items() if k != "format"})
    except TypeError:
        return None
    if not (isinstance(timing.seconds_per_step, (int, float)) and math.isfinite(timing.seconds_per_step)
            and timing.seconds_per_step > 0):
        return None
    return timing


def device_name(device: Any) -> str:
    """The device as a person recognises it (the GPU's model), for the measurement's record."""
    if getattr(device, "type", None) == "cuda":
        import torch  # only in the trainer, where torch is loaded already

        return f"cuda ({torch.cuda.get_device_name(device)})"
    return str(getattr(device, "type", device))


def run_time_limit(root: str | os.PathLike, run_settings: Mapping[str, Any], budget: Mapping[str, Any],
                   planned_steps: int | None, attempt: int, cap_minutes: float):
    """A train job's time limit (core.resources.TrainTimeLimit) from what is known of its run: the
    speed an earlier attempt measured in ``root`` when it was taken with these settings (the steps
    left only while its checkpoint can be resumed, else all ``planned_steps``), else the user's
    ``budget.seconds_per_step`` for the planned steps, else the budget's minutes cap."""
    from pipeline_lib.core.resources import train_time_limit

    timing = read_timing(root)
    if timing is not None and timing.settings == settings_key(run_settings):
        resumable = (Path(root) / timing.fingerprint / CHECKPOINT_FILE).exists()
        return train_time_limit(attempt, steps_left=timing.steps_left if resumable else planned_steps,
                                seconds_per_step=timing.seconds_per_step, measured=True, cap_minutes=cap_minutes)
    if budget.get("seconds_per_step"):
        return train_time_limit(attempt, steps_left=planned_steps, seconds_per_step=budget["seconds_per_step"],
                                cap_minutes=cap_minutes)
    return train_time_limit(attempt, budget_minutes=budget.get("minutes"), cap_minutes=cap_minutes)
