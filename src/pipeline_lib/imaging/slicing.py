"""From registered volumes to a 2-D slice dataset (one per ``datasets:`` entry).

Seed 001 (Ungría Hirte et al., section 3.1) dropped the 6 top and 8 bottom of 40 axial slices,
clipped the intensities at the 95th percentile and divided by the remaining maximum; that is the
default. Here each volume is normalised on its own (``intensity_scale: per_volume``; ``cohort``
divides every volume of a sequence by one ceiling, see :func:`cohort_ceilings`, so scanner
brightness and contrast differences survive), its slices are cut along the dataset's axis
in radiological display (imaging/slice_geometry.py), selected and fitted to the dataset's size,
and every slice inherits its subject's train/test split, so no subject contributes to both.
Augmented images (imaging/augmentation.py) are made for training subjects only: written into
images.npy (``augmentation.mode: offline``), or (``on_the_fly``) drawn in training from the slab
of each training volume that ``volumes.npy`` keeps (index: ``volumes.json``); both files are
written for every dataset, with no volume when nothing is augmented on the fly.

Outputs: ``images.npy`` (N x H x W float32 in [0, 1], rows ordered by subject, sequence, then
slice) and ``slices.tsv`` (row, subject, slice_index, split, axis, position_mm, augmented,
labels..., sequence).

A stacked dataset (``channels``: a list of sequences) has one image per slice position of a subject
with one channel per listed sequence, in that order: ``images.npy`` is N x C x H x W and
``sequence`` holds the names joined by "+" (core.slices.image_channels reads them back). The
sequences of a subject are registered to one grid, so every channel is cut at the same indices and
positions (checked: shapes and affines must agree); each volume is normalised on its own, and the
offline augmentation applies the same sampled combination to every channel.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import cv2
import nibabel as nib
import numpy as np
import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import NpyRows, atomic_path, write_tsv
from pipeline_lib.core.numbers import index_number
from pipeline_lib.core.qc import FLAGGED, outputs_with_status, usable_outputs
from pipeline_lib.core.settings import DatasetSettings, read_settings
from pipeline_lib.imaging.augmentation import (VolumeAugmentation, augmented_sections, sample_combinations,
                                               section_slab, slab_entry, write_slab_index)
from pipeline_lib.imaging.label_filters import NOT_LABELS
from pipeline_lib.imaging.sequences import DEFAULT_SEQUENCE, registered_volumes
from pipeline_lib.imaging.slice_geometry import AXIS_INDEX, SliceSelection, fit_slices, select_slices, slice_indices

log = logging.getLogger(__name__)

#: Columns of slices.tsv before the labels (``sequence``, the volume's, comes after them).
TABLE_COLUMNS = ["row", "subject", "slice_index", "split", "axis", "position_mm", "augmented"]


def normalise_volume(volume: np.ndarray, clip_percentile: float = 95.0, ceiling: float | None = None) -> np.ndarray:
    """Clip at the ``clip_percentile`` of the volume's intensities and divide by the new maximum.

    ``ceiling`` given (``intensity_scale: cohort``, :func:`cohort_ceilings`): clip at it and divide
    by it instead of the volume's own percentile, so volumes keep their brightness relative to
    each other.

    The percentile is taken over all voxels, background included, as Ungría Hirte et al.
    describes ("the 95th percentile" of the signal intensities). On a
    skull-stripped volume in a large field of view most voxels are background,
    so this clips a sizeable share of the brain; that is the seed's protocol.
    Negative values (interpolation undershoot) are set to 0 first, so the
    result lies in [0, 1] with a maximum of exactly 1 (float32).
    """
    volume = np.asarray(volume)
    if not 0 < clip_percentile <= 100:
        raise InputError(f"clip_percentile {clip_percentile!r}: must be in (0, 100]")
    if volume.size == 0 or not np.isfinite(volume).all():
        raise InputError("volume is empty or holds NaN or infinite values")
    data = np.maximum(volume.astype(np.float32), 0.0)
    if not np.any(data):
        raise InputError("volume is all zero (nothing above 0 to normalise)")
    if ceiling is not None:
        if not ceiling > 0:
            raise InputError(f"intensity ceiling {ceiling!r}: must be above 0")
        return (np.minimum(data, np.float32(ceiling)) / np.float32(ceiling)).astype(np.float32)
    ceiling = float(np.percentile(data, clip_percentile))
    if ceiling <= 0:
        raise InputError(f"the {clip_percentile}th intensity percentile is 0 (more than "
                         f"{clip_percentile}% of the voxels are background); raise clip_percentile")
    return (np.minimum(data, ceiling) / np.float32(ceiling)).astype(np.float32)


def cohort_ceilings(volumes: list[tuple[str, Path]], clip_percentile: float) -> dict[str, float]:
    """sequence -> the highest ``clip_percentile``-th intensity percentile among ``volumes``
    ((sequence, path) pairs: the dataset's training volumes).

    The highest, not a typical one: the brightest training volume is then scaled exactly as
    ``per_volume`` would scale it, no training volume is clipped more than the per-volume protocol
    clips it, and every other volume keeps its brightness and contrast relative to it.
    """
    ceilings: dict[str, float] = {}
    for sequence, path in volumes:
        try:
            data = np.maximum(_load_ras(path), 0.0)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from exc
        value = float(np.percentile(data, clip_percentile))
        ceilings[sequence] = max(ceilings.get(sequence, 0.0), value)
    empty = sorted(name for name, value in ceilings.items() if value <= 0)
    if empty:
        raise InputError(f"the {clip_percentile}th intensity percentile is 0 in every training volume of "
                         f"sequence(s) {', '.join(empty)}; raise clip_percentile")
    return ceilings


def extract_axial_slices(volume: np.ndarray, drop_top: int, drop_bottom: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Axial slices of a RAS volume without the ``drop_top`` highest and ``drop_bottom`` lowest.

    Returns ``(slices, kept)``: ``slices`` is (n, H, W) with H along the
    anterior-posterior axis and W along left-right, shown by ``imshow`` in
    radiological convention: anterior up, the patient's right on the image's
    left. ``kept`` holds the volume's z indices of the slices, inferior first.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise InputError(f"expected a 3-D volume, got shape {volume.shape}")
    if drop_top < 0 or drop_bottom < 0:
        raise InputError(f"drop_top {drop_top} / drop_bottom {drop_bottom}: must not be negative")
    depth = volume.shape[2]
    if drop_top + drop_bottom >= depth:
        raise InputError(f"dropping {drop_top} top and {drop_bottom} bottom slices leaves none "
                         f"of the {depth} axial slices")
    kept = np.arange(drop_bottom, depth - drop_top)
    # RAS axes: x left->right, y posterior->anterior; reverse both, then rows = y
    slices = np.transpose(volume[::-1, ::-1, kept], (2, 1, 0))
    return np.ascontiguousarray(slices), kept


def resize_slices(slices: np.ndarray, image_size: int) -> np.ndarray:
    """Resize each (H, W) slice to ``image_size`` squared, float32 clipped to [0, 1].

    Area averaging when the image gets fewer pixels (no aliasing), bilinear
    when it gets more. Non-square slices are stretched to a square.
    """
    slices = np.asarray(slices, dtype=np.float32)
    if slices.ndim != 3:
        raise InputError(f"expected slices shaped (n, H, W), got {slices.shape}")
    if int(image_size) < 1:
        raise InputError(f"image_size {image_size!r}: must be a positive number of pixels")
    size = int(image_size)
    height, width = slices.shape[1:]
    if (height, width) == (size, size):
        return np.clip(slices, 0.0, 1.0)
    interpolation = cv2.INTER_AREA if size * size < height * width else cv2.INTER_LINEAR
    out = np.empty((slices.shape[0], size, size), dtype=np.float32)
    for i, image in enumerate(slices):
        out[i] = cv2.resize(image, (size, size), interpolation=interpolation)
    return np.clip(out, 0.0, 1.0, out=out)


def split_subjects(subjects: list[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Assign each subject to ``"train"`` or ``"test"``, reproducibly and by subject.

    Subjects are ranked by SHA-256 of ``"<seed>:<subject>"`` and the first
    ``round(test_fraction * n)`` go to test, clamped so both splits get at
    least one subject when there are two or more. The result depends only on
    the set of subjects and the seed, not on their order, and adding a subject
    moves few others.
    """
    if not 0 < test_fraction < 1:
        raise InputError(f"test_fraction {test_fraction!r}: must be between 0 and 1 (exclusive)")
    names = [str(s) for s in subjects]
    repeated = sorted({s for s in names if names.count(s) > 1})
    if repeated:
        raise InputError(f"subject(s) listed more than once: {', '.join(repeated)}")
    ranked = sorted(names, key=lambda s: (hashlib.sha256(f"{seed}:{s}".encode()).hexdigest(), s))
    n_test = min(max(round(test_fraction * len(ranked)), 1), len(ranked) - 1) if len(ranked) > 1 else 0
    test = set(ranked[:n_test])
    return {s: ("test" if s in test else "train") for s in sorted(names)}


def volumes_to_slice(register_dirs: list[str | Path], on_poor_fit: str = "exclude",
                     filename: str = "registered.nii.gz") -> dict[str, Path]:
    """subject -> registered volume, for the subjects slicing uses.

    Subjects whose registration is ``ok`` always; ``flagged`` ones (the QC gate
    failed) only with ``registration.on_poor_fit: keep``. Flagged subjects left
    out are logged by pseudonym.
    """
    usable = usable_outputs(register_dirs, filename, on_poor_fit)
    left_out = sorted(set(outputs_with_status(register_dirs, filename, (FLAGGED,))) - set(usable))
    if left_out:
        log.info("%d flagged subject(s) left out of slicing (registration.on_poor_fit: %s): %s",
                 len(left_out), on_poor_fit, ", ".join(left_out))
    return usable


@dataclass(frozen=True)
class SliceSpec:
    """How one dataset is cut (a ``datasets.<name>`` block, see core.settings.DatasetSettings):
    filters on labels, slice geometry, normalisation, the subject split and offline augmentation."""

    axis: str = "axial"
    selection: SliceSelection = SliceSelection("drop", low=8, high=6)
    size: tuple[int, int] = (128, 128)
    fit: str = "resize"
    clip_percentile: float = 95.0
    intensity_scale: str = "per_volume"
    test_fraction: float = 0.2
    split_seed: int = 0
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    augmentation: VolumeAugmentation | None = None
    augmentation_level_mm: float | None = None
    channels: tuple[str, ...] | None = None

    @classmethod
    def from_settings(cls, settings: DatasetSettings | Mapping) -> "SliceSpec":
        settings = read_settings(DatasetSettings, settings)
        augmentation, level = None, None
        if settings.augmentation:
            block = dict(settings.augmentation)
            level = block.pop("level_mm", None)
            try:
                augmentation = VolumeAugmentation(**block)
            except TypeError as exc:
                raise InputError(f"augmentation: {exc}") from exc
            if augmentation.count == 0:
                augmentation = None
        selection = dict(settings.selection)
        return cls(axis=settings.axis, selection=SliceSelection(**selection), size=tuple(settings.size),
                   fit=settings.fit, clip_percentile=settings.clip_percentile,
                   intensity_scale=settings.intensity_scale,
                   test_fraction=settings.test_fraction, split_seed=settings.split_seed,
                   filters=dict(settings.filters), augmentation=augmentation, augmentation_level_mm=level,
                   channels=settings.channels)


def subject_volumes(register_dirs: list[str | Path], on_poor_fit: str = "exclude",
                    labels: pd.DataFrame | None = None) -> dict[str, dict[str, Path]]:
    """subject -> {sequence -> registered volume} of the subjects slicing uses
    (:func:`volumes_to_slice`), each subject's volumes listed by imaging.sequences."""
    usable = volumes_to_slice(register_dirs, on_poor_fit)
    sequence = {}
    if labels is not None and "sequence" in labels.columns:
        sequence = dict(zip(labels["subject"].astype(str), labels["sequence"].astype(str)))
    out = {}
    for subject, path in usable.items():
        volumes = registered_volumes(Path(path).parent, sequence.get(subject))
        if volumes:
            out[subject] = volumes
    return out


def dataset_items(registered: Mapping, labels, filters, channels, test_fraction: float, split_seed: int):
    """A dataset's volumes to read, shared by slice and volume datasets: (subject, sequence, paths)
    items after the filters (with ``channels`` one item per subject stacking those sequences), the
    split drawn over every subject given (before the filters, so every dataset of a cohort splits
    alike), and the label table."""
    subjects = sorted(registered)
    label_table = _label_table(labels, subjects)
    split = split_subjects(subjects, test_fraction, split_seed)
    if channels:
        items = _stacked_items(registered, label_table, filters, channels)
    else:
        items = [(subject, sequence, [path]) for subject, sequence, path
                 in _filtered_items(registered, label_table, filters)]
    return items, split, label_table


def build_slice_dataset(registered: Mapping[str, Path | Mapping[str, Path]], labels: pd.DataFrame | None,
                        out_images: Path, out_table: Path, spec: SliceSpec | None = None, *,
                        out_volumes: Path | None = None, out_volume_index: Path | None = None) -> pd.DataFrame:
    """Normalise, slice and fit every registered volume; write images.npy and slices.tsv.

    ``registered`` maps subject -> its registered NIfTI, or -> {sequence -> NIfTI} (a single path
    is the sequence "image"). The train/test split is drawn over every subject given, before the
    filters, so the same subjects are test in every dataset of the cohort. Rows are ordered by
    subject, sequence, then slice (ascending along the axis); augmented images of a training
    subject follow its real slices (``augmented`` 1). Label columns of ``labels`` (joined on
    ``subject``; bookkeeping columns such as ``format`` and ``path`` are left out) are copied to
    every slice of the subject; ``sequence`` is the volume's. The image array is written slice by
    slice into a memory-mapped temporary file, so a large cohort is never held in memory, and
    renamed into place only when complete. With ``spec.channels`` each image stacks the subject's
    listed sequences as channels (N x C x H x W, see the module docstring); subjects lacking one
    are left out. ``out_volumes`` and ``out_volume_index`` receive the slab store of an
    ``on_the_fly`` augmentation (written empty otherwise; required in that mode).
    """
    spec = spec or SliceSpec()
    on_the_fly = spec.augmentation is not None and spec.augmentation.mode == "on_the_fly"
    if on_the_fly and (out_volumes is None or out_volume_index is None):
        raise InputError("augmentation.mode on_the_fly: the slab store's paths (volumes.npy, volumes.json) are needed")
    if not registered:
        raise InputError("no registered subjects to slice (did every subject fail earlier?)")
    items, split, label_table = dataset_items(registered, labels, spec.filters, spec.channels,
                                              spec.test_fraction, spec.split_seed)
    height, width = spec.size
    ceilings = None
    if spec.intensity_scale == "cohort":
        sequences = list(spec.channels) if spec.channels else None
        training = [(name, path) for subject, sequence, paths in items if split[subject] == "train"
                    for name, path in zip(sequences or [sequence], paths)]
        ceilings = cohort_ceilings(training, spec.clip_percentile)
        every = {name for _, sequence, _ in items for name in (sequences or [sequence])}
        if set(ceilings) != every:
            raise InputError(f"intensity_scale: cohort needs training volumes of every sequence; none of "
                             f"{', '.join(sorted(every - set(ceilings)))} is in the training split")
    plans = []
    for subject, sequence, paths in items:
        if len(paths) > 1:
            _check_same_grid(subject, paths)
        indices = _planned_indices(paths[0], spec)
        augmented = spec.augmentation is not None and split[subject] == "train"
        combos = sample_combinations(spec.augmentation, subject) if augmented and not on_the_fly else []
        box = _slab_box(paths[0], spec) if augmented and on_the_fly else None
        plans.append((subject, sequence, paths, len(indices), combos, box))
    total = sum(n + len(combos) for *_, n, combos, _ in plans)
    channels = (len(spec.channels),) if spec.channels else ()
    slab_shape = _one_slab_shape([p[5] for p in plans if p[5] is not None])
    n_slabs = sum(p[5] is not None for p in plans)

    rows, entries = [], []
    with ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(out_images, suffix=".npy"))
        images = stack.enter_context(NpyRows(tmp, (total,) + channels + (height, width)))
        slabs = None
        if out_volumes is not None:
            slabs = stack.enter_context(NpyRows(stack.enter_context(atomic_path(out_volumes, suffix=".npy")),
                                                (n_slabs,) + (channels or (1,)) + slab_shape))
        start = 0
        for subject, sequence, paths, _, combos, box in plans:
            names = list(spec.channels) if spec.channels else [sequence]
            scale = None if ceilings is None else [ceilings[name] for name in names]
            slices, index, position, extra = _stacked_slices(paths, spec, combos, stacked=bool(channels),
                                                             ceilings=scale)
            base = {"subject": subject, "split": split[subject], "axis": spec.axis}
            for i in range(len(slices)):
                rows.append({**base, "row": start + i, "slice_index": index_number(index[i]),
                             "position_mm": round(float(position[i]), 3), "augmented": 0, "sequence": sequence})
            images[start:start + len(slices)] = slices
            if box is not None:
                for c, path in enumerate(paths):
                    slabs[len(entries), c], affine = _volume_slab(path, spec, box, None if scale is None else scale[c])
                _, shape, _, first, _ = box
                entries.append(slab_entry(subject, sequence, list(range(start, start + len(slices))),
                                          _augmentation_level(spec, shape, affine), shape, affine, first))
            start += len(slices)
            for (combo_index, combo_position), image in zip(extra[1], extra[0]):
                rows.append({**base, "row": start, "slice_index": index_number(combo_index),
                             "position_mm": round(float(combo_position), 3), "augmented": 1, "sequence": sequence})
                images[start] = image
                start += 1
        if slabs is not None:
            write_slab_index(out_volume_index, spec.augmentation or VolumeAugmentation(), axis=spec.axis,
                             size=spec.size, fit=spec.fit, stacked=bool(channels), entries=entries)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS + ["sequence"])
    if label_table is not None:
        table = table.merge(label_table, on="subject", how="left", validate="many_to_one")
        table = table[[c for c in table.columns if c != "sequence"] + ["sequence"]]
    write_tsv(out_table, table)
    log.info("%d slices (%d augmented) from %d volumes of %d subjects (%d test subjects)", total,
             int(table["augmented"].sum()), sum(len(p[2]) for p in plans), len({p[0] for p in plans}),
             sum(v == "test" for v in split.values()))
    return table


def _stacked_items(registered: Mapping[str, Path | Mapping[str, Path]], label_table: pd.DataFrame | None,
                   filters: Mapping[str, tuple[str, ...]], channels: tuple[str, ...]
                   ) -> list[tuple[str, str, list[Path]]]:
    """(subject, "a+b+...", [path per channel]) of every subject that passes the label filters and
    has every sequence of ``channels``; the subjects lacking one are logged in one line. (A
    ``sequence`` filter beside ``channels`` is a config error, see core.settings.DatasetSettings.)"""
    passing = {subject for subject, _, _ in _filtered_items(registered, label_table, filters)}
    items, lacking = [], []
    for subject in sorted(passing):
        volumes = registered[subject]
        if not isinstance(volumes, Mapping):
            volumes = {DEFAULT_SEQUENCE: volumes}
        missing = [c for c in channels if c not in volumes]
        if missing:
            lacking.append(f"{subject} (no {', '.join(missing)})")
        else:
            items.append((subject, "+".join(channels), [Path(volumes[c]) for c in channels]))
    if lacking:
        log.info("%d subject(s) lack a sequence of channels %s and are left out: %s",
                 len(lacking), "+".join(channels), "; ".join(lacking))
    if not items:
        raise InputError(f"no subject has every sequence of channels {list(channels)} "
                         f"(lacking: {'; '.join(lacking)})")
    return items


def _check_same_grid(subject: str, paths: list[Path]) -> None:
    """The channel volumes of a subject share one voxel grid (shape and affine), from their headers."""
    grids = []
    for path in paths:
        try:
            image = nib.load(str(path))
        except Exception as exc:  # nibabel raises many types for broken files
            raise InputError(f"{path}: not a readable NIfTI volume ({type(exc).__name__}: {exc})") from exc
        grids.append((tuple(image.shape), np.asarray(image.affine, dtype=np.float64)))
    for path, (shape, affine) in zip(paths[1:], grids[1:]):
        if shape != grids[0][0] or not np.allclose(affine, grids[0][1], atol=1e-4):
            raise InputError(
                f"subject {subject}: {path} (shape {shape}) is not on the grid of {paths[0]} (shape "
                f"{grids[0][0]}); the stacked sequences of a subject must be registered to one grid "
                f"(same shape and affine). Affines:\n{np.round(affine, 4)}\nvs\n{np.round(grids[0][1], 4)}")


def _stacked_slices(paths: list[Path], spec: SliceSpec, combos: list[dict], stacked: bool,
                    ceilings: list[float] | None = None):
    """:func:`_volume_slices` of one volume, or of every channel volume stacked on axis 1 (their
    indices and positions agree: the volumes share one grid, checked by :func:`_check_same_grid`);
    ``ceilings`` (one per path) replace each volume's own normalisation ceiling."""
    parts = [_volume_slices(path, spec, combos, None if ceilings is None else ceilings[i])
             for i, path in enumerate(paths)]
    slices, index, position, (extra, where) = parts[0]
    if stacked:
        slices = np.stack([part[0] for part in parts], axis=1)
        extra = np.stack([part[3][0] for part in parts], axis=1)
    return slices, index, position, (extra, where)


def _filtered_items(registered: Mapping[str, Path | Mapping[str, Path]], label_table: pd.DataFrame | None,
                    filters: Mapping[str, tuple[str, ...]]) -> list[tuple[str, str, Path]]:
    """(subject, sequence, path) of every volume that passes the dataset's filters."""
    labels = label_table.set_index("subject") if label_table is not None else None
    known = ["sequence"] + ([c for c in labels.columns] if labels is not None else [])
    for column in filters:
        if column not in known:
            raise InputError(f"filters.{column}: no such label column (labels: {', '.join(known)})")
    items = []
    for subject in sorted(registered):
        volumes = registered[subject]
        if not isinstance(volumes, Mapping):
            volumes = {DEFAULT_SEQUENCE: volumes}
        for sequence in sorted(volumes):
            values = {"sequence": str(sequence)}
            if labels is not None:
                values.update({c: str(v) for c, v in labels.loc[subject].items()})
            if all(values[column] in wanted for column, wanted in filters.items()):
                items.append((subject, str(sequence), Path(volumes[sequence])))
    if not items:
        raise InputError(f"no volume passes the dataset's filters {dict(filters)}")
    return items


def ras_grid(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """The shape and affine of a volume in RAS voxel order (as :func:`_load_ras` reads it), from its header."""
    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken files
        raise InputError(f"{path}: not a readable NIfTI volume ({type(exc).__name__}: {exc})") from exc
    if len(image.shape) != 3:
        raise InputError(f"{path}: expected a 3-D volume, got shape {image.shape}")
    ornt = nib.io_orientation(image.affine)
    shape = tuple(int(image.shape[int(i)]) for i in np.argsort(ornt[:, 0]))
    return shape, np.asarray(image.affine @ nib.orientations.inv_ornt_aff(ornt, image.shape), dtype=np.float64)


def _planned_indices(path: Path, spec: SliceSpec) -> np.ndarray:
    """The slice indices a volume will give, from its header only (to size the image array)."""
    shape, affine = ras_grid(path)
    k = AXIS_INDEX[spec.axis]
    try:
        return slice_indices(spec.selection, shape[k], float(affine[k, k]), float(affine[k, 3]), spec.axis)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def _slab_box(path: Path, spec: SliceSpec) -> tuple:
    """(level_mm, grid shape, affine, start, stop) of a training volume's slab, from its header."""
    shape, affine = ras_grid(path)
    level = _augmentation_level(spec, shape, affine)
    start, stop = section_slab(shape, affine, level, spec.augmentation, spec.axis)
    return level, shape, affine, start, stop


def _one_slab_shape(boxes: list[tuple]) -> tuple[int, int, int]:
    """The slab shape shared by every training volume (they are registered to one grid)."""
    shapes = {tuple(b - a for a, b in zip(box[3], box[4])) for box in boxes}
    if len(shapes) > 1:
        raise InputError(f"augmentation.mode on_the_fly needs every training volume on one grid, found slabs "
                         f"of shapes {sorted(shapes)}; register to one grid or use mode: offline")
    return shapes.pop() if shapes else (0, 0, 0)


def _augmentation_level(spec: SliceSpec, shape: tuple[int, ...], affine: np.ndarray) -> float:
    """The centre section of the augmentation (mm along the axis): as configured, else the grid's centre."""
    if spec.augmentation_level_mm is not None:
        return spec.augmentation_level_mm
    k = AXIS_INDEX[spec.axis]
    spacing, origin = float(affine[k, k]), float(affine[k, 3])
    return origin + spacing * (shape[k] - 1) / 2


def _volume_slab(path: Path, spec: SliceSpec, box: tuple,
                 ceiling: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The normalised volume's voxels inside ``box`` (see :func:`_slab_box`), float32, and the
    volume's affine as the offline mode reads it."""
    try:
        volume, affine = _load_ras(path, with_affine=True)
        volume = normalise_volume(volume, spec.clip_percentile, ceiling)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
    start, stop = box[3], box[4]
    if volume.shape != tuple(box[1]):
        raise InputError(f"{path}: shape {volume.shape} differs from its header's {tuple(box[1])}")
    return volume[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]], affine


def _volume_slices(path: Path, spec: SliceSpec, combos: list[dict], ceiling: float | None = None):
    """One volume's finished slices, their indices and positions, and its augmented images with
    their (index, position); a problem is reported with the file name."""
    try:
        volume, affine = _load_ras(path, with_affine=True)
        volume = normalise_volume(volume, spec.clip_percentile, ceiling)
        slices, index, position = select_slices(volume, affine, spec.axis, spec.selection)
        slices = fit_slices(slices, spec.size, spec.fit)
        extra: tuple[np.ndarray, list] = (np.zeros((0,) + tuple(spec.size), np.float32), [])
        if combos:
            k = AXIS_INDEX[spec.axis]
            spacing, origin = float(affine[k, k]), float(affine[k, 3])
            level = _augmentation_level(spec, volume.shape, affine)
            augmented = augmented_sections(volume, affine, level, combos, spec.axis)
            where = [((level + c["offset_mm"] - origin) / spacing, level + c["offset_mm"]) for c in combos]
            extra = (fit_slices(np.clip(augmented, 0.0, 1.0), spec.size, spec.fit), where)
        return slices, index, position, extra
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def _load_ras(path: Path, with_affine: bool = False):
    """The volume's data in RAS voxel order (float32), and its affine when asked."""
    try:
        image = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for broken files
        raise InputError(f"not a readable NIfTI volume ({type(exc).__name__}: {exc})") from exc
    if data.ndim != 3:
        raise InputError(f"expected a 3-D volume, got shape {data.shape}")
    return (data, np.asarray(image.affine, dtype=np.float64)) if with_affine else data


def _label_table(labels: pd.DataFrame | None, subjects: list[str]) -> pd.DataFrame | None:
    """Label columns per subject, checked to cover every subject exactly once."""
    if labels is None:
        return None
    if "subject" not in labels.columns:
        raise InputError(f"label table has no 'subject' column (columns: {', '.join(map(str, labels.columns))})")
    reserved = [c for c in labels.columns if c in TABLE_COLUMNS and c != "subject"]
    if reserved:
        raise InputError(f"label column name(s) clash with slices.tsv columns: {', '.join(reserved)}")
    keep = ["subject"] + [c for c in labels.columns if c not in NOT_LABELS]
    table = labels.loc[:, keep].copy()
    table["subject"] = table["subject"].astype(str)
    repeated = sorted(set(table.loc[table["subject"].duplicated(), "subject"]))
    if repeated:
        raise InputError(f"label table lists subject(s) more than once: {', '.join(repeated)}")
    missing = sorted(set(subjects) - set(table["subject"]))
    if missing:
        raise InputError(f"label table lacks registered subject(s): {', '.join(missing)}")
    return table
