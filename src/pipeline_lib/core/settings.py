"""One way to read the configuration: a typed, frozen dataclass per config section.

``workflow/schemas/config.schema.yaml`` validates the whole config and fills in
defaults before any rule runs; each section's dataclass here mirrors its part of
the schema (same keys, same defaults: ``tests/test_settings.py`` checks both),
so library code called outside the workflow (tests, benchmarks, the CLI) gets
the same defaults and the same checks. :func:`read_settings` is the only way a
job turns a config block into settings.

Every field is one of four kinds, declared here and nowhere else:

* a result key (the default): changing it changes what the stage computes, so
  it is part of the rule's ``params`` and Snakemake reruns the job;
* ``runtime``: how the job runs (device, batch size of a forward pass, memory
  layout, checkpoint interval), not what it computes; left out of ``params``;
* ``scoring`` (reader study only): changes the scoring of the readers'
  answers, not the kit they answer, so the kit is not rebuilt (and reshuffled);
* ``workflow``: decides which jobs exist (the training seeds), not what one job
  computes; left out of ``params`` so that adding a seed reruns no existing job.

A model's config block holds :class:`TrainerSettings` keys plus its family's
hyperparameters; those are the family's ``DEFAULTS`` (published values, listed
in each family module), checked with :func:`check_known_keys` like every section.

Nothing here imports numpy or torch: Snakemake builds the DAG with it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Iterable, Mapping, TypeVar

from pipeline_lib.core.errors import InputError

RESULT, RUNTIME, SCORING, WORKFLOW = "result", "runtime", "scoring", "workflow"
S = TypeVar("S")


def runtime(default: Any) -> Any:
    """A field that changes how a job runs, not what it computes."""
    return field(default=default, metadata={"kind": RUNTIME})


def workflow(default: Any) -> Any:
    """A field that decides which jobs exist (e.g. the seeds), not what one job computes."""
    return field(default=default, metadata={"kind": WORKFLOW})


def scoring(default: Any) -> Any:
    """A reader-study field that changes the scoring, not the kit."""
    return field(default=default, metadata={"kind": SCORING})


def field_kind(f: dataclasses.Field) -> str:
    return f.metadata.get("kind", RESULT)


def check_known_keys(given: Iterable[str], known: Iterable[str], where: str) -> None:
    """InputError naming ``where.<key>`` for every key of ``given`` that is not ``known``."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        keys = ", ".join(f"{where}.{key}" for key in unknown)
        raise InputError(f"{keys}: unknown key{'s' if len(unknown) > 1 else ''} "
                         f"(known: {', '.join(sorted(known))})")


def read_settings(cls: type[S], block: Mapping[str, Any] | S | None, where: str | None = None) -> S:
    """The typed settings of one config block (``None`` = every default).

    An instance of ``cls`` is returned as it is. Unknown keys and invalid values
    raise InputError naming the config key (``where``, default ``cls.PATH``).
    """
    if isinstance(block, cls):
        return block
    where = where or getattr(cls, "PATH", cls.__name__)
    block = dict(block or {})
    check_known_keys(block, (f.name for f in fields(cls)), where)
    try:
        return cls(**block)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc
    except TypeError as exc:  # a value of the wrong kind met a comparison in a check
        raise InputError(f"{where}: {exc}") from exc


def keys_of_kind(cls: type, *kinds: str) -> list[str]:
    return [f.name for f in fields(cls) if field_kind(f) in kinds]


def section_block(config: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The config block at a dotted ``path`` (e.g. ``evaluation.fid``), {} when absent."""
    block: Any = config
    for part in path.split("."):
        block = (block or {}).get(part) if isinstance(block, Mapping) else None
    return dict(block or {})


def block_part(block: Mapping[str, Any], cls: type, *kinds: str) -> dict[str, Any]:
    """The entries of ``block`` whose fields in ``cls`` are of one of ``kinds``."""
    wanted = set(keys_of_kind(cls, *kinds))
    return {key: value for key, value in block.items() if key in wanted}


# ----------------------------------------------------------------- checks


def _positive_int(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{where} must be a positive integer, got {value!r}")


def _positive_number(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise InputError(f"{where} must be a positive number, got {value!r}")


def _optional_min(where: str, value: Any, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise InputError(f"{where} must be an integer ≥ {minimum} or null, got {value!r}")


def _one_of(where: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise InputError(f"{where} must be one of {', '.join(map(str, choices))}, not {value!r}")


# ----------------------------------------------------------------- input and preprocessing


@dataclass(frozen=True)
class DemoSettings:
    """``demo``: the synthetic phantom cohort."""

    PATH: ClassVar[str] = "demo"
    n_subjects: int = 12
    seed: int = 0
    resolution_mm: int = 2
    n_scanners: int = 2
    dicom_fraction: float = 0.5


LAYOUTS = ("auto", "brats", "ixi", "bids", "pattern", "dicom_study")
SERIES_RULE_KEYS = ("sequence", "series_description", "protocol_name", "image_type", "b_value")
# A sequence name becomes part of file names under results/ and private/staging/
SEQUENCE_NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"


def layout_pattern(pattern: str | None) -> re.Pattern:
    """``input.pattern`` compiled: a regular expression with at least the named group ``subject``."""
    if not pattern:
        raise InputError("input.pattern: layout pattern needs a regular expression with named groups "
                         "(at least 'subject')")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise InputError(f"input.pattern: not a valid regular expression ({exc})") from None
    if "subject" not in compiled.groupindex:
        raise InputError("input.pattern: needs a named group 'subject', e.g. (?P<subject>[^/]+)")
    return compiled


@dataclass(frozen=True)
class InputSettings:
    """``input``: where the MRI comes from and how its folder is laid out (read by discovery)."""

    PATH: ClassVar[str] = "input"
    source: str = "demo"
    layout: str = "auto"
    pattern: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    series: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        _one_of("layout", self.layout, LAYOUTS)
        object.__setattr__(self, "series", tuple(dict(rule) for rule in self.series))
        if self.layout == "pattern":
            layout_pattern(self.pattern)
        if self.layout == "dicom_study" and not self.series:
            raise InputError("series: layout dicom_study needs at least one series rule "
                             "({sequence: t1, series_description: '(?i)t1'})")
        for index, rule in enumerate(self.series):
            where = f"series[{index}]"
            unknown = sorted(set(rule) - set(SERIES_RULE_KEYS))
            if unknown:
                raise InputError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(SERIES_RULE_KEYS)})")
            if not re.match(SEQUENCE_NAME, str(rule.get("sequence", ""))):
                raise InputError(f"{where}.sequence: {rule.get('sequence')!r} must be a short lower-case name "
                                 "(letters, digits, '_' or '-'), e.g. t1 or dwi")
            if not (rule.get("series_description") or rule.get("protocol_name")):
                raise InputError(f"{where}: needs series_description or protocol_name (a regular expression)")
            for key in ("series_description", "protocol_name", "image_type"):
                if rule.get(key):
                    try:
                        re.compile(rule[key])
                    except re.error as exc:
                        raise InputError(f"{where}.{key}: not a valid regular expression ({exc})") from None
        for key in self.labels:
            if not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", str(key)):
                raise InputError(f"labels.{key}: label names are letters, digits and '_', starting with a letter")


BRAIN_EXTRACTORS = ("none", "deepbet", "robex", "bet")
TRANSFORMS = ("none", "Rigid", "Affine", "SyN")
BRAIN_OR_HEAD = ("brain", "head")


@dataclass(frozen=True)
class PreprocessingSettings:
    """``preprocessing``: what happens to an ingested volume before registration."""

    PATH: ClassVar[str] = "preprocessing"
    brain_extraction: str = "deepbet"
    deepbet_models: str | None = None

    def __post_init__(self) -> None:
        _one_of("brain_extraction", self.brain_extraction, BRAIN_EXTRACTORS)


@dataclass(frozen=True)
class IngestSettings:
    """``ingest``: what an input must be to be ingested (checked before anything is read)."""

    PATH: ClassVar[str] = "ingest"
    max_voxels: int = 64_000_000
    min_voxel_mm: float = 0.1
    max_voxel_mm: float = 10.0
    modalities: tuple[str, ...] = ("MR",)

    def __post_init__(self) -> None:
        _positive_int("max_voxels", self.max_voxels)
        _positive_number("min_voxel_mm", self.min_voxel_mm)
        _positive_number("max_voxel_mm", self.max_voxel_mm)
        if self.min_voxel_mm >= self.max_voxel_mm:
            raise InputError(f"min_voxel_mm ({self.min_voxel_mm}) must be below max_voxel_mm ({self.max_voxel_mm})")
        if (not isinstance(self.modalities, (list, tuple)) or not self.modalities
                or not all(isinstance(m, str) and m for m in self.modalities)):
            raise InputError(f"modalities must be a non-empty list of DICOM modality codes, not {self.modalities!r}")
        object.__setattr__(self, "modalities", tuple(self.modalities))


@dataclass(frozen=True)
class RegistrationSettings:
    """``registration``: ANTs registration to the template, and the QC gate on its result."""

    PATH: ClassVar[str] = "registration"
    template: str | None = None
    template_mask: str | None = None
    match: str = "brain"
    output: str = "brain"
    transform: str = "Affine"
    grid: tuple[int, int, int] = (128, 128, 40)
    seed: int = 0
    min_mask_dice: float = 0.85
    scale_range: tuple[float, float] = (0.8, 1.25)
    max_shear: float = 0.15
    min_correlation: float = 0.5
    # What slicing does with flagged subjects: it does not change the register job's outputs (a
    # runtime key there), and slice_dataset takes it as a param of its own, so changing it reslices
    # without re-registering 2,000 subjects.
    on_poor_fit: str = runtime("exclude")
    # Multi-sequence subjects: the sequence the transform is estimated on (null: the first of
    # discovery's stated order, t1 first); the others go through the same transform.
    reference_sequence: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", tuple(self.grid))
        object.__setattr__(self, "scale_range", tuple(self.scale_range))
        if len(self.grid) != 3 or not all(isinstance(v, int) and v >= 8 for v in self.grid):
            raise InputError(f"grid must be three integers ≥ 8, got {list(self.grid)}")
        _one_of("transform", self.transform, TRANSFORMS)
        _one_of("match", self.match, BRAIN_OR_HEAD)
        _one_of("output", self.output, BRAIN_OR_HEAD)
        _one_of("on_poor_fit", self.on_poor_fit, ("exclude", "keep"))
        if self.match == "head" and (self.template is None or self.template_mask is None):
            raise InputError("match: head registers the whole head to a template with skull: set "
                             "registration.template to such a template and registration.template_mask "
                             "to its brain mask (the packaged MNI152 template is brain-only)")
        numbers = [v for v in self.scale_range if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) != 2 or len(self.scale_range) != 2 or not 0 < numbers[0] <= 1 <= numbers[1]:
            raise InputError(f"scale_range must be [low, high] with 0 < low ≤ 1 ≤ high, got {list(self.scale_range)}")
        for name in ("min_mask_dice", "min_correlation"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise InputError(f"{name} must lie in [0, 1], got {value!r}")
        if isinstance(self.max_shear, bool) or not isinstance(self.max_shear, (int, float)) or self.max_shear < 0:
            raise InputError(f"max_shear must be a number ≥ 0, got {self.max_shear!r}")


@dataclass(frozen=True)
class SlicingSettings:
    """``slicing``: registered volumes to a 2-D slice dataset (Ungría Hirte et al.'s protocol)."""

    PATH: ClassVar[str] = "slicing"
    drop_top: int = 6
    drop_bottom: int = 8
    clip_percentile: float = 95
    image_size: int = 128
    test_fraction: float = 0.2
    split_seed: int = 0


#: Slicing axes, selection modes and fit policies (imaging/slice_geometry.py implements them).
SLICE_AXES = ("axial", "coronal", "sagittal")
FIT_POLICIES = ("resize", "pad", "crop")
#: Each selection mode and the keys it takes besides ``mode`` (the required ones first).
SELECTION_KEYS = {"all": ((), ()), "drop": ((), ("low", "high")), "range": (("first", "last"), ()),
                  "central": (("n",), ()), "offsets_mm": (("level_mm", "offsets_mm"), ())}
AUGMENTATION_KEYS = ("count", "max_rotation_deg", "step_deg", "offsets_mm", "flip", "seed", "level_mm", "mode")
#: The dataset built when the config has no ``datasets:`` section (from ``slicing:``).
DEFAULT_DATASET = "default"


def _seed_001_selection() -> dict[str, Any]:
    return {"mode": "drop", "low": 8, "high": 6}


@dataclass(frozen=True)
class DatasetSettings:
    """``datasets.<name>``: one 2-D slice dataset cut from the registered volumes.

    ``filters`` keep the volumes whose label (a column of subjects.tsv, or ``sequence``) has one of
    the given values; ``axis``, ``selection``, ``size`` (height, width) and ``fit`` say which slices
    and at which size (imaging/slice_geometry.py); ``clip_percentile`` is seed 001's normalisation;
    ``test_fraction`` and ``split_seed`` split the cohort's subjects (before filtering, so the same
    subjects are test in every dataset); ``augmentation`` adds Kazuhiro et al.'s offline 3-D
    augmented images of training subjects (imaging/augmentation.py), null = none; ``channels``
    (null = one grey image per volume) lists two or more sequences stacked as the channels of each
    image, in that order (imaging/slicing.py).
    """

    PATH: ClassVar[str] = "datasets.<name>"
    filters: Mapping[str, Any] = field(default_factory=dict)
    axis: str = "axial"
    selection: Mapping[str, Any] = field(default_factory=_seed_001_selection)
    size: tuple[int, int] = (128, 128)
    fit: str = "resize"
    clip_percentile: float = 95
    test_fraction: float = 0.2
    split_seed: int = 0
    augmentation: Mapping[str, Any] | None = None
    channels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.filters, Mapping):
            raise InputError(f"filters must map label columns to a value or a list of values, not {self.filters!r}")
        filters = {}
        for column, values in self.filters.items():
            values = list(values) if isinstance(values, (list, tuple)) else [values]
            if not values or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
                raise InputError(f"filters.{column} must be a value or a non-empty list of values, not {values!r}")
            filters[str(column)] = tuple(str(v) for v in values)
        object.__setattr__(self, "filters", filters)
        _one_of("axis", self.axis, SLICE_AXES)
        _one_of("fit", self.fit, FIT_POLICIES)
        object.__setattr__(self, "selection", _check_selection(self.selection))
        if (not isinstance(self.size, (list, tuple)) or len(self.size) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in self.size)):
            raise InputError(f"size must be [height, width] in pixels, not {self.size!r}")
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        if (isinstance(self.clip_percentile, bool) or not isinstance(self.clip_percentile, (int, float))
                or not 0 < self.clip_percentile <= 100):
            raise InputError(f"clip_percentile must lie in (0, 100], got {self.clip_percentile!r}")
        if isinstance(self.test_fraction, bool) or not isinstance(self.test_fraction, (int, float)) \
                or not 0 < self.test_fraction < 1:
            raise InputError(f"test_fraction must lie strictly between 0 and 1, got {self.test_fraction!r}")
        if self.augmentation is not None:
            if not isinstance(self.augmentation, Mapping):
                raise InputError(f"augmentation must be a mapping or null, not {self.augmentation!r}")
            check_known_keys(self.augmentation, AUGMENTATION_KEYS, "augmentation")
            object.__setattr__(self, "augmentation", dict(self.augmentation))
        if self.channels is not None:
            object.__setattr__(self, "channels", _check_channels(self.channels, self.filters))

    @property
    def square(self) -> bool:
        return self.size[0] == self.size[1]


def _check_channels(channels: Any, filters: Mapping[str, Any]) -> tuple[str, ...]:
    """``channels``: two or more distinct sequence names (no "+", which joins them in slices.tsv)."""
    if (not isinstance(channels, (list, tuple)) or len(channels) < 2
            or not all(isinstance(c, str) and c and "+" not in c for c in channels)):
        raise InputError(f"channels must be null or a list of two or more sequence names (without '+'), "
                         f"not {channels!r}")
    repeated = sorted({c for c in channels if list(channels).count(c) > 1})
    if repeated:
        raise InputError(f"channels lists sequence(s) more than once: {', '.join(repeated)}")
    if "sequence" in filters:
        raise InputError(f"channels {list(channels)} and filters.sequence {list(filters['sequence'])} are both "
                         "set; a stacked dataset takes every listed sequence of a subject, so drop "
                         "filters.sequence (channels already names the sequences)")
    return tuple(channels)


def _check_selection(selection: Any) -> dict[str, Any]:
    if not isinstance(selection, Mapping) or "mode" not in selection:
        raise InputError(f"selection must be a mapping with a mode ({', '.join(SELECTION_KEYS)}), not {selection!r}")
    mode = selection["mode"]
    _one_of("selection.mode", mode, SELECTION_KEYS)
    required, optional = SELECTION_KEYS[mode]
    check_known_keys(selection, ("mode", *required, *optional), "selection")
    missing = [key for key in required if key not in selection]
    if missing:
        raise InputError(f"selection mode {mode} needs {', '.join(f'selection.{k}' for k in missing)}")
    out = dict(selection)
    if mode == "drop":
        out = {"mode": "drop", "low": selection.get("low", 0), "high": selection.get("high", 0)}
    for key in ("low", "high", "first", "last", "n"):
        if key in out and (isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 0):
            raise InputError(f"selection.{key} must be an integer ≥ 0, got {out[key]!r}")
    if mode == "range" and out["first"] > out["last"]:
        raise InputError(f"selection.first ({out['first']}) must not exceed selection.last ({out['last']})")
    if mode == "central" and out["n"] < 1:
        raise InputError("selection.n must be at least 1")
    if mode == "offsets_mm":
        offsets = out["offsets_mm"]
        if not isinstance(offsets, (list, tuple)) or not offsets:
            raise InputError(f"selection.offsets_mm must be a non-empty list of mm, not {offsets!r}")
        out["offsets_mm"] = [float(v) for v in offsets]
        out["level_mm"] = float(out["level_mm"])
    return out


def dataset_blocks(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Dataset name -> its config block: ``datasets:``, or without it one dataset ``default`` built
    from ``slicing:`` exactly as slicing always did (seed 001's axial protocol)."""
    datasets = config.get("datasets")
    if datasets:
        return {str(name): dict(block or {}) for name, block in datasets.items()}
    slicing = read_settings(SlicingSettings, section_block(config, "slicing"))
    return {DEFAULT_DATASET: {
        "axis": "axial",
        "selection": {"mode": "drop", "low": slicing.drop_bottom, "high": slicing.drop_top},
        "size": [slicing.image_size, slicing.image_size],
        "clip_percentile": slicing.clip_percentile,
        "test_fraction": slicing.test_fraction,
        "split_seed": slicing.split_seed,
    }}


def dataset_settings(config: Mapping[str, Any]) -> dict[str, DatasetSettings]:
    """Every dataset's checked settings, by name (errors name ``datasets.<name>.<key>``)."""
    return {name: read_settings(DatasetSettings, block, f"datasets.{name}")
            for name, block in dataset_blocks(config).items()}


def dataset_params(settings: DatasetSettings) -> dict[str, Any]:
    """A dataset's settings as plain, sorted values: its slicing job's params (every field is a
    result key), so equal settings give equal params however they were written."""
    values = {f.name: getattr(settings, f.name) for f in fields(settings)}
    values["filters"] = {k: list(v) for k, v in values["filters"].items()}
    if values["channels"] is None:  # absent as before the key existed: single-channel datasets keep their params
        del values["channels"]
    else:
        values["channels"] = list(values["channels"])
    return canonical(values)


def model_dataset(config: Mapping[str, Any], model: str) -> str:
    """The dataset ``model`` trains on: its ``dataset`` key, else the first dataset."""
    names = list(dataset_blocks(config))
    chosen = (config["models"][model] or {}).get("dataset")
    if chosen is None:
        return names[0]
    if chosen not in names:
        raise InputError(f"models.{model}.dataset: unknown dataset {chosen!r} (datasets: {', '.join(names)})")
    return str(chosen)


def dataset_problems(config: Mapping[str, Any]) -> list[str]:
    """Config errors of ``datasets:`` and of the models' ``dataset`` keys, each naming its key."""
    problems = []
    settings = {}
    for name, block in dataset_blocks(config).items():
        try:
            settings[name] = read_settings(DatasetSettings, block, f"datasets.{name}")
        except InputError as exc:
            problems.append(str(exc))
    if len(settings) > 1:
        first, *others = settings
        for name in others:
            for key in ("test_fraction", "split_seed"):
                if getattr(settings[name], key) != getattr(settings[first], key):
                    problems.append(
                        f"datasets.{name}.{key}: {getattr(settings[name], key)!r} differs from datasets.{first}'s "
                        f"{getattr(settings[first], key)!r}; the train/test split is by subject and must be the same "
                        "in every dataset of the cohort (no subject may be train in one and test in another)")
    for model, block in (config.get("models") or {}).items():
        try:
            name = model_dataset(config, model)
        except InputError as exc:
            problems.append(str(exc))
            continue
        if name in settings and not settings[name].square:
            height, width = settings[name].size
            problems.append(f"models.{model}.dataset: dataset {name!r} has non-square slices ({height}x{width}); "
                            f"the model families (here {(block or {}).get('family')}) train on square images only; "
                            f"give the model a dataset with size [S, S]")
    return problems


# ----------------------------------------------------------------- models


@dataclass(frozen=True)
class Budget:
    """How long a model trains. ``steps`` or ``epochs`` decide the result; ``minutes`` is only a
    safety cap: a run it stops is marked incomplete (its result then depends on the machine)."""

    steps: int | None = None
    epochs: int | None = None
    minutes: float | None = None

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            if self.steps is None and self.minutes is not None:
                raise InputError("budget.minutes is only a safety cap; set budget.steps or budget.epochs "
                                 "so that results do not depend on the machine's speed")
            raise InputError("budget needs 'steps' or 'epochs' (one of them)")
        if self.steps is not None:
            _positive_int("budget.steps", self.steps)
        if self.epochs is not None:
            _positive_int("budget.epochs", self.epochs)
        if self.minutes is not None:
            _positive_number("budget.minutes", self.minutes)

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
            check_known_keys(self.budget, ("steps", "epochs", "minutes"), "budget")
            object.__setattr__(self, "budget", Budget(**self.budget))
        _positive_int("checkpoint_every", self.checkpoint_every)
        if not isinstance(self.enabled, bool):
            raise InputError(f"enabled must be true or false, got {self.enabled!r}")
        if self.seeds is not None:
            object.__setattr__(self, "seeds", _seed_list("seeds", self.seeds))
        if self.ema_decay is not None and (isinstance(self.ema_decay, bool) or not 0 < self.ema_decay < 1):
            raise InputError(f"ema_decay must be null or a number strictly between 0 and 1, got {self.ema_decay!r}")
        _one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if isinstance(self.lr_warmup_steps, bool) or not isinstance(self.lr_warmup_steps, int) \
                or self.lr_warmup_steps < 0:
            raise InputError(f"lr_warmup_steps must be an integer >= 0, got {self.lr_warmup_steps!r}")
        for key in ("validate_every", "snapshot_every", "fid_every", "progress_every_steps"):
            _optional_min(key, getattr(self, key), 1)
        _optional_min("validation_images", self.validation_images, 1)
        _positive_int("snapshot_images", self.snapshot_images)
        _optional_min("fid_images", self.fid_images, 2)
        if self.progress_every_seconds is not None:
            _positive_number("progress_every_seconds", self.progress_every_seconds)
        augment_settings(self.augment)  # errors name augment.<key>
        if not (isinstance(self.amp, bool) or self.amp in AMP_MODES):
            raise InputError(f"amp must be false, bf16 or fp16 (true = fp16), not {self.amp!r}")
        if self.amp_on_cpu and self.precision == "fp16":
            raise InputError("amp_on_cpu: the CPU autocasts to bf16 only; set amp: bf16")
        _positive_int("log_every", self.log_every)
        if isinstance(self.loader_workers, bool) or not isinstance(self.loader_workers, int) or self.loader_workers < 0:
            raise InputError(f"loader_workers must be an integer ≥ 0, got {self.loader_workers!r}")
        _positive_int("loader_prefetch", self.loader_prefetch)
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


# ----------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class PixelMetricsSettings:
    """``metrics``: Ungría Hirte et al.'s pixel metrics."""

    PATH: ClassVar[str] = "metrics"
    sharpness_scale: float = 255
    n_original: int = 1000


@dataclass(frozen=True)
class FidSettings:
    """``evaluation.fid``: FID with pytorch-fid's Inception, repeated on random subsets."""

    PATH: ClassVar[str] = "evaluation.fid"
    weights: str | None = runtime(None)
    repeats: int = 20
    subset_size: int | None = None
    seed: int = 0
    batch_size: int = runtime(50)
    device: str = runtime("auto")
    channels_last: bool = runtime(True)
    max_real: int | None = None
    #: Each repeat draws a fresh sample set from the model (seed 003); off: all repeats share one.
    fresh_samples: bool = False

    def __post_init__(self) -> None:
        _positive_int("repeats", self.repeats)
        _positive_int("batch_size", self.batch_size)
        _optional_min("subset_size", self.subset_size, 2)
        _optional_min("max_real", self.max_real, 2)


@dataclass(frozen=True)
class KidSettings:
    """``evaluation.kid``: kernel inception distance."""

    PATH: ClassVar[str] = "evaluation.kid"
    n_subsets: int = 100
    subset_size: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class PrdcSettings:
    """``evaluation.prdc``: precision, recall, density and coverage."""

    PATH: ClassVar[str] = "evaluation.prdc"
    nearest_k: int = 5
    max_real: int = 10000
    max_samples: int = 10000
    seed: int = 0


@dataclass(frozen=True)
class _SmallCnnSettings:
    """Seed and optimisation of one of the small evaluation CNNs (domain, conditioning, utility)."""

    seed: int = 0
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    width: int = 16

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "width"):
            _positive_int(name, getattr(self, name))
        _positive_number("lr", self.lr)


@dataclass(frozen=True)
class DomainSettings(_SmallCnnSettings):
    """``evaluation.domain``: the slice CNN whose features give the domain metrics."""

    PATH: ClassVar[str] = "evaluation.domain"
    feature_dim: int = 64
    label_column: str | None = None
    n_reference: int | None = 5000
    nearest_k: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int("feature_dim", self.feature_dim)
        _positive_int("nearest_k", self.nearest_k)
        _optional_min("n_reference", self.n_reference, 2)


@dataclass(frozen=True)
class MemorizationSettings:
    """``evaluation.memorization``: nearest training slice of every sample."""

    PATH: ClassVar[str] = "evaluation.memorization"
    percentile: float = 5.0
    gallery_k: int = 8
    n_test_reference: int | None = 1000
    seed: int = 0
    block: int = 256

    def __post_init__(self) -> None:
        if not 0 < self.percentile < 100:
            raise InputError(f"percentile must lie between 0 and 100, got {self.percentile}")
        if self.gallery_k < 0 or self.block < 1:
            raise InputError("gallery_k must be ≥ 0 and block ≥ 1")
        _optional_min("n_test_reference", self.n_test_reference, 1)


@dataclass(frozen=True)
class ConditioningSettings(_SmallCnnSettings):
    """``evaluation.conditioning``: the classifier that checks a conditional model's classes."""

    PATH: ClassVar[str] = "evaluation.conditioning"


@dataclass(frozen=True)
class UtilitySettings(_SmallCnnSettings):
    """``evaluation.utility``: classifiers trained on real, synthetic and both."""

    PATH: ClassVar[str] = "evaluation.utility"
    steps: int = 200
    seeds: int = 3
    position_bins: int = 3
    n_synthetic: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive_int("seeds", self.seeds)
        if self.position_bins < 2:
            raise InputError(f"position_bins must be at least 2, got {self.position_bins}")
        _optional_min("n_synthetic", self.n_synthetic, 1)


@dataclass(frozen=True)
class DiversitySettings:
    """``evaluation.diversity``: MS-SSIM between sample pairs, SSIM/PSNR of reconstructions (MONAI)."""

    PATH: ClassVar[str] = "evaluation.diversity"
    n_pairs: int = 1000
    n_reference: int | None = 1000
    kernel_size: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        _positive_int("n_pairs", self.n_pairs)
        _optional_min("n_reference", self.n_reference, 2)
        if isinstance(self.kernel_size, bool) or not isinstance(self.kernel_size, int) or self.kernel_size < 2:
            raise InputError(f"kernel_size must be an integer >= 2, got {self.kernel_size!r}")


# ----------------------------------------------------------------- reader study and report

READER_PRESETS = ("ungria_hirte", "han", "kazuhiro")
READER_BLOCKS = ("none", "per_model", "per_model_and_group")
REAL, SYNTHETIC = "real", "synthetic"


@dataclass(frozen=True)
class ReaderStudySettings:
    """``reader_study``: the blinded kit and the scoring of the readers' answers."""

    PATH: ClassVar[str] = "reader_study"
    preset: str = "ungria_hirte"
    models: tuple[str, ...] | None = None
    n_real: int = 50
    n_per_model: int = 50
    n_total: int = 100
    synthetic_fraction: tuple[float, float] = (0.4, 0.6)
    group_by: str | None = None
    seed: int = 0
    display_size: int = 256
    interpolation: str = "bilinear"
    time_limit_s: float | None = None
    ask_confidence: bool = True
    title: str = "Real or synthetic? A brain MRI reader study"
    #: Per-reader kits (Kazuhiro et al.): each ID its own random composition, seeded by (seed, ID);
    #: null = one composition every reader reads (in a per-reader order).
    reader_ids: tuple[str, ...] | None = None
    #: Cases shown with their answers before scoring starts, never scored (Kazuhiro et al.: 10).
    n_familiarisation: int = 0
    #: Blocks a reader completes in turn (Han et al.): none, per_model, per_model_and_group.
    blocks: str = "none"
    #: Real images of a per_model block matched to these label values (group_by) in equal shares,
    #: e.g. Han et al.'s Concat against [t1, t1c, t2, flair]; null = any real image.
    block_real_groups: tuple[str, ...] | None = None
    responses_dir: str = scoring("reader_responses")
    positive_class: str = scoring(REAL)

    def __post_init__(self) -> None:
        _one_of("preset", self.preset, READER_PRESETS)
        for key in ("n_real", "n_per_model", "n_total", "display_size"):
            _positive_int(key, getattr(self, key))
        fraction = self.synthetic_fraction
        if (not isinstance(fraction, (list, tuple)) or len(fraction) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in fraction)
                or not 0 <= fraction[0] <= fraction[1] <= 1):
            raise InputError(f"synthetic_fraction must be [low, high] with 0 <= low <= high <= 1, not {fraction!r}")
        object.__setattr__(self, "synthetic_fraction", tuple(float(v) for v in fraction))
        _one_of("interpolation", self.interpolation, ("bilinear", "nearest"))
        limit = self.time_limit_s
        if limit is not None and (not isinstance(limit, (int, float)) or isinstance(limit, bool) or limit <= 0):
            raise InputError(f"time_limit_s must be null or a positive number of seconds, not {limit!r}")
        _one_of("positive_class", self.positive_class, (REAL, SYNTHETIC))
        if self.models is not None:
            if not isinstance(self.models, (list, tuple)) or not self.models:
                raise InputError(f"models must be null (every model) or a non-empty list, not {self.models!r}")
            object.__setattr__(self, "models", tuple(self.models))
        if self.reader_ids is not None:
            ids = self.reader_ids
            if (not isinstance(ids, (list, tuple)) or not ids or len(set(map(str, ids))) != len(ids)
                    or not all(re.fullmatch(r"[A-Za-z0-9._-]{1,40}", str(i)) for i in ids)):
                raise InputError(f"reader_ids must be null or a list of distinct IDs (1-40 letters, digits, "
                                 f"'-', '_', '.'), not {ids!r}")
            object.__setattr__(self, "reader_ids", tuple(str(i) for i in ids))
        if isinstance(self.n_familiarisation, bool) or not isinstance(self.n_familiarisation, int) \
                or self.n_familiarisation < 0:
            raise InputError(f"n_familiarisation must be a whole number >= 0, not {self.n_familiarisation!r}")
        _one_of("blocks", self.blocks, READER_BLOCKS)
        if self.block_real_groups is not None:
            if not isinstance(self.block_real_groups, (list, tuple)) or not self.block_real_groups:
                raise InputError(f"block_real_groups must be null or a non-empty list, not {self.block_real_groups!r}")
            object.__setattr__(self, "block_real_groups", tuple(str(g) for g in self.block_real_groups))
            if self.group_by is None:
                raise InputError("block_real_groups matches real images by label: set group_by (e.g. sequence)")


@dataclass(frozen=True)
class ReportSettings:
    PATH: ClassVar[str] = "report"
    title: str = "Brain MRI generative models"
    #: A paper whose published tables the report shows beside this run's values: a study name of
    #: presets/published (e.g. han_2018) or a path to such a file; null = none.
    published: str | None = None

    def __post_init__(self) -> None:
        if self.published is not None:
            from pipeline_lib.core.published import load_published, published_path

            load_published(published_path(self.published))


#: Every config section read through this module, by its schema path.
SECTIONS: dict[str, type] = {cls.PATH: cls for cls in (
    InputSettings, DemoSettings, IngestSettings, PreprocessingSettings, RegistrationSettings, SlicingSettings, TrainingSettings,
    SamplingSettings, PixelMetricsSettings,
    FidSettings, KidSettings, PrdcSettings, DomainSettings, MemorizationSettings, ConditioningSettings,
    UtilitySettings, DiversitySettings, ReaderStudySettings, ReportSettings)}


def rerun_settings(config: Mapping[str, Any], path: str, *kinds: str) -> dict[str, Any]:
    """The keys of a section that change its jobs' results (plus ``kinds``), sorted so that
    reordering keys in config.yaml reruns nothing (Snakemake compares params by their repr)."""
    return canonical(block_part(section_block(config, path), SECTIONS[path], RESULT, *kinds))


def runtime_settings(config: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The runtime keys of a section, which jobs read from the config rather than from params."""
    return block_part(section_block(config, path), SECTIONS[path], RUNTIME)


def canonical(value: Any) -> Any:
    """Dicts with sorted keys, recursively."""
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    return value
