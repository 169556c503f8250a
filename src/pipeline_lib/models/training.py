"""Generic, resumable training loop shared by every model family.

The trainer owns what families should not repeat: device choice, seeding, the
budget (steps or epochs decide; minutes is only a safety cap that marks a run
incomplete), the losses table, and checkpoints. Checkpoints
live in a directory that is *not* a declared Snakemake output (Snakemake
deletes declared outputs before a job starts), keyed by a fingerprint of the
model's configuration and training data so that a changed configuration never
resumes from a stale state.

Training aids, each in its own module and each off unless configured: an
exponential moving average of the sampling networks (``models/ema.py``),
learning-rate schedules (``models/schedule.py``), validation losses and sample
snapshots every K steps (``models/monitor.py``), and a progress line plus a
losses table that grows while the job runs (``models/progress.py``), and
on-the-fly augmentation of the training batches (``models/augment.py``). Their
state is part of the checkpoint, so a resumed run is identical to an
uninterrupted one. The loss history is not: it grows in an append-only file
beside the checkpoint (``models/loss_history.py``), which records its length.

Batches are read by a DataLoader in the order the run's seed draws (``models/loader.py``); the
train rule hands over the split as ``core.slices.SplitImages``, read from disk batch by batch.

:func:`train_model` reads as a training loop: build the model and its aids, :meth:`Checkpoint.load`
(a fresh state when there is none), then per step an :class:`OptimisationStep` and the
:class:`TrainingRecord` of its losses, :meth:`Checkpoint.save` every ``checkpoint_every`` steps, and
at the end the weights with their summary (:func:`run_summary`). Everything a checkpoint holds is
saved and loaded by the one :class:`Checkpoint` class.

Weights and checkpoints hold tensors and plain values only and are read with
``weights_only=True`` (``core/tensor_files.py``): loading one never runs code.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from pipeline_lib.core.runtime import deterministic_kernels, prepare_cpu_training, seed_everything, select_device
from pipeline_lib.core.settings import TrainerSettings, check_known_keys, family_hparams, result_part
from pipeline_lib.core.slices import channel_count, dataset_geometry
from pipeline_lib.core.step_timing import (CHECKPOINT_FILE, TIME_ONLY_BUDGET_KEYS, StepClock, device_name,
                                           read_timing, settings_key, write_timing)
from pipeline_lib.core.tensor_files import load_tensor_file, plain_values
from pipeline_lib.models import build_model, get_family
from pipeline_lib.models.augment import BatchAugmenter, check_flip_axis
from pipeline_lib.models.ema import WeightAverage, load_average_into
from pipeline_lib.models.loss_history import LossHistory
from pipeline_lib.models.monitor import TrainingMonitor
from pipeline_lib.models.loader import batch_loader, take
from pipeline_lib.models.progress import LiveLossTable, LossWindow, ProgressLine, write_rows_csv
from pipeline_lib.models.schedule import lr_factor, remember_initial_lr, set_lr_factor
from pipeline_lib.models.tensorboard import FOLDER as BOARD_FOLDER, TrainingBoard

log = logging.getLogger(__name__)

CHECKPOINT_NAME = CHECKPOINT_FILE
#: Checkpoints of this layout (tensors and plain values, loss history beside them); others are refused.
CHECKPOINT_FORMAT = "pipeline_lib-checkpoint/2"


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
    """Where a run stands: steps taken, training time, and the rows of its losses table."""

    step: int = 0
    elapsed_s: float = 0.0
    losses: list[dict[str, float]] = field(default_factory=list)


def _rng_state(batch_gen: torch.Generator) -> dict[str, Any]:
    # numpy's key is stored as a tensor (weights_only loading refuses numpy arrays); uint32 fits int64.
    name, key, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": [name, torch.from_numpy(key.astype(np.int64)), position, has_gauss, cached_gaussian],
             "python": random.getstate(), "batches": batch_gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], batch_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    name, key, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(state["python"])
    batch_gen.set_state(state["batches"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


@dataclass
class Checkpoint:
    """The resume state of one run, saved and loaded part by part in one place: the model (weights,
    optimisers, scaler), every random generator, the batch order, the training aids' state, and how
    much of the loss history file (``history``, beside it) it covers. A run loaded from it continues
    exactly as the run that saved it would have."""

    path: Path
    model: Any
    stream: BatchStream
    history: LossHistory
    average: WeightAverage | None = None
    monitor: TrainingMonitor | None = None
    augmenter: BatchAugmenter | None = None

    def save(self, state: TrainState) -> None:
        payload = {"format": CHECKPOINT_FORMAT, "training": self.model.training_state(), "step": state.step,
                   "elapsed_s": state.elapsed_s, "history_bytes": self.history.commit(),
                   "rng": _rng_state(self.stream.gen),
                   "permutation": self.stream.permutation, "cursor": self.stream.cursor,
                   "ema": self.average.state_dict() if self.average is not None else None,
                   "monitor": self.monitor.state_dict() if self.monitor is not None else None,
                   "augment": self.augmenter.state_dict() if self.augmenter is not None else None}
        with atomic_path(self.path, suffix=".pt") as tmp:
            torch.save(plain_values(payload, "checkpoint"), tmp)

    def load(self, device: torch.device) -> TrainState:
        """The saved state, every part restored from it; a fresh state (and loss history) when the run
        has no checkpoint yet."""
        if not self.path.exists():
            return TrainState(losses=self.history.start())
        payload = load_checkpoint(self.path, device)
        self.model.load_training_state(payload["training"])
        rows = self.history.resume(payload["history_bytes"], payload["step"],
                                   f"Delete the folder {self.path.parent} to train this run from the start.")
        _set_rng_state(payload["rng"], self.stream.gen)
        self.stream.permutation, self.stream.cursor = payload["permutation"], payload["cursor"]
        if self.average is not None and payload.get("ema") is not None:
            self.average.load_state_dict(payload["ema"])
        if self.monitor is not None and payload.get("monitor") is not None:
            self.monitor.load_state_dict(payload["monitor"])
            self.monitor.resume_at(payload["step"])
        if self.augmenter is not None and payload.get("augment") is not None:
            self.augmenter.load_state_dict(payload["augment"])
        return TrainState(payload["step"], payload["elapsed_s"], rows)

    def discard(self) -> None:
        """The run is done: its final weights are the durable result, the resume state is not needed."""
        shutil.rmtree(self.path.parent, ignore_errors=True)


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """The payload of a file written by :meth:`Checkpoint.save`; any other file (an earlier layout, a
    foreign or tampered file) is an :class:`InputError` that says how to start the run over."""
    advice = (f"If an earlier version of the pipeline wrote it, delete the folder {path.parent} "
              "to train this run from the start.")
    payload = load_tensor_file(path, "training checkpoint", map_location=device, advice=advice)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise InputError(f"{path}: not a training checkpoint of format {CHECKPOINT_FORMAT!r} "
                         f"(found {found!r}). {advice}")
    return payload


@dataclass
class OptimisationStep:
    """One step of training: the batch onto the device (augmented, in the memory layout asked for),
    the learning rate of this step, the family's update, then the weight average's."""

    model: Any
    device: torch.device
    settings: TrainerSettings
    target_steps: int
    augmenter: BatchAugmenter | None = None
    average: WeightAverage | None = None

    def __post_init__(self) -> None:
        self.scheduled = self.settings.lr_schedule != "constant" or self.settings.lr_warmup_steps > 0
        if self.scheduled:
            remember_initial_lr(self.model.optimizers)

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None, step: int) -> dict[str, Any]:
        """The losses of update number ``step`` (1-based) on batch ``(x, y)``."""
        settings, channels_last = self.settings, self.settings.channels_last and self.device.type == "cuda"
        x = x.to(self.device, non_blocking=True)
        if self.augmenter is not None:  # the training batch only: validation and samples never pass here
            x = self.augmenter(x)
        if channels_last:
            x = x.contiguous(memory_format=memory_format(x.ndim - 2))
        y = y.to(self.device, non_blocking=True) if y is not None else None
        if self.scheduled:
            stage_step, stage_steps = self.model.schedule_position(step, self.target_steps)
            set_lr_factor(self.model.optimizers, lr_factor(stage_step, settings.lr_schedule,
                                                           settings.lr_warmup_steps, stage_steps))
        losses = self.model.training_step(x, y)
        if self.average is not None:
            self.average.update(self.model)
        return losses


class TrainingRecord:
    """What a run shows and keeps of its steps: the losses of each ``log_every`` steps as one row (in
    the loss history, the live losses table and TensorBoard), validation and snapshots, and the
    progress line. A checkpoint waits for the end of a row's window: the window's sums are not in it."""

    def __init__(self, name: str, settings: TrainerSettings, target_steps: int, state: TrainState,
                 history: LossHistory, monitor: TrainingMonitor, out_losses: Path, model,
                 average: WeightAverage | None):
        self.settings, self.target_steps, self.history, self.monitor = settings, target_steps, history, monitor
        self.model, self.average = model, average
        self.cap_s = None if settings.budget.minutes is None else settings.budget.minutes * 60
        self.window = LossWindow()
        self.board = TrainingBoard(out_losses.parent / BOARD_FOLDER, state.step) if settings.tensorboard else None
        self.progress = ProgressLine(name, target_steps, self.cap_s or None, settings.progress_every_steps,
                                     settings.progress_every_seconds)
        self.live_losses = LiveLossTable(out_losses, state.losses)
        self.shown = {k: v for k, v in state.losses[-1].items() if k != "step"} if state.losses else {}
        self.progress.start(state.step)

    def budget_left(self, state: TrainState) -> bool:
        """Steps remain, and the ``minutes`` cap (a safety cap only) has not run out; a capped run
        still ends its losses window, so that its last checkpoint covers every step."""
        capped = self.cap_s is not None and state.elapsed_s >= self.cap_s
        return state.step < self.target_steps and not (capped and self.window.empty)

    def step(self, state: TrainState, losses: dict[str, Any]) -> None:
        self.window.add(losses)
        if state.step % self.settings.log_every == 0 or state.step >= self.target_steps:
            row = self.window.row(state.step)
            state.losses.append(row)
            self.history.append(row)
            self.live_losses.append(row)
            self.shown = {k: v for k, v in row.items() if k != "step"}
            if self.board is not None:
                self.board.losses(row)
        validated = self.monitor.after_step(state.step, self.model, self.average, final=not self.budget_left(state))
        if self.board is not None:
            self.board.validation(validated)
            if self.monitor.snapshots and self.monitor.snapshots[-1][0] == state.step:
                self.board.snapshot(*self.monitor.snapshots[-1])
        self.progress.update(state.step, state.elapsed_s, self.shown)

    def flush(self) -> None:
        """Bring the live losses table up to the checkpoint just written."""
        self.live_losses.flush()

    def finish(self, state: TrainState, first_step: int) -> None:
        if state.step > first_step:  # the last line of the log shows where training ended
            self.progress.update(state.step, state.elapsed_s, self.shown, force=True)

    def close(self) -> None:
        self.live_losses.close()
        self.history.close()
        if self.board is not None:
            self.board.close()


def train_model(name: str, block: dict[str, Any], images: np.ndarray, labels: np.ndarray | None,
                out_weights: Path, out_losses: Path, checkpoint_root: Path, *,
                data_files: list[Path] = (), n_classes: int = 0, class_names: list[str] | None = None,
                covariates: list[dict[str, Any]] | None = None, device: str = "auto", steps_this_call: int | None = None,
                data_summary: dict[str, Any] | None = None,
                validation: tuple[np.ndarray, np.ndarray | None] | None = None,
                out_validation: Path | None = None, out_snapshots: Path | None = None) -> dict[str, Any] | None:
    """Train model ``name`` from its config ``block`` on ``images`` (N, H, W) in [0, 1], or a stacked
    dataset's (N, C, H, W): the model is built with C channels. ``images`` is an array or anything
    indexed like one (``core.slices.SplitImages``: the split read from disk as batches need it).

    Resumes from ``checkpoint_root/<fingerprint>/checkpoint.pt`` when present.
    Writes the final weights (with the metadata needed to rebuild the model)
    and a losses CSV atomically; returns a summary for the report.
    The run ends at the budget's steps (or epochs). When the ``minutes`` safety
    cap stops it first, the weights are written all the same, the summary says
    ``incomplete`` and the checkpoint is kept, so a rerun with a larger cap
    continues it to exactly the result of an uncapped run.
    ``steps_this_call`` stops early after that many steps with a checkpoint and
    returns None, as a time-sliced or preempted job would. ``data_summary``
    (what the model was trained on, no subject keys) is stored in the summary.
    ``validation`` holds the test split's images (and labels) for the
    validation loss; the validation table and the snapshots go to
    ``out_validation`` and ``out_snapshots`` when given.
    """
    settings = TrainerSettings.from_block(name, block)
    family = get_family(settings.family)
    check_known_keys(family_hparams(block), family.DEFAULTS, f"models.{name}")  # before any work
    check_dimensions(name, settings, family, images)

    # The model and its aids, built in the order the seed's draws expect.
    dev = select_device(device)
    model = build_seeded_model(settings, family_hparams(block), images, n_classes, dev,
                               n_covariates=len(covariates or ()))
    average = WeightAverage(settings.ema_decay) if settings.ema_decay is not None else None
    monitor = TrainingMonitor(
        seed=settings.seed, validate_every=settings.validate_every, snapshot_every=settings.snapshot_every,
        snapshot_images=settings.snapshot_images, validation=validation,
        validation_images=settings.validation_images, n_classes=n_classes,
        conditional=model.conditional, batch_size=model.hp.batch_size,
        fid_every=settings.fid_every, fid_images=settings.fid_images, fid_reference=images)
    augmenter = BatchAugmenter(settings.augmentation, settings.seed) if settings.augmentation is not None else None
    stream = BatchStream(len(images), model.hp.batch_size, torch.Generator().manual_seed(settings.seed))
    target_steps = settings.budget.target_steps(len(images), stream.batch_size)
    step = OptimisationStep(model, dev, settings, target_steps, augmenter, average)
    check_training_plan(model, settings, target_steps)

    # Resume where a previous call of the same run stopped.
    run_dir = Path(checkpoint_root) / fingerprint(result_block(block), list(data_files))
    history = LossHistory(run_dir)
    checkpoint = Checkpoint(run_dir / CHECKPOINT_NAME, model, stream, history, average, monitor, augmenter)
    resumed = checkpoint.path.exists()
    state = checkpoint.load(dev)
    if resumed:
        log.info("resumed %s from %s at step %d", name, checkpoint.path, state.step)
    # the speed beside the checkpoints, for the next attempt's time limit (core/step_timing.py)
    clock, timing, run_key = StepClock(state.step), read_timing(checkpoint_root), settings_key(result_block(block))

    def save(state: TrainState) -> None:
        nonlocal timing
        checkpoint.save(state)
        timing = write_timing(checkpoint_root, clock, timing, steps_done=state.step, target_steps=target_steps,
                              device=device_name(dev), fingerprint=run_dir.name, settings=run_key)

    # The loop.
    record = TrainingRecord(name, settings, target_steps, state, history, monitor, out_losses, model, average)
    batches = iter(batch_loader(stream, images, labels, seed=settings.seed, device=dev,
                                workers=settings.loader_workers, prefetch=settings.loader_prefetch))
    checkpoint_due = False
    started, first_step = time.monotonic() - state.elapsed_s, state.step
    try:
        while record.budget_left(state):
            if steps_this_call is not None and state.step - first_step >= steps_this_call and record.window.empty:
                save(state)
                return None
            losses = step(*take(batches, stream), state.step + 1)
            state.step += 1
            state.elapsed_s = time.monotonic() - started
            record.step(state, losses)
            if record.window.empty:  # a row of losses was read back: the device has finished the step
                clock.synced(state.step, time.monotonic())
            checkpoint_due |= state.step % settings.checkpoint_every == 0
            if checkpoint_due and record.window.empty:
                save(state)
                record.flush()
                checkpoint_due = False
        record.finish(state, first_step)
    finally:
        record.close()

    # The result: weights with the summary that rebuilds them, the losses and validation tables.
    bad = [row for row in state.losses if not all(np.isfinite(v) for v in row.values())]
    if bad:
        raise RuntimeError(f"model {name}: non-finite loss at step {bad[0]['step']}: {bad[0]}")
    sampled_average = average if average is not None and settings.sample_from_ema else None
    summary = run_summary(name, block, settings, model, state, target_steps, images, dev, n_classes,
                          class_names, data_summary, sample_ema=sampled_average is not None)
    summary["covariates"] = list(covariates or [])
    if summary["incomplete"]:
        # Kept so that a rerun with a larger cap continues this run instead of starting over.
        save(state)
        log.warning("INCOMPLETE: %s stopped by the safety cap budget.minutes = %g at step %d of %d; "
                    "its results depend on this machine's speed. Raise the cap (or lower the steps) "
                    "and rerun to continue it from step %d.", name, settings.budget.minutes, state.step,
                    target_steps, state.step)
    with atomic_path(out_weights, suffix=".pt") as tmp:
        torch.save(plain_values({"state_dict": model.state_dict(), "summary": summary,
                                 "ema": sampled_average.state_dict()["shadow"] if sampled_average else None},
                                "weights"), tmp)
    write_losses_csv(out_losses, state.losses)
    monitor.write(out_validation, out_snapshots)
    if not summary["incomplete"]:
        checkpoint.discard()
    return summary


def build_seeded_model(settings: TrainerSettings, hparams: dict[str, Any], images, n_classes: int,
                       dev: torch.device, n_covariates: int = 0):
    """The family's model on ``dev``, its weights drawn from the run's seed, with its optimisers and
    mixed precision set up."""
    if dev.type == "cpu":
        prepare_cpu_training()
    deterministic_kernels(dev)
    seed_everything(settings.seed)
    model = build_model(settings.family, images.shape[-1], hparams, n_classes=n_classes,
                        channels=channel_count(images), n_covariates=n_covariates).to(dev)
    if settings.channels_last and dev.type == "cuda":
        model = model.to(memory_format=memory_format(model.spatial_dims))
    model.configure_optimizers()
    model.enable_mixed_precision(settings.precision, on_cpu=settings.amp_on_cpu)
    model.deferred_losses = True  # read back per row of losses (LossWindow), not per step
    return model


def check_dimensions(name: str, settings: TrainerSettings, family, images) -> None:
    """Slices (N, S, S) or stacked (N, C, S, S) for a 2-D family, volumes (N, C, S, S, S) for a 3-D one
    (``spatial_dims`` = 3); the 2-D training aids (augmentation, the Inception FID) refuse volumes."""
    shape = tuple(images.shape)
    if family.spatial_dims == 3:
        if len(shape) != 5 or len(set(shape[2:])) != 1:
            raise InputError(f"family '{family.family}' learns volumes: training images must be (N, C, S, S, S) "
                             f"(a volume dataset with a cubic box), got {shape}")
        for key, value in (("augment", settings.augmentation), ("fid_every", settings.fid_every)):
            if value:
                raise InputError(f"models.{name}.{key}: works on 2-D slices; family '{family.family}' "
                                 "learns volumes, leave it unset")
    elif images.ndim not in (3, 4) or images.shape[-1] != images.shape[-2]:
        raise InputError(f"training images must be (N, S, S) or stacked (N, C, S, S), got {images.shape}")


def memory_format(spatial_dims: int) -> torch.memory_format:
    """The channels-last layout of a batch with 2 or 3 spatial axes."""
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def result_block(block: dict[str, Any]) -> dict[str, Any]:
    """The part of a model block that decides what the run computes: its checkpoint's fingerprint.
    Runtime keys (the checkpoint interval), the time cap and the speed estimate do not orphan a
    checkpoint: a run stopped by the cap continues under a larger one."""
    kept = result_part(block, TrainerSettings)
    kept["budget"] = {k: v for k, v in dict(block["budget"]).items() if k not in TIME_ONLY_BUDGET_KEYS}
    return kept


def run_summary(name: str, block: dict[str, Any], settings: TrainerSettings, model, state: TrainState,
                target_steps: int, images, dev: torch.device, n_classes: int, class_names: list[str] | None,
                data_summary: dict[str, Any] | None, *, sample_ema: bool) -> dict[str, Any]:
    """What the weights file and summary.json record of a run: enough to rebuild the model, and what
    the report shows of it."""
    config = result_part(block, TrainerSettings)
    summary = {"model": name, "family": settings.family, "hparams": model.hparams, "seed": settings.seed,
               "config": config, "steps": state.step, "target_steps": target_steps,
               "incomplete": state.step < target_steps,
               "budget": {k: v for k, v in vars(settings.budget).items() if v is not None},
               "train_seconds": round(state.elapsed_s, 2), "device": str(dev),
               "n_train_images": int(len(images)), "image_size": images.shape[-1], "channels": channel_count(images),
               "n_classes": n_classes, "class_names": class_names or [],
               "training_data": dict(data_summary or {"n_slices": int(len(images))})}
    summary["training_aids"] = training_aids_summary(settings, model, sample_ema)
    if hasattr(model, "perceptual_summary"):  # which feature network a perceptual loss used, for the report
        summary["perceptual"] = model.perceptual_summary()
    return summary


def check_training_plan(model, settings: TrainerSettings, target_steps: int) -> None:
    """Training-aid keys the family cannot honour are errors before the first step."""
    if settings.ema_decay is not None and not model.EMA_MODULES:
        raise InputError(f"ema_decay: family '{model.family}' names no networks to average")
    TrainingMonitor.check_supported(model, settings.validate_every)
    model.check_budget(target_steps)


def training_aids_summary(settings: TrainerSettings, model, sample_ema: bool) -> dict[str, Any]:
    """The aids a run used, for the report's model table."""
    return {"ema_decay": settings.ema_decay, "sampled_with": "ema" if sample_ema else "trained weights",
            "ema_networks": list(model.EMA_MODULES) if settings.ema_decay is not None else [],
            "lr_schedule": settings.lr_schedule, "lr_warmup_steps": settings.lr_warmup_steps,
            "validate_every": settings.validate_every, "snapshot_every": settings.snapshot_every,
            "fid_every": settings.fid_every, "fid_images": settings.fid_images if settings.fid_every else None,
            "augment": settings.augmentation}


#: The losses table is written like every other step table (``step`` first, then sorted names).
write_losses_csv = write_rows_csv


def load_trained_model(weights: Path, device: str = "auto", averaged: bool = True):
    """Rebuild a trained model from its weights file; returns (model, summary).

    A run that kept an EMA for sampling (``sample_from_ema``) saved the averaged
    weights beside the trained ones; ``averaged`` (default) loads those into
    the averaged networks, so sampling and reconstruction use them.
    """
    payload = load_trained_payload(weights)
    s = payload["summary"]
    model = build_model(s["family"], s["image_size"], s["hparams"], n_classes=s["n_classes"],
                        channels=int(s.get("channels", 1)), n_covariates=len(s.get("covariates") or ()))
    model.load_state_dict(payload["state_dict"])
    if averaged and payload.get("ema"):
        load_average_into(model, payload["ema"])
    model.to(select_device(device)).eval()
    return model, s


def load_trained_payload(weights: Path) -> dict[str, Any]:
    """The content of a weights.pt written by :func:`train_model` (state dict, summary, average),
    loaded without running code; another file is an :class:`InputError` naming it."""
    payload = load_tensor_file(weights, "weights file")
    if not (isinstance(payload, dict) and isinstance(payload.get("summary"), dict)
            and isinstance(payload.get("state_dict"), dict)):
        raise InputError(f"{weights}: not a weights file written by the pipeline's trainer "
                         "(no state_dict and summary in it)")
    return payload


def train_job(name: str, block: dict[str, Any], images: Path, table: Path, *, weights: Path,
              losses: Path, summary: Path, checkpoint_root: Path, validation: Path | None = None,
              snapshots: Path | None = None, threads: int | None = None,
              train_split: tuple | None = None, grid: Path | None = None) -> dict:
    """The train rule: train on the train split and write weights, losses and a summary (plus the
    validation table and snapshots, empty when those are off); the test split serves validation.
    ``train_split`` (images, their real table rows), when given, replaces the split read from
    images.npy: the on-the-fly augmented split of imaging/augmentation.py, whose ``data_files``
    join the checkpoint's fingerprint. With ``grid`` (a volume dataset's grid.json) ``images`` and
    ``table`` are that dataset's volumes.npy and volumes.tsv (a 3-D run), and the grid is kept in the
    summary's training data, so that a sample can be written as NIfTI on it (models/export.py)."""
    from pipeline_lib.core.io import write_json
    from pipeline_lib.core.runtime import configure_threads
    from pipeline_lib.core.slices import open_split
    from pipeline_lib.core.volumes import open_volume_split

    configure_threads(threads)

    def read_split(split: str, augmented: bool = False):
        if grid is not None:  # a volume dataset holds no augmented rows
            return open_volume_split(images, table, split)
        return open_split(images, table, split, augmented=augmented)

    # real + augmented, read batch by batch: memory does not grow with the split
    train_images, rows = train_split or read_split("train", augmented=True)
    labels, class_names = None, None
    condition_on = block.get("condition_on")
    if condition_on:
        if condition_on not in rows.columns:
            raise InputError(f"models.{name}.condition_on: the slice table has no column '{condition_on}'")
        class_names = sorted(rows[condition_on].unique())
        labels = class_indices(rows, condition_on, class_names)
    covariates = TrainerSettings.from_block(name, block).condition_on_covariates
    scaling = None
    if covariates:
        from pipeline_lib.core.covariates import covariate_values, fit_scaling, scale

        where = f"models.{name}.condition_on_covariates ({table})"
        train_values = covariate_values(rows, covariates, where)
        scaling = fit_scaling(train_values, covariates, where)
        labels = scale(train_values, scaling)
    if "axis" in rows.columns:
        check_flip_axis(TrainerSettings.from_block(name, block).augmentation, rows["axis"], f"models.{name}")
    data_summary = {"split": "train", "n_subjects": int(rows["subject"].nunique()), "image_size": int(train_images.shape[-1]),
                    **(volume_geometry(grid, train_images) if grid is not None else
                       {"n_slices": int(len(train_images)), **dataset_geometry(rows, train_images)})}
    if condition_on:
        data_summary["slices_per_class"] = {str(c): int(n) for c, n in rows[condition_on].value_counts().sort_index().items()}
    held_out = None
    if block.get("validate_every") or block.get("snapshot_every"):
        test_images, test_rows = read_split("test")
        test_labels = class_indices(test_rows, condition_on, class_names) if condition_on else None
        if scaling:
            test_labels = scale(covariate_values(test_rows, covariates, where), scaling)
        held_out = (test_images, test_labels)
    result = train_model(name, block, train_images, labels, weights, losses, checkpoint_root,
                         data_files=[images, table, *getattr(train_images, "data_files", ())],
                         n_classes=len(class_names or []), covariates=scaling,
                         class_names=class_names, data_summary=data_summary, validation=held_out,
                         out_validation=validation, out_snapshots=snapshots)
    write_json(summary, result)
    return result


def volume_geometry(grid: Path, volumes) -> dict[str, Any]:
    """What a 3-D run's volumes are, for its summary and model card: their count and (X, Y, Z) shape,
    and the volume dataset's grid (shape, spacing, the voxel -> template mm affine) that a sample is
    written on as NIfTI; checked to fit the volumes."""
    from pipeline_lib.core.volumes import read_grid

    found = read_grid(grid)
    if tuple(found["shape"]) != tuple(volumes.shape[-3:]):
        raise InputError(f"{grid}: grid shape {list(found['shape'])} differs from the volumes' {list(volumes.shape[-3:])}")
    channels = [str(name) for name in found.get("channels") or ()]
    return {"n_volumes": int(len(volumes)), "size": [int(v) for v in volumes.shape[-3:]],
            **({"channel_names": channels} if len(channels) > 1 else {}),
            "grid": {"shape": [int(v) for v in found["shape"]], "affine": found["affine"].tolist(),
                     "spacing_mm": [float(v) for v in found.get("spacing_mm") or ()]}}


def class_indices(rows, column: str, class_names: list[str]) -> np.ndarray:
    """Class index of every row; a test slice of a class unseen in training is an error."""
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted(set(rows[column]) - set(index))
    if unknown:
        raise InputError(f"{column}: test slices have classes absent from the training slices: {unknown}")
    return np.array(rows[column].map(index), dtype=np.int64)  # a writable copy (torch.from_numpy warns otherwise)
