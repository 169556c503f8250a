"""Settings of the 2-D slice datasets cut from the registered volumes (``datasets:``, or without it
the ``slicing:`` section as one dataset) and which dataset each model trains on."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings.base import canonical, check_known_keys, one_of, read_settings, section_block
from pipeline_lib.core.settings.imaging import SlicingSettings

#: ``datasets.<name>.intensity_scale``: the normalisation's ceiling per volume, or one per
#: sequence over the dataset's training volumes (imaging/slicing.py)
INTENSITY_SCALES = ("per_volume", "cohort")

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
    and at which size (imaging/slice_geometry.py); ``clip_percentile`` is seed 001's normalisation,
    ``intensity_scale`` whether its ceiling is each volume's own (``per_volume``) or one per sequence
    for the whole dataset (``cohort``, which keeps scanner brightness differences);
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
    intensity_scale: str = "per_volume"
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
        one_of("axis", self.axis, SLICE_AXES)
        one_of("fit", self.fit, FIT_POLICIES)
        object.__setattr__(self, "selection", _check_selection(self.selection))
        if (not isinstance(self.size, (list, tuple)) or len(self.size) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in self.size)):
            raise InputError(f"size must be [height, width] in pixels, not {self.size!r}")
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        if (isinstance(self.clip_percentile, bool) or not isinstance(self.clip_percentile, (int, float))
                or not 0 < self.clip_percentile <= 100):
            raise InputError(f"clip_percentile must lie in (0, 100], got {self.clip_percentile!r}")
        one_of("intensity_scale", self.intensity_scale, INTENSITY_SCALES)
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
    one_of("selection.mode", mode, SELECTION_KEYS)
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
    """Slice dataset name -> its config block: ``datasets:``, or without a slice dataset there one
    dataset ``default`` built from ``slicing:`` exactly as slicing always did (seed 001's axial
    protocol). Volume datasets (``kind: volume``) are core.volumes'; ``kind: slice`` is the default."""
    datasets = {name: block for name, block in (config.get("datasets") or {}).items()
                if (block or {}).get("kind") != "volume"}
    if datasets:
        return {str(name): {k: v for k, v in dict(block or {}).items() if k != "kind"}
                for name, block in datasets.items()}
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
    if values["intensity_scale"] == "per_volume":  # absent as before the key existed (likewise)
        del values["intensity_scale"]
    return canonical(values)


def model_dataset(config: Mapping[str, Any], model: str) -> str:
    """The dataset ``model`` trains on: its ``dataset`` key (a slice or a volume dataset), else the
    first slice dataset."""
    names = list(dataset_blocks(config))
    chosen = (config["models"][model] or {}).get("dataset")
    if chosen is None:
        return names[0]
    names += [str(name) for name, block in (config.get("datasets") or {}).items()
              if (block or {}).get("kind") == "volume"]
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
