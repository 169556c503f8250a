"""Generic, resumable training loop shared by every model family.

The trainer owns what families should not repeat: device choice, seeding, the
budget (steps and/or minutes), the losses table, and checkpoints. Checkpoints
live in a directory that is *not* a declared Snakemake output (Snakemake
deletes declared outputs before a job starts), keyed by a fingerprint of the
model's configuration and training data so that a changed configuration never
resumes from a stale state.
"""

from __future__ import annotations

import csv
import ctypes
import hashlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import atomic_path
from pipeline_lib.models import build_model, get_family

log = logging.getLogger(__name__)

#: Keys of a model's config block that configure the trainer, not the family.
TRAINER_KEYS = {"family", "budget", "checkpoint_every", "seed", "amp", "channels_last", "condition_on"}
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainerSettings:
    max_steps: int | None = None
    max_minutes: float | None = None
    checkpoint_every: int = 100
    seed: int = 0
    amp: bool = False
    channels_last: bool = False

    @classmethod
    def from_block(cls, name: str, block: dict[str, Any]) -> "TrainerSettings":
        budget = block.get("budget") or {}
        steps, minutes = budget.get("steps"), budget.get("minutes")
        if steps is None and minutes is None:
            raise InputError(f"models.{name}.budget needs 'steps' and/or 'minutes'")
        return cls(max_steps=steps, max_minutes=minutes,
                   checkpoint_every=int(block.get("checkpoint_every", 100)),
                   seed=int(block.get("seed", 0)), amp=bool(block.get("amp", False)),
                   channels_last=bool(block.get("channels_last", False)))


def family_hparams(block: dict[str, Any]) -> dict[str, Any]:
    """The part of a config block that goes to the family's constructor."""
    return {k: v for k, v in block.items() if k not in TRAINER_KEYS}


def select_device(preference: str = "auto") -> torch.device:
    """CUDA when present (the scheduler restricts visibility via CUDA_VISIBLE_DEVICES), else CPU."""
    log.info("CUDA_VISIBLE_DEVICES=%s", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device '{preference}' requested but CUDA is not available")
    return device


#: glibc mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
#: mallopt takes an int: the largest one keeps the heap top for the whole run.
KEEP_HEAP_TOP_BYTES = 2**31 - 1
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TOP_PAD_")


def reuse_freed_host_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse; True if the settings were applied.

    A CPU training step frees and re-allocates the same large tensors
    (gradients, activations) every iteration. By default glibc serves large
    blocks with mmap and unmaps them on free, and trims the heap top, so each
    step page-faults its tensors back in, zero-filled; how often depends on
    thresholds that glibc adapts to the process's earlier frees. Serving every
    block from the heap and never trimming it roughly doubled the plain cvae's
    steps/s at 128 px in bench/train_throughput.py (compare its plain columns
    with and without ``--plain-allocator tuned``). The cost: the process keeps
    its peak heap until it exits, which a training job does when it finishes.
    A user who set glibc's malloc variables or tunables keeps them.
    """
    if any(name in os.environ for name in MALLOC_ENV) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): a different allocator
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    heap_only = mallopt(M_MMAP_MAX, 0) == 1
    keep_top = mallopt(M_TRIM_THRESHOLD, KEEP_HEAP_TOP_BYTES) == 1
    return heap_only and keep_top


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fingerprint(block: dict[str, Any], data_files: list[Path]) -> str:
    """Hash of the configuration and the bytes of the training data files."""
    h = hashlib.sha256(json.dumps(block, sort_keys=True, default=str).encode())
    for path in data_files:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class TrainState:
    step: int = 0
    elapsed_s: float = 0.0
    losses: list[dict[str, float]] = field(default_factory=list)


def _rng_state(batch_gen: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate(), "batches": batch_gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], batch_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    batch_gen.set_state(state["batches"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, model, state: TrainState, batch_gen: torch.Generator,
                    permutation: torch.Tensor, cursor: int) -> None:
    payload = {"training": model.training_state(), "step": state.step, "elapsed_s": state.elapsed_s,
               "losses": state.losses, "rng": _rng_state(batch_gen),
               "permutation": permutation, "cursor": cursor}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


class BatchStream:
    """Shuffled mini-batches without replacement, epoch after epoch, resumable."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        if n == 0:
            raise InputError("no training images: the train split is empty")
        self.n, self.batch_size, self.gen = n, min(batch_size, n), generator
        self.permutation = torch.randperm(n, generator=generator)
        self.cursor = 0

    def next_indices(self) -> torch.Tensor:
        if self.cursor + self.batch_size > self.n:
            self.permutation = torch.randperm(self.n, generator=self.gen)
            self.cursor = 0
        idx = self.permutation[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return idx


def train_model(name: str, block: dict[str, Any], images: np.ndarray, labels: np.ndarray | None,
                out_weights: Path, out_losses: Path, checkpoint_root: Path, *,
                data_files: list[Path] = (), n_classes: int = 0, class_names: list[str] | None = None,
                device: str = "auto", steps_this_call: int | None = None) -> dict[str, Any] | None:
    """Train model ``name`` from its config ``block`` on ``images`` (N, H, W) in [0, 1].

    Resumes from ``checkpoint_root/<fingerprint>/checkpoint.pt`` when present.
    Writes the final weights (with the metadata needed to rebuild the model)
    and a losses CSV atomically; returns a summary for the report.
    ``steps_this_call`` stops early after that many steps with a checkpoint and
    returns None, as a time-sliced or preempted job would.
    """
    settings = TrainerSettings.from_block(name, block)
    family = block["family"]
    hparams = family_hparams(block)
    get_family(family).resolve_hparams(hparams)  # unknown keys fail before any work
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise InputError(f"training images must be (N, S, S), got {images.shape}")
    image_size = images.shape[1]

    dev = select_device(device)
    if dev.type == "cpu":
        # Denormal floats made one CPU step ~30x slower in measurements here.
        torch.set_flush_denormal(True)
        if reuse_freed_host_memory():
            log.info("glibc malloc set to reuse freed memory (no mmap, no heap trimming)")
    seed_everything(settings.seed)
    model = build_model(family, image_size, hparams, n_classes=n_classes).to(dev)
    if settings.channels_last and dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model.configure_optimizers()
    model.enable_mixed_precision(settings.amp)

    batch_gen = torch.Generator().manual_seed(settings.seed)
    stream = BatchStream(len(images), model.hparams["batch_size"], batch_gen)
    state = TrainState()

    run_dir = Path(checkpoint_root) / fingerprint(block, list(data_files))
    ckpt_path = run_dir / CHECKPOINT_NAME
    if ckpt_path.exists():
        payload = torch.load(ckpt_path, map_location=dev, weights_only=False)
        model.load_training_state(payload["training"])
        state = TrainState(payload["step"], payload["elapsed_s"], payload["losses"])
        _set_rng_state(payload["rng"], batch_gen)
        stream.permutation, stream.cursor = payload["permutation"], payload["cursor"]
        log.info("resumed %s from %s at step %d", name, ckpt_path, state.step)
    run_dir.mkdir(parents=True, exist_ok=True)

    data = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    label_tensor = torch.from_numpy(np.asarray(labels, dtype=np.int64)) if labels is not None else None

    def budget_left() -> bool:
        if settings.max_steps is not None and state.step >= settings.max_steps:
            return False
        if settings.max_minutes is not None and state.elapsed_s >= settings.max_minutes * 60:
            return False
        return True

    started = time.monotonic() - state.elapsed_s
    first_step = state.step
    while budget_left():
        if steps_this_call is not None and state.step - first_step >= steps_this_call:
            save_checkpoint(ckpt_path, model, state, batch_gen, stream.permutation, stream.cursor)
            return None
        idx = stream.next_indices()
        x = data[idx].unsqueeze(1).to(dev, non_blocking=True)
        if settings.channels_last and dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        y = label_tensor[idx].to(dev) if label_tensor is not None else None
        losses = model.training_step(x, y)
        state.step += 1
        state.elapsed_s = time.monotonic() - started
        state.losses.append({"step": state.step, **losses})
        if state.step % settings.checkpoint_every == 0:
            save_checkpoint(ckpt_path, model, state, batch_gen, stream.permutation, stream.cursor)
            log.info("%s step %d %s", name, state.step,
                     " ".join(f"{k}={v:.4g}" for k, v in losses.items()))

    bad = [row for row in state.losses if not all(np.isfinite(v) for v in row.values())]
    if bad:
        raise RuntimeError(f"model {name}: non-finite loss at step {bad[0]['step']}: {bad[0]}")

    summary = {"model": name, "family": family, "hparams": model.hparams, "steps": state.step,
               "train_seconds": round(state.elapsed_s, 2), "device": str(dev),
               "n_train_images": int(len(images)), "image_size": image_size,
               "n_classes": n_classes, "class_names": class_names or []}
    with atomic_path(out_weights, suffix=".pt") as tmp:
        torch.save({"state_dict": model.state_dict(), "summary": summary}, tmp)
    write_losses_csv(out_losses, state.losses)
    # The final weights are the durable result; the resume state is no longer needed.
    shutil.rmtree(run_dir, ignore_errors=True)
    return summary


def write_losses_csv(path: Path, rows: list[dict[str, float]]) -> None:
    columns = ["step"] + sorted({k for row in rows for k in row} - {"step"})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def load_trained_model(weights: Path, device: str = "auto"):
    """Rebuild a trained model from its weights file; returns (model, summary)."""
    payload = torch.load(weights, map_location="cpu", weights_only=False)
    s = payload["summary"]
    model = build_model(s["family"], s["image_size"], s["hparams"], n_classes=s["n_classes"])
    model.load_state_dict(payload["state_dict"])
    model.to(select_device(device)).eval()
    return model, s


def configure_threads(threads: int | None) -> None:
    """Keep torch to the cores the scheduler granted this job."""
    if threads:
        torch.set_num_threads(int(threads))
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))



def train_job(name: str, block: dict[str, Any], images: Path, table: Path, *, weights: Path,
              losses: Path, summary: Path, checkpoint_root: Path, threads: int | None = None) -> dict:
    """The train rule: train on the train split and write weights, losses and a summary."""
    from pipeline_lib.core.slices import load_split
    from pipeline_lib.core.io import write_json

    configure_threads(threads)
    train_images, rows = load_split(images, table, "train")
    labels, class_names = None, None
    condition_on = block.get("condition_on")
    if condition_on:
        if condition_on not in rows.columns:
            raise InputError(f"models.{name}.condition_on: the slice table has no column '{condition_on}'")
        class_names = sorted(rows[condition_on].unique())
        labels = rows[condition_on].map({c: i for i, c in enumerate(class_names)}).to_numpy()
    result = train_model(name, block, train_images, labels, weights, losses, checkpoint_root,
                         data_files=[images, table], n_classes=len(class_names or []),
                         class_names=class_names)
    write_json(summary, result)
    return result
