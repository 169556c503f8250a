"""Settings of stage 2: a model's trainer keys (its block's other keys are the family's
hyperparameters), the budget, the seeds every model shares, and sampling."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Mapping

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings.base import (check_known_keys, one_of, optional_min, positive_int, positive_number,
                                             read_settings, runtime, section_block, workflow)


@dataclass(frozen=True)
class Budget:
    """How long a model trains. ``steps`` or ``epochs`` decide the result; ``minutes`` is only a
    safety cap: a run it stops is marked incomplete (its result then depends on the machine)."""

    steps: int | None = None
    epochs: int | None = None
    minutes: float | None = None
    #: The user's estimate of the training speed (e.g. from bench/train_throughput.py on their GPU):
    #: only the cluster time limit uses it (core/resources.train_time_limit), never the result.
    seconds_per_step: float | None = None

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            if self.steps is None and self.minutes is not None:
                raise InputError("budget.minutes is only a safety cap; set budget.steps or budget.epochs "
                                 "so that results do not depend on the machine's speed")
            raise InputError("budget needs 'steps' or 'epochs' (one of them)")
        if self.steps is not None:
            positive_int("budget.steps", self.steps)
        if self.epochs is not None:
            positive_int("budget.epochs", self.epochs)
        if self.minutes is not None:
            positive_number("budget.minutes", self.minutes)
        if self.seconds_per_step is not None:
            positive_number("budget.seconds_per_step", self.seconds_per_step)

    def target_steps(self, n_images: int, batch_size: int) -> int:
        """Optimisation steps of the run; an epoch is every full batch of the shuffled training set
        (the trainer's batch stream drops the remainder)."""
        if self.steps is not None:
            return self.steps
        return self.epochs * max(1, n_images // max(1, min(batch_size, n_images)))


#: Learning-rate schedules of the trainer (models/schedule.py); a linear warm-up combines with either.
LR_SCHEDULES = ("constant", "cosine")
#: Values of a model's ``amp``: false (float32), true (= fp16, as before bf16 existed), bf16, fp16.
AMP_MODES = (False, True, "bf16", "fp16")

#: Keys of a model's ``augment`` block (models/augment.py), each 0 = off: the probability of a
#: left-right flip, and the ranges of the random affine (rotation in degrees, translation in pixels,
#: zoom factor in [1 - scale, 1 + scale]), with the largest value each may take.
AUGMENT_LIMITS = {"flip_lr": 1.0, "rotate_deg": 180.0, "translate_px": None, "scale": 0.5}


def augment_settings(block: Any) -> dict[str, float] | None:
    """The checked ``augment`` block with every key filled (0 = off); None when null or all off."""
    if block is None:
        return None
    if not isinstance(block, Mapping):
        raise InputError(f"augment must be a mapping of {', '.join(AUGMENT_LIMITS)} or null, got {block!r}")
    check_known_keys(block, AUGMENT_LIMITS, "augment")
    out = {}
    for key, limit in AUGMENT_LIMITS.items():
        value = block.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0 or (limit is not None and value > limit):
            bound = f"in [0, {limit:g}]" if limit is not None else "≥ 0"
            raise InputError(f"augment.{key} must be a number {bound}, got {value!r}")
        out[key] = float(value)
    return out if any(out.values()) else None


@dataclass(frozen=True)
class TrainerSettings:
    """The trainer's keys of a ``models.<name>`` block; every other key is a family hyperparameter.

    ``seed`` is the seed of one training run; in the workflow it comes from ``seeds`` (one job
    per seed; null = ``training.seeds``), so a config block sets ``seeds``, never ``seed``.
    """

    PATH: ClassVar[str] = "models.<name>"
    family: str
    budget: Budget
    # false keeps the block (validated, in the provenance) but runs none of the model's jobs, e.g. a
    # demo override switching off most of a preset's models (merged config files cannot delete keys).
    enabled: bool = workflow(True)
    checkpoint_every: int = runtime(100)
    seed: int = 0
    seeds: tuple[int, ...] | None = workflow(None)
    # Mixed precision on CUDA: false, bf16, or fp16 (with gradient scaling; true = fp16). A no-op
    # on the CPU unless amp_on_cpu (bf16 only), so a GPU setting leaves CPU results unchanged.
    amp: bool | str = False
    amp_on_cpu: bool = False
    channels_last: bool = False
    # Losses are averaged over log_every steps on the device and read back (one host sync) when a
    # row of losses.csv is written; 1 writes every step's losses, as before.
    log_every: int = 1
    condition_on: str | None = None
    # Numeric columns of a volume dataset's table (e.g. [age, brain_volume_ml]) a 3-D diffusion model
    # conditions on, each scaled to [0, 1] over the training split (core/covariates.py); null = none.
    condition_on_covariates: tuple[str, ...] | None = None
    # The slice dataset (a ``datasets:`` name) the model trains on; null = the first. Its slices are
    # the run's inputs, so changing it reruns the run without being a param.
    dataset: str | None = workflow(None)
    # Training aids (models/ema.py, models/schedule.py) and what the run records as it goes
    # (models/monitor.py): every key is off by default, so the published recipes are unchanged.
    ema_decay: float | None = None
    sample_from_ema: bool = True
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    validate_every: int | None = None
    validation_images: int | None = 256
    snapshot_every: int | None = None
    snapshot_images: int = 8
    fid_every: int | None = None
    fid_images: int = 256
    # On-the-fly augmentation of each training batch (models/augment.py), e.g.
    # {flip_lr: 0.5, rotate_deg: 5, translate_px: 2, scale: 0.05}; null = none.
    augment: Mapping[str, Any] | None = None
    progress_every_steps: int | None = runtime(None)
    progress_every_seconds: float | None = runtime(30.0)
    # How batches are read (models/loader.py): worker processes (0 = the training process) and the
    # batches each worker reads ahead. The order is the seed's either way.
    loader_workers: int = runtime(0)
    loader_prefetch: int = runtime(2)
    # TensorBoard event files beside losses.csv (models/tensorboard.py); watching only.
    tensorboard: bool = runtime(False)

    def __post_init__(self) -> None:
        if isinstance(self.budget, Mapping):
            check_known_keys(self.budget, ("steps", "epochs", "minutes", "seconds_per_step"), "budget")
            object.__setattr__(self, "budget", Budget(**self.budget))
        positive_int("checkpoint_every", self.checkpoint_every)
        if not isinstance(self.enabled, bool):
            raise InputError(f"enabled must be true or false, got {self.enabled!r}")
        if self.seeds is not None:
            object.__setattr__(self, "seeds", _seed_list("seeds", self.seeds))
        if self.condition_on_covariates is not None:
            names = self.condition_on_covariates
            if (not isinstance(names, (list, tuple)) or not names
                    or any(not isinstance(v, str) or not v for v in names) or len(set(names)) != len(names)):
                raise InputError(f"condition_on_covariates must be null or a list of distinct column names, "
                                 f"got {names!r}")
            if self.condition_on:
                raise InputError(f"condition_on ({self.condition_on!r}) and condition_on_covariates: a model "
                                 "conditions on class labels or on covariates, not both")
            object.__setattr__(self, "condition_on_covariates", tuple(names))
        if self.ema_decay is not None and (isinstance(self.ema_decay, bool) or not 0 < self.ema_decay < 1):
            raise InputError(f"ema_decay must be null or a number strictly between 0 and 1, got {self.ema_decay!r}")
        one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if isinstance(self.lr_warmup_steps, bool) or not isinstance(self.lr_warmup_steps, int) \
                or self.lr_warmup_steps < 0:
            raise InputError(f"lr_warmup_steps must be an integer >= 0, got {self.lr_warmup_steps!r}")
        for key in ("validate_every", "snapshot_every", "fid_every", "progress_every_steps"):
            optional_min(key, getattr(self, key), 1)
        optional_min("validation_images", self.validation_images, 1)
        positive_int("snapshot_images", self.snapshot_images)
        optional_min("fid_images", self.fid_images, 2)
        if self.progress_every_seconds is not None:
            positive_number("progress_every_seconds", self.progress_every_seconds)
        augment_settings(self.augment)  # errors name augment.<key>
        if not (isinstance(self.amp, bool) or self.amp in AMP_MODES):
            raise InputError(f"amp must be false, bf16 or fp16 (true = fp16), not {self.amp!r}")
        if self.amp_on_cpu and self.precision == "fp16":
            raise InputError("amp_on_cpu: the CPU autocasts to bf16 only; set amp: bf16")
        positive_int("log_every", self.log_every)
        if isinstance(self.loader_workers, bool) or not isinstance(self.loader_workers, int) or self.loader_workers < 0:
            raise InputError(f"loader_workers must be an integer ≥ 0, got {self.loader_workers!r}")
        positive_int("loader_prefetch", self.loader_prefetch)
        if not isinstance(self.tensorboard, bool):
            raise InputError(f"tensorboard must be true or false, got {self.tensorboard!r}")

    @property
    def precision(self) -> str | None:
        """The autocast dtype's name (``bf16``, ``fp16``), None for float32."""
        return "fp16" if self.amp is True else (self.amp or None)

    @property
    def augmentation(self) -> dict[str, float] | None:
        """``augment`` with every key filled (0 = off); None when null or every key is 0."""
        return augment_settings(self.augment)

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def from_block(cls, name: str, block: Mapping[str, Any]) -> "TrainerSettings":
        where = f"models.{name}"
        if "budget" not in block:
            raise InputError(f"{where}.budget is required (steps or epochs, optionally a minutes cap)")
        return read_settings(cls, {k: v for k, v in block.items() if k in cls.keys()}, where)


@dataclass(frozen=True)
class TrainingSettings:
    """``training``: what every model's training shares."""

    PATH: ClassVar[str] = "training"
    seeds: tuple[int, ...] = workflow((0,))

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", _seed_list("seeds", self.seeds))


def _seed_list(where: str, seeds: Any) -> tuple[int, ...]:
    if (not isinstance(seeds, (list, tuple)) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise InputError(f"{where} must be a non-empty list of integers ≥ 0, not {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"{where} lists a seed twice: {list(seeds)}")
    return tuple(seeds)


def enabled_models(config: Mapping[str, Any]) -> list[str]:
    """The models the workflow runs, sorted: every ``models`` block without ``enabled: false``."""
    return sorted(name for name, block in (config.get("models") or {}).items()
                  if (block or {}).get("enabled", True) is not False)


def model_seeds(config: Mapping[str, Any], model: str) -> tuple[int, ...]:
    """The seeds ``model`` is trained with: its own ``seeds``, else ``training.seeds``."""
    block = config["models"][model]
    if "seed" in block:
        raise InputError(f"models.{model}.seed: set models.{model}.seeds (or training.seeds) instead; "
                         "the workflow trains one job per seed")
    own = block.get("seeds")
    if own is not None:
        return _seed_list(f"models.{model}.seeds", own)
    return read_settings(TrainingSettings, section_block(config, "training")).seeds


def family_hparams(block: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a model's config block that goes to the family's constructor."""
    return {k: v for k, v in block.items() if k not in TrainerSettings.keys()}


@dataclass(frozen=True)
class SamplingSettings:
    """``sampling``: samples drawn from every model."""

    PATH: ClassVar[str] = "sampling"
    n: int = 1000
    n_per_class: int | None = None
    seed: int = 0
    n_reconstruct: int = 1000
