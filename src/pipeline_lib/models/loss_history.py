"""A training run's loss rows kept beside its checkpoint, in an append-only file.

The checkpoint records how many bytes of the history it covers instead of
carrying the rows itself, so saving a checkpoint costs the same at step 100 and
at step 1,000,000 (re-pickling the whole history into every checkpoint grew
quadratically with the run). One JSON object per line: floats are written with
their shortest exact representation, so rows read back on resume are the very
numbers an uninterrupted run keeps, and a resumed run's losses table is
byte-identical to an uninterrupted one's.

The file lives in the checkpoint folder, not beside the run's declared
``losses.csv``: Snakemake deletes a job's declared outputs before it reruns it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO

from pipeline_lib.core.errors import InputError

HISTORY_NAME = "losses.jsonl"


class LossHistory:
    """Rows appended as training goes; :meth:`commit` makes them durable and returns the byte
    count a checkpoint records; :meth:`resume` cuts the file back to such a count."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / HISTORY_NAME
        self.handle: BinaryIO | None = None

    def start(self) -> list[dict[str, float]]:
        """An empty history (a run from step 0 forgets rows a run killed before its first checkpoint left)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "wb")
        return []

    def resume(self, committed_bytes: int, steps: int, advice: str) -> list[dict[str, float]]:
        """The rows a checkpoint at ``steps`` covers (its first ``committed_bytes``); rows written
        after that checkpoint, by the run that was killed, are cut off so they are computed again."""
        size = self.path.stat().st_size if self.path.is_file() else None
        if size is None or size < committed_bytes:
            found = "is missing" if size is None else f"has {size} bytes"
            raise InputError(f"{self.path}: the loss history {found}, but the checkpoint beside it covers "
                             f"{committed_bytes} bytes. {advice}")
        with open(self.path, "r+b") as fh:
            fh.truncate(committed_bytes)
        try:
            with open(self.path, encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh]
        except ValueError as exc:
            raise InputError(f"{self.path}: the loss history cannot be read ({exc}). {advice}") from exc
        # One row per log_every steps, and a checkpoint only ever follows a row: the last row is the
        # checkpoint's step (none before the first step).
        last = rows[-1].get("step") if rows else 0
        if last != steps or len(rows) > steps:
            raise InputError(f"{self.path}: the loss history holds {len(rows)} rows ending at step {last}, but "
                             f"the checkpoint beside it is at step {steps}. {advice}")
        self.handle = open(self.path, "ab")
        return rows

    def append(self, row: dict[str, float]) -> None:
        self.handle.write(json.dumps(row).encode("ascii") + b"\n")

    def commit(self) -> int:
        """Flush and sync the rows so far; the file's length, for the checkpoint written next."""
        if self.handle is None:  # closed after the last step (a run stopped by its time cap)
            with open(self.path, "ab") as fh:
                os.fsync(fh.fileno())
                return fh.tell()
        self.handle.flush()
        os.fsync(self.handle.fileno())
        return self.handle.tell()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
