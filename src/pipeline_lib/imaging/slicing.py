"""From registered volumes to a 2-D dataset of axial slices (Ungría Hirte et al., section 3.1).

Seed 001 dropped the 6 top and 8 bottom of 40 axial slices, clipped the
intensities at the 95th percentile and divided by the remaining maximum.
Here each volume is normalised on its own, its axial slices are cut in one
fixed display orientation, resized to square images and every slice inherits
its subject's train/test split, so no subject contributes to both.

Outputs: ``images.npy`` (N x H x W float32 in [0, 1], rows ordered by subject
then slice) and ``slices.tsv`` (row, subject, slice_index, split, labels...).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import atomic_path, write_tsv
from pipeline_lib.core.qc import FLAGGED, outputs_with_status, usable_outputs

log = logging.getLogger(__name__)

TABLE_COLUMNS = ["row", "subject", "slice_index", "split"]
# ingestion bookkeeping, not labels; a source path or key may identify a patient
_NOT_LABELS = {"subject", "format", "kind", "path", "source_key", "exists"}


def normalise_volume(volume: np.ndarray, clip_percentile: float = 95.0) -> np.ndarray:
    """Clip at the ``clip_percentile`` of the volume's intensities and divide by the new maximum.

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
    ceiling = float(np.percentile(data, clip_percentile))
    if ceiling <= 0:
        raise InputError(f"the {clip_percentile}th intensity percentile is 0 (more than "
                         f"{clip_percentile}% of the voxels are background); raise clip_percentile")
    return (np.minimum(data, ceiling) / np.float32(ceiling)).astype(np.float32)


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


def build_slice_dataset(registered: dict[str, Path], labels: pd.DataFrame | None,
                        out_images: Path, out_table: Path, *, drop_top: int, drop_bottom: int,
                        clip_percentile: float, image_size: int, test_fraction: float,
                        seed: int) -> pd.DataFrame:
    """Normalise, slice and resize every registered volume; write images.npy and slices.tsv.

    ``registered`` maps subject -> registered NIfTI. Rows are ordered by
    subject, then slice (inferior first). Label columns of ``labels`` (joined
    on ``subject``; bookkeeping columns such as ``format`` and ``path`` are
    left out) are copied to every slice of the subject. The image array is
    written slice by slice into a memory-mapped temporary file, so a large
    cohort is never held in memory, and renamed into place only when complete.
    """
    if not registered:
        raise InputError("no registered subjects to slice (did every subject fail earlier?)")
    subjects = sorted(registered)
    label_table = _label_table(labels, subjects)
    depths = {s: _volume_depth(Path(registered[s])) for s in subjects}
    for subject in subjects:
        if drop_top + drop_bottom >= depths[subject]:
            raise InputError(f"{registered[subject]}: dropping {drop_top} top and {drop_bottom} bottom "
                             f"slices leaves none of its {depths[subject]} axial slices")
    total = sum(depths[s] - drop_top - drop_bottom for s in subjects)
    split = split_subjects(subjects, test_fraction, seed)

    rows = []
    with atomic_path(out_images, suffix=".npy") as tmp:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                           shape=(total, int(image_size), int(image_size)))
        start = 0
        for subject in subjects:
            path = Path(registered[subject])
            slices, kept = _subject_slices(path, drop_top, drop_bottom, clip_percentile, image_size)
            images[start:start + len(slices)] = slices
            rows += [{"row": start + i, "subject": subject, "slice_index": int(k), "split": split[subject]}
                     for i, k in enumerate(kept)]
            start += len(slices)
        images.flush()
        del images
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    if label_table is not None:
        table = table.merge(label_table, on="subject", how="left", validate="many_to_one")
    write_tsv(out_table, table)
    log.info("%d slices from %d subjects (%d test subjects)", total, len(subjects),
             sum(v == "test" for v in split.values()))
    return table


def _subject_slices(path: Path, drop_top: int, drop_bottom: int, clip_percentile: float,
                    image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """One subject's finished slices; a problem is reported with the file name."""
    try:
        volume = _load_ras(path)
        slices, kept = extract_axial_slices(normalise_volume(volume, clip_percentile), drop_top, drop_bottom)
        return resize_slices(slices, image_size), kept
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def _load_ras(path: Path) -> np.ndarray:
    """The volume's data in RAS voxel order (float32)."""
    try:
        image = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for broken files
        raise InputError(f"not a readable NIfTI volume ({type(exc).__name__}: {exc})") from exc
    if data.ndim != 3:
        raise InputError(f"expected a 3-D volume, got shape {data.shape}")
    return data


def _volume_depth(path: Path) -> int:
    """Number of axial (inferior-superior) slices, read from the header only."""
    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken files
        raise InputError(f"{path}: not a readable NIfTI volume ({type(exc).__name__}: {exc})") from exc
    if len(image.shape) != 3:
        raise InputError(f"{path}: expected a 3-D volume, got shape {image.shape}")
    axis = nib.io_orientation(image.affine)[:, 0].tolist().index(2)
    return int(image.shape[axis])


def _label_table(labels: pd.DataFrame | None, subjects: list[str]) -> pd.DataFrame | None:
    """Label columns per subject, checked to cover every subject exactly once."""
    if labels is None:
        return None
    if "subject" not in labels.columns:
        raise InputError(f"label table has no 'subject' column (columns: {', '.join(map(str, labels.columns))})")
    reserved = [c for c in labels.columns if c in TABLE_COLUMNS and c != "subject"]
    if reserved:
        raise InputError(f"label column name(s) clash with slices.tsv columns: {', '.join(reserved)}")
    keep = ["subject"] + [c for c in labels.columns if c not in _NOT_LABELS]
    table = labels.loc[:, keep].copy()
    table["subject"] = table["subject"].astype(str)
    repeated = sorted(set(table.loc[table["subject"].duplicated(), "subject"]))
    if repeated:
        raise InputError(f"label table lists subject(s) more than once: {', '.join(repeated)}")
    missing = sorted(set(subjects) - set(table["subject"]))
    if missing:
        raise InputError(f"label table lacks registered subject(s): {', '.join(missing)}")
    return table
