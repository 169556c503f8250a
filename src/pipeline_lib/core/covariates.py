"""Continuous covariates a 3-D model conditions on (a model's ``condition_on_covariates``).

Pinaya et al. (2022) condition their UK Biobank latent diffusion model on age, sex, ventricular and
brain volume, each scaled to [0, 1]. Here a covariate is any numeric column of the volume dataset's
table: a subject label (``subjects.tsv``: age, sex coded as numbers, ...) or ``brain_volume_ml``,
which building the dataset measures on every volume (:data:`BRAIN_VOLUME_COLUMN`). Each is scaled by
the training split's minimum and maximum; the scaling is stored with the model (its summary's
``covariates``), so requests in the column's own units can be scaled the same way when sampling.

Torch-free: the trainer, the sampler and the evaluation read the same scaling.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from pipeline_lib.core.errors import InputError

#: The column building a volume dataset adds: each volume's brain volume (mL) on the dataset's grid,
#: measured as the volumetric evaluation measures samples (evaluation/volumetric.brain_volumes_ml).
BRAIN_VOLUME_COLUMN = "brain_volume_ml"


def covariate_values(rows: pd.DataFrame, names: Sequence[str], where: str) -> np.ndarray:
    """The (N, K) float64 values of columns ``names`` of ``rows``; a missing column, or a value that
    is not a finite number, is an InputError naming the column and the subject."""
    values = np.empty((len(rows), len(names)))
    for k, name in enumerate(names):
        if name not in rows.columns:
            raise InputError(f"{where}: the dataset's table has no column '{name}' (columns: "
                             f"{', '.join(map(str, rows.columns))})")
        column = pd.to_numeric(rows[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(column)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            subject = rows["subject"].iloc[row] if "subject" in rows.columns else row
            raise InputError(f"{where}: covariate '{name}' of subject {subject} is {rows[name].iloc[row]!r}, "
                             f"not a number ({int(bad.sum())} row(s) like it); a covariate needs a value "
                             f"for every volume")
        values[:, k] = column
    return values


def fit_scaling(values: np.ndarray, names: Sequence[str], where: str) -> list[dict[str, Any]]:
    """Each covariate's training-split minimum and maximum: the model sees (value - min) / (max - min).
    A covariate that does not vary cannot condition anything: an error naming it."""
    scaling = []
    for k, name in enumerate(names):
        low, high = float(values[:, k].min()), float(values[:, k].max())
        if not high > low:
            raise InputError(f"{where}: covariate '{name}' takes one value ({low:g}) over the training split; "
                             f"a model cannot learn to follow it")
        scaling.append({"name": str(name), "min": low, "max": high})
    return scaling


def scale(values: np.ndarray, scaling: Sequence[dict[str, Any]]) -> np.ndarray:
    """Values (N, K) in their columns' units -> the model's [0, 1] scale (float32)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1, len(scaling))
    low = np.array([s["min"] for s in scaling])
    high = np.array([s["max"] for s in scaling])
    return ((values - low) / (high - low)).astype(np.float32)


def unscale(values: np.ndarray, scaling: Sequence[dict[str, Any]]) -> np.ndarray:
    """The model's [0, 1] scale -> the columns' units (float64)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1, len(scaling))
    low = np.array([s["min"] for s in scaling])
    high = np.array([s["max"] for s in scaling])
    return low + values * (high - low)


def draw_requests(train_values: np.ndarray, n: int, seed: int) -> np.ndarray:
    """The covariates to sample with: ``n`` rows of the training split's values (N, K), drawn with
    the seed (without replacement while they last), so the samples' covariates have the joint
    distribution of the training volumes'."""
    rng = np.random.default_rng(seed)
    count = len(train_values)
    if count == 0:
        raise InputError("no training rows to draw covariate requests from")
    rows = np.concatenate([rng.permutation(count) for _ in range(-(-n // count))])[:n]
    return np.asarray(train_values, dtype=np.float64)[rows]
