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
from pipeline_lib.core.step_timing import TIME_ONLY_BUDGET_KEYS, StepClock, device_name, read_timing, settings_key, write_timing
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

CHECKPOINT_NAME = "checkpoint.pt"
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


def save_checkpoint(path: Path, model, state: TrainState, batch_gen: torch.Generator,
                    permutation: torch.Tensor, cursor: int, *, history_bytes: int,
                    average: WeightAverage | None = None,
                    monitor: TrainingMonitor | None = None, augmenter: BatchAugmenter | None = None) -> None:
    """The resume state; ``history_bytes`` is how much of the loss history file it covers."""
    payload = {"format": CHECKPOINT_FORMAT, "training": model.training_state(), "step": state.step,
               "elapsed_s": state.elapsed_s, "history_bytes": history_bytes, "rng": _rng_state(batch_gen),
               "permutation": permutation, "cursor": cursor,
               "ema": average.state_dict() if average is not None else None,
               "monitor": monitor.state_dict() if monitor is not None else None,
               "augment": augmenter.state_dict() if augmenter is not None else None}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(plain_values(payload, "checkpoint"), tmp)


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`; any other file (an earlier layout, a foreign or
    tampered file) is an :class:`InputError` that says how to start the run over."""
    advice = (f"If an earlier version of the pipeline wrote it, delete the folder {path.parent} "
              "to train this run from the start.")
    payload = load_tensor_file(path, "training checkpoint", map_location=device, advice=advice)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise InputError(f"{path}: not a training checkpoint of format {CHECKPOINT_FORMAT!r} "
                         f"(found {found!r}). {advice}")
    return payload


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
                device: str = "auto", steps_this_call: int | None = None,
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
    family = settings.family
    hparams = family_hparams(block)
    check_known_keys(hparams, get_family(family).DEFAULTS, f"models.{name}")  # before any work
    if images.ndim not in (3, 4) or images.shape[-1] != images.shape[-2]:
        raise InputError(f"training images must be (N, S, S) or stacked (N, C, S, S), got {images.shape}")
    image_size = images.shape[-1]
    channels = channel_count(images)

    dev = select_device(device)
    if dev.type == "cpu":
        prepare_cpu_training()
    deterministic_kernels(dev)
    seed_everything(settings.seed)
    model = build_model(family, image_size, hparams, n_classes=n_classes, channels=channels).to(dev)
    if settings.channels_last and dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    model.configure_optimizers()
    model.enable_mixed_precision(settings.precision, on_cpu=settings.amp_on_cpu)
    model.deferred_losses = True  # read back per row of losses (LossWindow), not per step
    average = WeightAverage(settings.ema_decay) if settings.ema_decay is not None else None
    monitor = TrainingMonitor(
        seed=settings.seed, validate_every=settings.validate_every, snapshot_every=settings.snapshot_every,
        snapshot_images=settings.snapshot_images, validation=validation,
        validation_images=settings.validation_images, n_classes=n_classes,
        conditional=model.conditional, batch_size=model.hparams["batch_size"],
        fid_every=settings.fid_every, fid_images=settings.fid_images, fid_reference=images)
    augmentation = settings.augmentation
    augmenter = BatchAugmenter(augmentation, settings.seed) if augmentation is not None else None
    scheduled = settings.lr_schedule != "constant" or settings.lr_warmup_steps > 0
    if scheduled:
        remember_initial_lr(model.optimizers)

    batch_gen = torch.Generator().manual_seed(settings.seed)
    stream = BatchStream(len(images), model.hparams["batch_size"], batch_gen)
    state = TrainState()
    target_steps = settings.budget.target_steps(len(images), stream.batch_size)
    check_training_plan(model, settings, target_steps)
    cap_s = None if settings.budget.minutes is None else settings.budget.minutes * 60

    # Runtime keys (the checkpoint interval) and the time cap do not change what the run computes,
    # so they do not orphan its checkpoint: a run stopped by the cap continues under a larger one.
    result_block = result_part(block, TrainerSettings)
    run_key = settings_key(result_block)
    result_block["budget"] = {k: v for k, v in dict(block["budget"]).items() if k not in TIME_ONLY_BUDGET_KEYS}
    run_dir = Path(checkpoint_root) / fingerprint(result_block, list(data_files))
    ckpt_path = run_dir / CHECKPOINT_NAME
    history = LossHistory(run_dir)
    if ckpt_path.exists():
        payload = load_checkpoint(ckpt_path, dev)
        model.load_training_state(payload["training"])
        rows = history.resume(payload["history_bytes"], payload["step"],
                              f"Delete the folder {run_dir} to train this run from the start.")
        state = TrainState(payload["step"], payload["elapsed_s"], rows)
        _set_rng_state(payload["rng"], batch_gen)
        stream.permutation, stream.cursor = payload["permutation"], payload["cursor"]
        if average is not None and payload.get("ema") is not None:
            average.load_state_dict(payload["ema"])
        if payload.get("monitor") is not None:
            monitor.load_state_dict(payload["monitor"])
            monitor.resume_at(state.step)
        if augmenter is not None and payload.get("augment") is not None:
            augmenter.load_state_dict(payload["augment"])
        log.info("resumed %s from %s at step %d", name, ckpt_path, state.step)
    else:
        state.losses = history.start()

    window = LossWindow()  # the losses since the last row; rows (and so checkpoints) end windows
    board = TrainingBoard(out_losses.parent / BOARD_FOLDER, state.step) if settings.tensorboard else None

    def capped() -> bool:
        return cap_s is not None and state.elapsed_s >= cap_s

    def budget_left() -> bool:
        return state.step < target_steps and not (capped() and window.empty)

    # the speed beside the checkpoints, for the next attempt's time limit (core/step_timing.py)
    clock, timing = StepClock(state.step), read_timing(checkpoint_root)

    def checkpoint() -> None:
        nonlocal timing
        save_checkpoint(ckpt_path, model, state, batch_gen, stream.permutation, stream.cursor,
                        history_bytes=history.commit(), average=average, monitor=monitor, augmenter=augmenter)
        timing = write_timing(checkpoint_root, clock, timing, steps_done=state.step, target_steps=target_steps,
                              device=device_name(dev), fingerprint=run_dir.name, settings=run_key)

    progress = ProgressLine(name, target_steps,
                            settings.budget.minutes * 60 if settings.budget.minutes else None,
                            settings.progress_every_steps, settings.progress_every_seconds)
    live_losses = LiveLossTable(out_losses, state.losses)
    batches = iter(batch_loader(stream, images, labels, seed=settings.seed, device=dev,
                                workers=settings.loader_workers, prefetch=settings.loader_prefetch))
    shown = {k: v for k, v in state.losses[-1].items() if k != "step"} if state.losses else {}
    checkpoint_due = False
    started = time.monotonic() - state.elapsed_s
    first_step = state.step
    progress.start(state.step)
    try:
        while budget_left():
            if steps_this_call is not None and state.step - first_step >= steps_this_call and window.empty:
                checkpoint()
                return None
            x, y = take(batches, stream)
            x = x.to(dev, non_blocking=True)
            if augmenter is not None:  # the training batch only: validation and samples never pass here
                x = augmenter(x)
            if settings.channels_last and dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(dev, non_blocking=True) if y is not None else None
            if scheduled:
                stage_step, stage_steps = model.schedule_position(state.step + 1, target_steps)
                set_lr_factor(model.optimizers, lr_factor(stage_step, settings.lr_schedule,
                                                          settings.lr_warmup_steps, stage_steps))
            window.add(model.training_step(x, y))
            if average is not None:
                average.update(model)
            state.step += 1
            state.elapsed_s = time.monotonic() - started
            if state.step % settings.log_every == 0 or state.step >= target_steps:
                state.losses.append(window.row(state.step))
                history.append(state.losses[-1])
                clock.synced(state.step, time.monotonic())  # reading the row's losses waited for the device
                live_losses.append(state.losses[-1])
                shown = {k: v for k, v in state.losses[-1].items() if k != "step"}
                if board is not None:
                    board.losses(state.losses[-1])
            validated = monitor.after_step(state.step, model, average, final=not budget_left())
            if board is not None:
                board.validation(validated)
                if monitor.snapshots and monitor.snapshots[-1][0] == state.step:
                    board.snapshot(*monitor.snapshots[-1])
            progress.update(state.step, state.elapsed_s, shown)
            # A checkpoint waits for the end of a losses window: the window's sums are not in it.
            checkpoint_due |= state.step % settings.checkpoint_every == 0
            if checkpoint_due and window.empty:
                checkpoint()
                live_losses.flush()
                checkpoint_due = False
        if state.step > first_step:  # the last line of the log shows where training ended
            progress.update(state.step, state.elapsed_s, shown, force=True)
    finally:
        live_losses.close()
        history.close()
        if board is not None:
            board.close()

    bad = [row for row in state.losses if not all(np.isfinite(v) for v in row.values())]
    if bad:
        raise RuntimeError(f"model {name}: non-finite loss at step {bad[0]['step']}: {bad[0]}")

    incomplete = state.step < target_steps
    config = result_part(block, TrainerSettings)
    summary = {"model": name, "family": family, "hparams": model.hparams, "seed": settings.seed, "config": config,
               "steps": state.step, "target_steps": target_steps, "incomplete": incomplete,
               "budget": {k: v for k, v in vars(settings.budget).items() if v is not None},
               "train_seconds": round(state.elapsed_s, 2), "device": str(dev),
               "n_train_images": int(len(images)), "image_size": image_size, "channels": channels,
               "n_classes": n_classes, "class_names": class_names or [],
               "training_data": dict(data_summary or {"n_slices": int(len(images))})}
    if incomplete:
        # Kept so that a rerun with a larger cap continues this run instead of starting over.
        checkpoint()
        log.warning("INCOMPLETE: %s stopped by the safety cap budget.minutes = %g at step %d of %d; "
                    "its results depend on this machine's speed. Raise the cap (or lower the steps) "
                    "and rerun to continue it from step %d.", name, settings.budget.minutes, state.step,
                    target_steps, state.step)
    sample_ema = average is not None and settings.sample_from_ema
    summary["training_aids"] = training_aids_summary(settings, model, sample_ema)
    if hasattr(model, "perceptual_summary"):  # which feature network a perceptual loss used, for the report
        summary["perceptual"] = model.perceptual_summary()
    with atomic_path(out_weights, suffix=".pt") as tmp:
        torch.save(plain_values({"state_dict": model.state_dict(), "summary": summary,
                                 "ema": average.state_dict()["shadow"] if sample_ema else None}, "weights"), tmp)
    write_losses_csv(out_losses, state.losses)
    monitor.write(out_validation, out_snapshots)
    if not incomplete:
        # The final weights are the durable result; the resume state is no longer needed.
        shutil.rmtree(run_dir, ignore_errors=True)
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
                        channels=int(s.get("channels", 1)))
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
              train_split: tuple | None = None) -> dict:
    """The train rule: train on the train split and write weights, losses and a summary (plus the
    validation table and snapshots, empty when those are off); the test split serves validation.
    ``train_split`` (images, their real table rows), when given, replaces the split read from
    images.npy: the on-the-fly augmented split of imaging/augmentation.py, whose ``data_files``
    join the checkpoint's fingerprint."""
    from pipeline_lib.core.io import write_json
    from pipeline_lib.core.runtime import configure_threads
    from pipeline_lib.core.slices import open_split

    configure_threads(threads)
    # real + augmented, read batch by batch: memory does not grow with the split
    train_images, rows = train_split or open_split(images, table, "train", augmented=True)
    labels, class_names = None, None
    condition_on = block.get("condition_on")
    if condition_on:
        if condition_on not in rows.columns:
            raise InputError(f"models.{name}.condition_on: the slice table has no column '{condition_on}'")
        class_names = sorted(rows[condition_on].unique())
        labels = class_indices(rows, condition_on, class_names)
    if "axis" in rows.columns:
        check_flip_axis(TrainerSettings.from_block(name, block).augmentation, rows["axis"], f"models.{name}")
    data_summary = {"split": "train", "n_slices": int(len(train_images)), "n_subjects": int(rows["subject"].nunique()),
                    "image_size": int(train_images.shape[-1]), **dataset_geometry(rows, train_images)}
    if condition_on:
        data_summary["slices_per_class"] = {str(c): int(n) for c, n in rows[condition_on].value_counts().sort_index().items()}
    held_out = None
    if block.get("validate_every") or block.get("snapshot_every"):
        test_images, test_rows = open_split(images, table, "test")
        test_labels = class_indices(test_rows, condition_on, class_names) if condition_on else None
        held_out = (test_images, test_labels)
    result = train_model(name, block, train_images, labels, weights, losses, checkpoint_root,
                         data_files=[images, table, *getattr(train_images, "data_files", ())],
                         n_classes=len(class_names or []),
                         class_names=class_names, data_summary=data_summary, validation=held_out,
                         out_validation=validation, out_snapshots=snapshots)
    write_json(summary, result)
    return result


def class_indices(rows, column: str, class_names: list[str]) -> np.ndarray:
    """Class index of every row; a test slice of a class unseen in training is an error."""
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted(set(rows[column]) - set(index))
    if unknown:
        raise InputError(f"{column}: test slices have classes absent from the training slices: {unknown}")
    return np.array(rows[column].map(index), dtype=np.int64)  # a writable copy (torch.from_numpy warns otherwise)
