"""What a running training job shows: a progress line in its log and a losses table that grows.

Both are views of the run, not results: they read the clock to decide *when* to
write, never to decide what is computed, so a run's weights and losses stay a
function of its configuration and seeds.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, TextIO

import torch

from pipeline_lib.core.io import atomic_path

log = logging.getLogger(__name__)


def duration_text(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class ProgressLine:
    """Logs ``<model> step s/target (p %) | losses | x steps/s | ETA t`` every ``every_steps`` steps
    or ``every_seconds`` seconds, whichever comes first (either may be None).

    steps/s is measured since the previous line; the ETA is the steps left at
    that rate, or the time left of a minutes-only budget.
    """

    def __init__(self, name: str, target_steps: int | None, target_seconds: float | None,
                 every_steps: int | None, every_seconds: float | None,
                 clock: Callable[[], float] = time.monotonic, logger: logging.Logger = log):
        self.name, self.target_steps, self.target_seconds = name, target_steps, target_seconds
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.clock, self.logger = clock, logger
        self.last_time: float | None = None
        self.last_step = 0

    def start(self, step: int) -> None:
        self.last_time, self.last_step = self.clock(), step

    def due(self, step: int, now: float) -> bool:
        if self.every_steps and step % self.every_steps == 0:
            return True
        return bool(self.every_seconds) and now - self.last_time >= self.every_seconds

    def update(self, step: int, elapsed_s: float, losses: dict[str, float], force: bool = False) -> str | None:
        """Log (and return) the line when one is due, else None."""
        now = self.clock()
        if self.last_time is None:
            self.start(step - 1)
        if not (force or self.due(step, now)) or step == self.last_step:
            return None
        rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_time, self.last_step = now, step
        line = self.format(step, elapsed_s, losses, rate)
        self.logger.info("%s", line)
        return line

    def format(self, step: int, elapsed_s: float, losses: dict[str, float], rate: float) -> str:
        if self.target_steps:
            where = f"step {step}/{self.target_steps} ({100 * step / self.target_steps:.0f} %)"
            left = (self.target_steps - step) / rate if rate > 0 else math.inf
        else:
            where = f"step {step}"
            left = math.inf
        if self.target_seconds:
            left = min(left, max(self.target_seconds - elapsed_s, 0.0))
        shown = " ".join(f"{k}={v:.4g}" for k, v in losses.items())
        return f"{self.name} {where} | {shown} | {rate:.3g} steps/s | ETA {duration_text(left)}"


def table_columns(rows: list[dict[str, float]]) -> list[str]:
    """``step`` then every other key of the rows, sorted (the losses and validation tables)."""
    return ["step"] + sorted({k for row in rows for k in row} - {"step"})


def write_rows_csv(path: Path, rows: list[dict[str, float]]) -> None:
    """The rows as a CSV table with :func:`table_columns`, atomically; just a header when empty."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=table_columns(rows))
        writer.writeheader()
        writer.writerows(rows)


class LiveLossTable:
    """``losses.csv`` written as training goes: the rows so far when opened, then one row per step.

    The file is flushed every ``flush_every`` rows (and on :meth:`flush`), so it
    can be watched (``tail -f``) or plotted while the job runs. The trainer
    replaces it atomically with the complete table at the end; a job killed
    midway leaves the rows up to its last flush, and its resumed run rewrites
    the file from the checkpoint's rows. Columns are fixed by the first row; a
    row with a new loss name rewrites the file with the wider header.
    """

    def __init__(self, path: Path, rows: list[dict[str, float]], flush_every: int = 25):
        self.path, self.flush_every = Path(path), flush_every
        self.rows = rows
        self.handle: TextIO | None = None
        self.columns: list[str] = []
        self.pending = 0
        self._rewrite()

    def _rewrite(self) -> None:
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns = table_columns(self.rows)
        self.handle = open(self.path, "w", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=self.columns)
        if len(self.columns) > 1:
            self.writer.writeheader()
            self.writer.writerows(self.rows)
        self.handle.flush()

    def append(self, row: dict[str, float]) -> None:
        """Write ``row`` (already appended to the shared ``rows`` list by the trainer)."""
        if set(row) - set(self.columns):
            self._rewrite()
            return
        if len(self.columns) == 1:  # empty table so far
            self._rewrite()
            return
        self.writer.writerow(row)
        self.pending += 1
        if self.pending >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self.handle is not None:
            self.handle.flush()
        self.pending = 0

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class LossWindow:
    """Each loss summed over the steps since the last row, on the device the loss lives on.

    The families return their losses as tensors (or floats); :meth:`row` reads every sum back in
    one transfer (the only host sync of logging) and gives each loss's mean over the steps that
    reported it. With one step per row the values are the step's own losses, unchanged.
    """

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    @property
    def empty(self) -> bool:
        return not self.counts

    def add(self, losses: dict[str, Any]) -> None:
        for key, value in losses.items():
            value = value.detach() if isinstance(value, torch.Tensor) else value
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1

    def row(self, step: int) -> dict[str, float]:
        keys = [k for k, v in self.sums.items() if isinstance(v, torch.Tensor)]
        values = {k: float(v) for k, v in self.sums.items() if k not in keys}
        if keys:
            read = torch.stack([self.sums[k].reshape(()).float() for k in keys]).tolist()
            values.update(zip(keys, read))
        row = {"step": step}
        for key in self.sums:  # the families' order, as a step's losses come
            count = self.counts[key]
            row[key] = values[key] / count if count > 1 else values[key]
        self.sums, self.counts = {}, {}
        return row
