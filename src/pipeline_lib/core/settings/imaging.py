"""Settings of stage 1 up to the registered volumes: the demo cohort, the input and its layout,
ingest, brain extraction, registration and the ``slicing`` section (the default dataset)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings.base import one_of, positive_int, positive_number, read_by, workflow


@dataclass(frozen=True)
class DemoSettings:
    """``demo``: the synthetic phantom cohort."""

    PATH: ClassVar[str] = "demo"
    n_subjects: int = 12
    seed: int = 0
    resolution_mm: int = 2
    n_scanners: int = 2
    dicom_fraction: float = 0.5


@dataclass(frozen=True)
class ExecutionSettings:
    """``execution``: how per-subject work is cut into jobs (core/subject_batches.py); the results
    are the same either way."""

    PATH: ClassVar[str] = "execution"
    #: 0 = an ingest and a register job per subject; B > 0 = B batch jobs per stage.
    subject_batches: int = workflow(0)

    def __post_init__(self) -> None:
        if isinstance(self.subject_batches, bool) or not isinstance(self.subject_batches, int) \
                or self.subject_batches < 0:
            raise InputError(f"execution.subject_batches: must be 0 (a job per subject) or a number of batches, "
                             f"got {self.subject_batches!r}")


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
        one_of("layout", self.layout, LAYOUTS)
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
    # Multi-sequence subjects: the sequence the brain is extracted from when the subject has it
    # (e.g. a DWI series' b0), its mask then used for the reference; null: the reference itself.
    brain_extraction_sequence: str | None = None

    def __post_init__(self) -> None:
        one_of("brain_extraction", self.brain_extraction, BRAIN_EXTRACTORS)
        if self.brain_extraction_sequence is not None and not (
                isinstance(self.brain_extraction_sequence, str) and re.match(SEQUENCE_NAME, self.brain_extraction_sequence)):
            raise InputError(f"brain_extraction_sequence must be null or a sequence name (lower-case letters, "
                             f"digits, '_' or '-'), got {self.brain_extraction_sequence!r}")


@dataclass(frozen=True)
class IngestSettings:
    """``ingest``: what an input must be to be ingested (checked before anything is read)."""

    PATH: ClassVar[str] = "ingest"
    max_voxels: int = 64_000_000
    min_voxel_mm: float = 0.1
    max_voxel_mm: float = 10.0
    modalities: tuple[str, ...] = ("MR",)

    def __post_init__(self) -> None:
        positive_int("max_voxels", self.max_voxels)
        positive_number("min_voxel_mm", self.min_voxel_mm)
        positive_number("max_voxel_mm", self.max_voxel_mm)
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
    # Voxel size in mm of the output grid (null: the grid spans the template's field of view);
    # a paper that gives a matrix at a voxel size keeps its slice numbers' meaning only so.
    voxel_size: tuple[float, float, float] | None = None
    seed: int = 0
    min_mask_dice: float = 0.85
    scale_range: tuple[float, float] = (0.8, 1.25)
    max_shear: float = 0.15
    min_correlation: float = 0.5
    # What slicing does with flagged subjects: it changes slice_dataset's and volume_dataset's
    # results (and the report's caption), not the register job's outputs, so changing it reslices
    # without re-registering 2,000 subjects.
    on_poor_fit: str = read_by("exclude", "slice_dataset", "volume_dataset", "report")
    # Multi-sequence subjects: the sequence the transform is estimated on (null: the first of
    # discovery's stated order, t1 first); the others go through the same transform.
    reference_sequence: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", tuple(self.grid))
        object.__setattr__(self, "scale_range", tuple(self.scale_range))
        if len(self.grid) != 3 or not all(isinstance(v, int) and v >= 8 for v in self.grid):
            raise InputError(f"grid must be three integers ≥ 8, got {list(self.grid)}")
        if self.voxel_size is not None:
            sizes = self.voxel_size
            if (not isinstance(sizes, (list, tuple)) or len(sizes) != 3
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in sizes)):
                raise InputError(f"voxel_size must be null or three sizes in mm above 0, got {sizes!r}")
            object.__setattr__(self, "voxel_size", tuple(float(v) for v in sizes))
        one_of("transform", self.transform, TRANSFORMS)
        one_of("match", self.match, BRAIN_OR_HEAD)
        one_of("output", self.output, BRAIN_OR_HEAD)
        one_of("on_poor_fit", self.on_poor_fit, ("exclude", "keep"))
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
