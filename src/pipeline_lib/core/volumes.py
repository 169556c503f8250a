"""Volume datasets (``datasets.<name>`` with ``kind: volume``): their settings and their files.

A volume dataset holds whole registered volumes, or a box of them on a resampled grid, for 3-D
models. It shares the slice datasets' filters, channels, normalisation and subject split (the split
is drawn over the cohort with the same ``test_fraction`` and ``split_seed``, so a subject is test in
every dataset or in none). Files, written by imaging/volumes.py:

- ``volumes.npy``: (N, C, X, Y, Z) float32 in [0, 1]; C = 1 without ``channels``; the three spatial
  axes are RAS voxel order: x left -> right, y posterior -> anterior, z inferior -> superior.
- ``volumes.tsv``: row, subject, split, augmented (always 0: no offline augmentation of volumes),
  labels..., sequence (the channel names joined by "+" for a stacked dataset), the columns of
  ``slices.tsv`` that apply to a whole volume, so core.slices.split_rows and image_channels read it;
  then ``brain_volume_ml`` (:func:`brain_volume_ml` of the volume on the dataset's grid: a covariate
  a 3-D model can condition on, core/covariates.py).
- ``grid.json``: the output grid's shape, voxel spacing and affine (voxel -> template mm), so a
  sample written with it (:func:`write_volume_nifti`) overlays the template.

Torch-free, like everything the DAG imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import atomic_path, read_json
from pipeline_lib.core.resources import ImageSet
from pipeline_lib.core.settings import (DEFAULT_DATASET, DatasetSettings, canonical, check_known_keys, dataset_settings,
                                        read_settings)
from pipeline_lib.core.slices import SplitImages, _split_table

VOLUME_KIND = "volume"
#: The ``kind`` of today's 2-D datasets (the default when ``kind`` is absent).
SLICE_KIND = "slice"
#: Volume-dataset keys that mean what they mean in a slice dataset (core.settings.DatasetSettings).
SHARED_KEYS = ("filters", "channels", "clip_percentile", "test_fraction", "split_seed")
#: Keys of a volume dataset's table before the labels (``sequence`` comes after them).
VOLUME_TABLE_COLUMNS = ["row", "subject", "split", "augmented"]
#: The spatial axes of volumes.npy, in order.
VOLUME_AXES = ("x (left -> right)", "y (posterior -> anterior)", "z (inferior -> superior)")

_FLOAT32 = 4
_MB = 1024 * 1024


def is_volume_block(block: Any) -> bool:
    return isinstance(block, Mapping) and block.get("kind") == VOLUME_KIND


@dataclass(frozen=True)
class VolumeDatasetSettings:
    """``datasets.<name>`` with ``kind: volume``: registered volumes for 3-D models.

    ``spacing_mm`` (one number, or [x, y, z]; null = the registered grid's) resamples the grid
    about its centre, covering the same field of view (smoothed before it is made coarser, against
    aliasing: imaging/volumes.resample_box); ``box`` ([x, y, z] voxels; null = the
    whole resampled grid) then keeps that many voxels about the grid's centre, padding with
    background where the box is larger. ``filters``, ``channels``, ``clip_percentile``,
    ``test_fraction`` and ``split_seed`` are those of a slice dataset.
    """

    PATH: ClassVar[str] = "datasets.<name>"
    kind: str = VOLUME_KIND
    filters: Mapping[str, Any] = field(default_factory=dict)
    channels: tuple[str, ...] | None = None
    box: tuple[int, int, int] | None = None
    spacing_mm: tuple[float, float, float] | None = None
    clip_percentile: float = 95
    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        if self.kind != VOLUME_KIND:
            raise InputError(f"kind must be {VOLUME_KIND!r} for a volume dataset, not {self.kind!r}")
        # The shared keys are checked (and normalised) exactly as a slice dataset's.
        shared = DatasetSettings(**{key: getattr(self, key) for key in SHARED_KEYS})
        for key in SHARED_KEYS:
            object.__setattr__(self, key, getattr(shared, key))
        if self.box is not None:
            if (not isinstance(self.box, (list, tuple)) or len(self.box) != 3
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in self.box)):
                raise InputError(f"box must be null or [x, y, z] voxels (positive integers), not {self.box!r}")
            object.__setattr__(self, "box", tuple(int(v) for v in self.box))
        if self.spacing_mm is not None:
            spacing = self.spacing_mm
            if isinstance(spacing, (int, float)) and not isinstance(spacing, bool):
                spacing = [spacing] * 3
            if (not isinstance(spacing, (list, tuple)) or len(spacing) != 3
                    or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 for v in spacing)):
                raise InputError(f"spacing_mm must be null, a positive number or [x, y, z] positive mm, "
                                 f"not {self.spacing_mm!r}")
            object.__setattr__(self, "spacing_mm", tuple(float(v) for v in spacing))


VOLUME_KEYS = tuple(f.name for f in fields(VolumeDatasetSettings))
#: Keys of a slice dataset that a volume dataset does not take.
SLICE_ONLY_KEYS = tuple(f.name for f in fields(DatasetSettings) if f.name not in VOLUME_KEYS)


def volume_blocks(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Name -> config block of every volume dataset (``kind: volume``) under ``datasets:``."""
    return {str(name): dict(block) for name, block in (config.get("datasets") or {}).items()
            if is_volume_block(block)}


def volume_dataset_settings(config: Mapping[str, Any]) -> dict[str, VolumeDatasetSettings]:
    """Every volume dataset's checked settings, by name. The schema fills a slice dataset's defaults
    (axis, size, ...) into every ``datasets:`` block; a volume dataset's own keys are read, and the
    raw config's slice keys were rejected before that (:func:`volume_dataset_problems`)."""
    return {name: read_settings(VolumeDatasetSettings, {k: v for k, v in block.items() if k in VOLUME_KEYS},
                                f"datasets.{name}")
            for name, block in volume_blocks(config).items()}


def volume_dataset_params(settings: VolumeDatasetSettings) -> dict[str, Any]:
    """A volume dataset's settings as plain, sorted values (its job's params)."""
    values = {f.name: getattr(settings, f.name) for f in fields(settings)}
    values["filters"] = {k: list(v) for k, v in values["filters"].items()}
    for key in ("channels", "box", "spacing_mm"):
        values[key] = None if values[key] is None else list(values[key])
    return canonical(values)


def volume_dataset_problems(config: Mapping[str, Any]) -> list[str]:
    """Config errors of the volume datasets (of the raw config, before the schema's defaults), each
    naming its key: slice-only keys, their own values, a split that differs from the slice
    datasets', a name the slice dataset built from ``slicing:`` takes (a model naming one is checked
    against its family's dimensions by models.hyperparameters.model_dataset_problems)."""
    problems = []
    blocks = volume_blocks(config)
    settings = {}
    for name, block in blocks.items():
        wrong = [key for key in block if key in SLICE_ONLY_KEYS]
        if wrong:
            problems.append(f"datasets.{name}: {', '.join(wrong)} belong(s) to slice datasets; a volume dataset "
                            f"(kind: volume) takes {', '.join(VOLUME_KEYS)}")
            continue
        try:
            check_known_keys(block, VOLUME_KEYS, f"datasets.{name}")
            settings[name] = read_settings(VolumeDatasetSettings, block, f"datasets.{name}")
        except InputError as exc:
            problems.append(str(exc))
    if not settings:
        return problems
    try:
        slices = dataset_settings(config)
    except InputError:
        return problems  # reported by core.settings.dataset_problems
    if DEFAULT_DATASET in settings and DEFAULT_DATASET in slices:
        problems.append(f"datasets.{DEFAULT_DATASET}: the name of the slice dataset built from slicing: (there is "
                        f"no slice dataset under datasets:); give the volume dataset another name")
    reference_name, reference = next(iter(slices.items()))
    for name, volume in settings.items():
        for key in ("test_fraction", "split_seed"):
            if getattr(volume, key) != getattr(reference, key):
                problems.append(
                    f"datasets.{name}.{key}: {getattr(volume, key)!r} differs from dataset {reference_name}'s "
                    f"{getattr(reference, key)!r}; the train/test split is by subject and must be the same in "
                    "every dataset of the cohort, volume datasets included")
    return problems


def volume_dataset_mb(grid: tuple[int, int, int], box: tuple[int, int, int] | None) -> float:
    """Peak memory of building a volume dataset, flat in the cohort's size: one registered volume at
    a time (read, normalised, smoothed: about 6 float32 copies of the registered grid) and the
    interpolation's coordinates (3 float64 per output voxel) and output; the dataset itself is
    written through a memory map, never held."""
    grid_mb = math.prod(grid) * _FLOAT32 / _MB
    box_mb = math.prod(box or grid) * _FLOAT32 / _MB
    return 600 + 6 * grid_mb + 8 * box_mb


def estimated_volumes(settings: VolumeDatasetSettings, grid: tuple[int, int, int], subjects: int,
                      sequences: int = 1) -> ImageSet:
    """A volume dataset's size before it is built (for the train and sample_volumes requests of its
    3-D runs): every subject kept, one volume per subject and sequence (per subject when it stacks or
    filters on a sequence), on its ``box``, else on the registered grid (an upper bound where
    ``spacing_mm`` makes it coarser)."""
    channels = len(settings.channels) if settings.channels else 1
    per_subject = 1 if settings.channels or "sequence" in settings.filters else max(sequences, 1)
    return ImageSet(images=subjects * per_subject, pixels=channels * math.prod(settings.box or grid))


#: A voxel of a volume (normalised to [0, 1]) with a value above this is brain: the brain volume that
#: building a volume dataset records per volume (its table's ``brain_volume_ml``) and the one the
#: volumetric evaluation measures on samples (evaluation/volumetric.brain_volumes_ml).
BRAIN_VOXEL_THRESHOLD = 0.1


def brain_volume_ml(volume: np.ndarray, affine: np.ndarray, threshold: float = BRAIN_VOXEL_THRESHOLD,
                    channel: int = 0) -> float:
    """Brain volume (mL) of one (C, X, Y, Z) volume on a grid with ``affine`` (voxel -> mm): its
    ``channel``'s voxels above ``threshold`` times the voxel volume."""
    per_voxel = abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0
    return float(np.count_nonzero(np.asarray(volume)[channel] > threshold)) * per_voxel


#: The volumetric evaluation (evaluation/volumetric.py) cuts samples and real volumes at this many
#: positions per plane, and reads the real volumes this many at a time.
VOLUMETRIC_SLICES_PER_PLANE = 8
VOLUMETRIC_CHUNK = 16
#: torch, MONAI and the FID Inception with one batch of 299 px activations (core.resources.INCEPTION_MB)
#: plus Python's own imports.
_VOLUMETRIC_FIXED_MB = 3000
#: One Inception pool3 feature row as the Fréchet distance holds it (2,048 float64).
_FEATURE_BYTES = 2048 * 8


def volumetric_slices(samples: tuple[int, ...], volumes: tuple[int, ...],
                      slices_per_plane: int = VOLUMETRIC_SLICES_PER_PLANE) -> int:
    """Grey slices the volumetric evaluation cuts (and runs through Inception) from ``samples`` and
    ``volumes`` (N, C, X, Y, Z): every channel at each position of the three planes."""
    return 3 * (int(samples[0]) + int(volumes[0])) * int(samples[1]) * slices_per_plane


def volumetric_evaluation_mb(samples: tuple[int, ...], volumes: tuple[int, ...],
                             slices_per_plane: int = VOLUMETRIC_SLICES_PER_PLANE,
                             chunk: int = VOLUMETRIC_CHUNK) -> float:
    """Peak memory of the volumetric evaluation of one 3-D run: ``samples`` (n, C, X, Y, Z) held whole
    (float32 and the float64 copies of the nearest-volume search: 4 copies), one chunk of real
    volumes (the same 4 copies), 16 volumes of 3-D MS-SSIM intermediates (a batch of 8 pairs), and a
    plane's feature rows of every real and sampled slice, twice (features and their centred copy).
    The real volumes' slices go to disk; only their features grow with the cohort, 16 KB a slice."""
    n, channels, voxels = int(samples[0]), int(samples[1]), math.prod(samples[2:])
    real = int(volumes[0])
    volume_mb = channels * voxels * _FLOAT32 / _MB
    rows = volumetric_slices(samples, volumes, slices_per_plane) // 3
    return (_VOLUMETRIC_FIXED_MB + (4 * n + 4 * min(chunk, real) + 16) * volume_mb
            + 2 * rows * _FEATURE_BYTES / _MB)


# ----------------------------------------------------------------- reading


def read_grid(path: str | Path) -> dict[str, Any]:
    """grid.json of a volume dataset: ``shape``, ``spacing_mm`` and ``affine`` (4 x 4, voxel -> mm),
    checked; errors name the file."""
    grid = read_json(path)
    try:
        affine = np.asarray(grid["affine"], dtype=np.float64)
        shape = tuple(int(v) for v in grid["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a volume dataset's grid.json (needs shape and affine: {exc})") from exc
    if affine.shape != (4, 4) or len(shape) != 3 or not np.isfinite(affine).all():
        raise InputError(f"{path}: expected a 4 x 4 affine and a 3-D shape, got {affine.shape} and {shape}")
    return {**grid, "affine": affine, "shape": shape}


def open_volume_split(volumes: Path, table: Path, split: str) -> tuple[SplitImages, pd.DataFrame]:
    """The volumes of one split, read from disk when indexed (core.slices.SplitImages: memory flat in
    the split's size, picklable for DataLoader workers), and their table rows."""
    frame, rows, data = _split_table(Path(volumes), Path(table), split, augmented=False)
    if data.ndim != 5:
        raise InputError(f"{volumes}: expected volumes shaped (N, C, X, Y, Z), got shape {data.shape}")
    return SplitImages(Path(volumes), rows), frame.loc[rows].reset_index(drop=True)


def write_volume_nifti(sample: np.ndarray, affine: np.ndarray, out: Path) -> Path:
    """Write a (C, X, Y, Z) sample (or one (X, Y, Z) volume) on a volume dataset's grid as NIfTI with
    ``affine`` (grid.json's), atomically: a 3-D image for one channel, else X x Y x Z x C. The voxel
    order is the dataset's (RAS), so the file overlays the template in any viewer. (Here, in core,
    so that models/export.py writes generated volumes with it.)"""
    data = np.asarray(sample, dtype=np.float32)
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4 or min(data.shape) == 0:
        raise InputError(f"{out}: expected a sample shaped (C, X, Y, Z) or (X, Y, Z), got {np.shape(sample)}")
    if not np.isfinite(data).all():
        raise InputError(f"{out}: the sample holds NaN or infinite values")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise InputError(f"{out}: expected a 4 x 4 affine, got shape {affine.shape}")
    data = data[0] if data.shape[0] == 1 else np.moveaxis(data, 0, -1)
    import nibabel as nib  # here, not at the top: the DAG imports this module

    image = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    with atomic_path(out) as tmp:
        nib.save(image, str(tmp))
    return Path(out)
