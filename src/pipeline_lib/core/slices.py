"""The slice dataset handed between stages (images.npy + slices.tsv) and checked image stacks.

Images are float32 (N, H, W) in [0, 1]; ``slices.tsv`` has one row per image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline_lib.core.errors import InputError

# Images checked at a time (bounds the float copies of a memory-mapped stack).
_VALIDATE_BLOCK = 256


def load_table(table: Path) -> pd.DataFrame:
    return pd.read_csv(table, sep="\t", dtype={"subject": str, "split": str}, keep_default_na=False)


def open_images(images: Path) -> np.ndarray:
    """Memory-mapped (N, H, W) float32 array: large cohorts need not fit in memory twice."""
    return np.load(images, mmap_mode="r")


def split_rows(table: pd.DataFrame, split: str, augmented: bool = False) -> np.ndarray:
    """Row numbers of one split. Offline-augmented images (``augmented`` 1, training subjects only)
    are left out unless ``augmented``: only training reads them, never a real reference set."""
    keep = table["split"] == split
    if not augmented and "augmented" in table.columns:
        keep &= table["augmented"].astype(str) != "1"
    rows = table.index[keep].to_numpy()
    if len(rows) == 0:
        raise InputError(f"the slice table has no '{split}' rows")
    return rows


def subset_rows(rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most ``n`` of ``rows``, drawn without replacement by ``seed``, in ascending order."""
    if n >= len(rows):
        return np.sort(rows)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=n, replace=False))


def load_split(images: Path, table: Path, split: str, n: int | None = None,
               seed: int = 0, augmented: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
    """Images (float32, in memory) and table rows of one split, optionally a seeded subset; the
    offline-augmented images only with ``augmented`` (see :func:`split_rows`)."""
    frame = load_table(table)
    rows = split_rows(frame, split, augmented)
    if n is not None:
        rows = subset_rows(rows, n, seed)
    data = open_images(images)
    if len(data) != len(frame):
        raise InputError(f"{images} has {len(data)} images but {table} has {len(frame)} rows")
    return np.asarray(data[rows], dtype=np.float32), frame.loc[rows].reset_index(drop=True)


def validate_images(images: np.ndarray, what: str) -> np.ndarray:
    """Check that ``images`` is a non-empty finite (N, H, W) stack in [0, 1].

    ``what`` names the array (or the file it came from) in error messages.
    Returns the array unchanged (no copy); raises InputError otherwise.
    """
    if not isinstance(images, np.ndarray):
        raise InputError(f"{what}: expected a numpy array, got {type(images).__name__}")
    if images.ndim != 3:
        raise InputError(f"{what}: expected images shaped (N, H, W), got shape {images.shape}")
    if min(images.shape) == 0:
        raise InputError(f"{what}: empty image stack, shape {images.shape}")
    if not (np.issubdtype(images.dtype, np.floating) or np.issubdtype(images.dtype, np.integer)):
        raise InputError(f"{what}: expected a numeric array, got dtype {images.dtype}")
    for start in range(0, images.shape[0], _VALIDATE_BLOCK):
        block = images[start:start + _VALIDATE_BLOCK]
        if not np.all(np.isfinite(block)):
            raise InputError(f"{what}: non-finite values (NaN or Inf) in images {start}..{start + len(block) - 1}")
        lo, hi = float(block.min()), float(block.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"{what}: intensities must lie in [0, 1]; images {start}..{start + len(block) - 1} "
                f"span [{lo:.6g}, {hi:.6g}]"
            )
    return images


def load_checked_images(path: str | os.PathLike) -> np.ndarray:
    """Load an ``.npy`` image stack and validate it; errors name the file."""
    path = Path(path)
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as a .npy image stack ({exc})") from exc
    return validate_images(images, str(path))
