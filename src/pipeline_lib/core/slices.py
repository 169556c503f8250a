"""Access to the slice dataset written by the slicing stage (images.npy + slices.tsv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline_lib.core.errors import InputError


def load_table(table: Path) -> pd.DataFrame:
    return pd.read_csv(table, sep="\t", dtype={"subject": str, "split": str}, keep_default_na=False)


def load_images(images: Path) -> np.ndarray:
    """Memory-mapped (N, H, W) float32 array: large cohorts need not fit in memory twice."""
    return np.load(images, mmap_mode="r")


def split_rows(table: pd.DataFrame, split: str) -> np.ndarray:
    rows = table.index[table["split"] == split].to_numpy()
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
               seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Images (float32, in memory) and table rows of one split, optionally a seeded subset."""
    frame = load_table(table)
    rows = split_rows(frame, split)
    if n is not None:
        rows = subset_rows(rows, n, seed)
    data = load_images(images)
    if len(data) != len(frame):
        raise InputError(f"{images} has {len(data)} images but {table} has {len(frame)} rows")
    return np.asarray(data[rows], dtype=np.float32), frame.loc[rows].reset_index(drop=True)
