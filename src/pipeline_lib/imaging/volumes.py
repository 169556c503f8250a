"""From registered volumes to a volume dataset (``datasets.<name>`` with ``kind: volume``), and
samples back to NIfTI on the dataset's grid.

Every volume goes through the slice datasets' steps that apply to a whole volume (imaging/slicing.py:
the same label filters, channels, per-volume normalisation and subject split), then onto the
dataset's grid (:func:`resample_box`). The files are described in core/volumes.py; the array is
written volume by volume into a temporary file (core.io.NpyRows) and renamed
into place when complete, so memory stays flat in the cohort's size.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import ndimage

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import NpyRows, atomic_path, write_json, write_tsv
from pipeline_lib.core.covariates import BRAIN_VOLUME_COLUMN
from pipeline_lib.core.volumes import VOLUME_AXES, VOLUME_TABLE_COLUMNS, VolumeDatasetSettings, brain_volume_ml
# samples back to NIfTI on the dataset's grid: core's, so that models/export.py can write them too
from pipeline_lib.core.volumes import write_volume_nifti  # noqa: F401
from pipeline_lib.imaging.slicing import _check_same_grid, _load_ras, dataset_items, normalise_volume, ras_grid

log = logging.getLogger(__name__)


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """mm per voxel step along each voxel axis (the affine's column norms)."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def target_grid(shape: tuple[int, int, int], affine: np.ndarray, spacing_mm=None, box=None
                ) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray, np.ndarray]:
    """The output grid of a volume on ``shape``/``affine``: ``(out_shape, out_affine, scale, shift)``
    with source voxel = scale * output voxel + shift (per axis).

    With ``spacing_mm`` the grid is resampled about its centre voxel to that spacing, covering the
    same field of view (``round(n * old / new)`` voxels, at least 1); with ``box`` that many voxels
    are kept about the centre (an odd surplus drops the extra voxel at the high end), padding where
    the box is larger. Neither: the grid itself.
    """
    shape = np.asarray(shape, dtype=np.int64)
    old = voxel_spacing(affine)
    new = old if spacing_mm is None else np.asarray(spacing_mm, dtype=np.float64)
    scale = new / old
    resampled = np.maximum(np.rint(shape * old / new), 1).astype(np.int64)
    shift = (shape - 1) / 2 - scale * (resampled - 1) / 2
    if box is not None:
        box_shape = np.asarray(box, dtype=np.int64)
        shift = shift + scale * ((resampled - box_shape) // 2)
        resampled = box_shape
    voxel_map = np.eye(4)
    voxel_map[:3, :3] = np.diag(scale)
    voxel_map[:3, 3] = shift
    out_affine = np.asarray(affine, dtype=np.float64) @ voxel_map
    return tuple(int(v) for v in resampled), out_affine, scale, shift


def resample_box(volume: np.ndarray, affine: np.ndarray, spacing_mm=None, box=None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``volume`` (on ``affine``) on the grid of :func:`target_grid`: ``(data, out_affine)``.

    Linear interpolation; an axis made coarser by a factor f is first smoothed with a Gaussian of
    sigma (f - 1) / 2 source voxels (scikit-image's anti-aliasing default), so a coarse voxel also
    carries its fine neighbours rather than one sample of them (at f = 2 a one-voxel stripe pattern
    keeps 0.21 of its brightness on the dark voxels, where plain sampling gives 0). Outside the
    source grid is background (0). The
    grid itself (no spacing, no box) is returned exactly, without interpolation.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise InputError(f"expected a 3-D volume, got shape {volume.shape}")
    out_shape, out_affine, scale, shift = target_grid(volume.shape, affine, spacing_mm, box)
    if np.allclose(scale, 1) and np.allclose(shift, np.rint(shift)):
        start = np.rint(shift).astype(np.int64)
        out = np.zeros(out_shape, dtype=np.float32)
        src = [slice(max(s, 0), min(s + n, m)) for s, n, m in zip(start, out_shape, volume.shape)]
        dst = [slice(q.start - s, q.stop - s) for q, s in zip(src, start)]
        if all(q.stop > q.start for q in src):
            out[tuple(dst)] = volume[tuple(src)]
        return out, out_affine
    sigma = np.maximum((scale - 1) / 2, 0)
    source = ndimage.gaussian_filter(volume, sigma, mode="nearest") if np.any(sigma > 0) else volume
    axes = [scale[k] * np.arange(out_shape[k]) + shift[k] for k in range(3)]
    coordinates = np.meshgrid(*axes, indexing="ij")
    out = ndimage.map_coordinates(source, coordinates, order=1, mode="constant", cval=0.0, output=np.float32)
    return out, out_affine


def build_volume_dataset(registered: Mapping[str, Path | Mapping[str, Path]], labels: pd.DataFrame | None,
                         out_volumes: Path, out_table: Path, out_grid: Path,
                         settings: VolumeDatasetSettings | None = None) -> pd.DataFrame:
    """Normalise every registered volume, bring it onto the dataset's grid and write volumes.npy,
    volumes.tsv and grid.json (core/volumes.py).

    ``registered`` maps subject -> its registered NIfTI or -> {sequence -> NIfTI}, as for
    imaging.slicing.build_slice_dataset, whose split (drawn over every subject given, before the
    filters), label table, filters and channels this shares: rows are ordered by subject, then
    sequence; with ``channels`` one row per subject stacks its listed sequences in that order.
    Every volume must lie on one grid (they are registered to one template); a file that does not,
    or cannot be read, is named in the error.
    """
    settings = settings or VolumeDatasetSettings()
    if not registered:
        raise InputError("no registered subjects for the volume dataset (did every subject fail earlier?)")
    items, split, label_table = dataset_items(registered, labels, settings.filters, settings.channels,
                                              settings.test_fraction, settings.split_seed)
    if label_table is not None and BRAIN_VOLUME_COLUMN in label_table.columns:
        raise InputError(f"label column '{BRAIN_VOLUME_COLUMN}' clashes with the column a volume dataset measures "
                         "on every volume; rename the subject label")
    source_shape, source_affine, first = _registered_grid(items)
    out_shape, out_affine, _, _ = target_grid(source_shape, source_affine, settings.spacing_mm, settings.box)
    channels = len(items[0][2])

    rows = []
    with atomic_path(out_volumes, suffix=".npy") as tmp:
        # written with pwrite, not through a mapping, so memory stays flat in the cohort (core.io.NpyRows)
        with NpyRows(tmp, (len(items), channels) + out_shape) as volumes:
            for row, (subject, sequence, paths) in enumerate(items):
                volume = np.stack([_grid_volume(path, settings, source_shape, source_affine, first)
                                   for path in paths])
                volumes[row] = volume
                rows.append({"row": row, "subject": subject, "split": split[subject], "augmented": 0,
                             "sequence": sequence,
                             BRAIN_VOLUME_COLUMN: round(brain_volume_ml(volume, out_affine), 3)})
    table = pd.DataFrame(rows, columns=VOLUME_TABLE_COLUMNS + ["sequence", BRAIN_VOLUME_COLUMN])
    if label_table is not None:
        table = table.merge(label_table, on="subject", how="left", validate="many_to_one")
    last = ["sequence", BRAIN_VOLUME_COLUMN]
    table = table[[c for c in table.columns if c not in last] + last]
    write_tsv(out_table, table)
    spacing = voxel_spacing(out_affine)
    write_json(out_grid, {"shape": list(out_shape), "spacing_mm": [round(float(v), 6) for v in spacing],
                          "affine": np.round(out_affine, 6).tolist(), "axes": list(VOLUME_AXES),
                          "channels": items[0][1].split("+")})
    log.info("%d volumes (%d channel(s), %s voxels at %s mm) of %d subjects (%d test subjects)", len(items),
             channels, "x".join(map(str, out_shape)), "x".join(f"{v:g}" for v in spacing),
             len({item[0] for item in items}), sum(v == "test" for v in split.values()))
    return table


def _registered_grid(items) -> tuple[tuple[int, int, int], np.ndarray, Path]:
    """Shape and affine (RAS, as imaging.slicing reads them) of the first volume, checked from the
    headers to be every volume's (a subject's channels, and every subject: one template grid)."""
    grids = {}
    for subject, _, paths in items:
        if len(paths) > 1:
            _check_same_grid(subject, paths)
        grids[paths[0]] = ras_grid(paths[0])
    first, (shape, affine) = next(iter(grids.items()))
    for path, (other_shape, other_affine) in grids.items():
        if other_shape != shape or not np.allclose(other_affine, affine, atol=1e-4):
            raise InputError(f"{path} (shape {other_shape}) is not on the grid of {first} (shape {shape}); every "
                             f"volume of a volume dataset must be registered to one template grid")
    return shape, affine, first


def _grid_volume(path: Path, settings: VolumeDatasetSettings, shape, affine, first: Path) -> np.ndarray:
    """One volume read, normalised and on the dataset's grid; a problem is reported with the file name."""
    try:
        volume, own_affine = _load_ras(path, with_affine=True)
        if volume.shape != tuple(shape) or not np.allclose(own_affine, affine, atol=1e-4):
            raise InputError(f"not on the grid of {first} (shape {volume.shape} vs {tuple(shape)})")
        volume = normalise_volume(volume, settings.clip_percentile)
        out, _ = resample_box(volume, affine, settings.spacing_mm, settings.box)
        return np.clip(out, 0.0, 1.0, out=out)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def mask_on_grid(path: Path, settings: VolumeDatasetSettings) -> np.ndarray:
    """A brain mask on the registered grid (e.g. a subject's or the template's brain_mask.nii.gz
    from registration) brought onto a volume dataset's grid by the volumes' own resampling and box,
    then thresholded at one half: the ``mask`` evaluation/volumetric's brain volume and tissue
    histograms take. Errors name the file."""
    try:
        data, affine = _load_ras(path, with_affine=True)
        out, _ = resample_box((data > 0).astype(np.float32), affine, settings.spacing_mm, settings.box)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
    return out >= 0.5
