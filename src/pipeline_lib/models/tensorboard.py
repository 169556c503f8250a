"""TensorBoard event files of a training run: losses, validation rows and snapshots.

Off unless a model block sets ``tensorboard: true`` (a runtime key: it never changes results or
reruns anything). The events go to ``tensorboard/`` beside the run's ``losses.csv``, so
``tensorboard --logdir results/models`` shows every model and seed. A fresh run starts an empty
folder; a resumed run drops the events written after its checkpoint (``purge_step``), so the
curves show each step once, as ``losses.csv`` does.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from pipeline_lib.core.errors import InputError

FOLDER = "tensorboard"


class TrainingBoard:
    """One run's event writer."""

    def __init__(self, folder: Path, resumed_at: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # the tensorboard package is what writes the event files
            raise InputError("tensorboard: true needs the tensorboard package "
                             "(pip install tensorboard, pinned in requirements.txt)") from exc
        if resumed_at == 0:
            shutil.rmtree(folder, ignore_errors=True)
        self.writer = SummaryWriter(str(folder), purge_step=resumed_at + 1 if resumed_at else None)

    def losses(self, row: dict[str, float]) -> None:
        self._scalars("loss", row)

    def validation(self, row: dict[str, float] | None) -> None:
        if row:
            self._scalars("validation", row)

    def snapshot(self, step: int, kind: str, images: np.ndarray) -> None:
        """Grey images (N, H, W) in [0, 1]."""
        batch = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)[:, None]
        self.writer.add_images(f"snapshot/{kind}", batch, step, dataformats="NCHW")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()

    def _scalars(self, group: str, row: dict[str, float]) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{group}/{key}", float(value), step)
