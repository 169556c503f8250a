"""KID and precision / recall / density / coverage on Inception features; the distribution-metrics rules.

* **KID** (Bińkowski et al. 2018): the unbiased estimate of the squared MMD
  with the cubic polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over
  random subsets; the spread over subsets is reported as its std.
* **PRDC** (Naeem et al. 2020, k = 5): every real feature gets a ball whose
  radius is the distance to its k-th nearest other real feature.
  precision = share of samples inside some real ball; recall = share of real
  features inside some sample ball (radii from the samples' own k-th
  neighbours); density = mean number of real balls holding a sample, / k;
  coverage = share of real balls holding at least one sample. Distances are
  Euclidean, computed in row blocks (‖a‖² + ‖b‖² − 2ab in float64, clamped at
  0), so memory stays bounded by ``block_elements`` whatever the set sizes.

The rule jobs combine these with repeated and per-class FID (``fid.py``) into
``results/metrics/{model}.distribution.json``; ``report/distribution_section.py``
turns those files into the report section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import write_json
from pipeline_lib.core.settings import FidSettings, KidSettings, PrdcSettings, read_settings
from pipeline_lib.core.slices import grey_rows
from pipeline_lib.evaluation.fid import (frechet_distance_features, load_feature_file, per_class_fid, repeated_fid,
                                         sample_blocks_of)

# Distance-matrix entries held at once by the PRDC blocks (float64: 64 MB).
_BLOCK_ELEMENTS = 1 << 23


# -- KID ----------------------------------------------------------------------
def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (xᵀy / d + 1)³ for all row pairs, float64."""
    d = x.shape[1]
    return (np.asarray(x, np.float64) @ np.asarray(y, np.float64).T / d + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD between row sets x (m) and y (n) with the cubic polynomial kernel.

    Within-set means leave out the diagonal (i = j), which is what makes the
    estimate unbiased: it can be slightly negative when the sets agree.
    """
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise InputError(f"KID needs at least 2 feature vectors per set, got {m} and {n}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


def kid(sample_features: np.ndarray, real_features: np.ndarray, *, n_subsets: int = 100,
        subset_size: int = 1000, seed: int = 0) -> dict[str, Any]:
    """KID: mean and std (n − 1) of the unbiased MMD² over ``n_subsets`` random subsets.

    Each subset draws min(subset_size, n_samples, n_real) images from each side
    without replacement (as in Bińkowski et al. and torch-fidelity).
    """
    if n_subsets < 1:
        raise InputError(f"evaluation.kid.n_subsets must be at least 1, got {n_subsets}")
    n_s, n_r = len(sample_features), len(real_features)
    m = min(int(subset_size), n_s, n_r)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        si = rng.choice(n_s, size=m, replace=False)
        ri = rng.choice(n_r, size=m, replace=False)
        values.append(mmd2_unbiased(sample_features[si], real_features[ri]))
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if n_subsets > 1 else 0.0,
        "n_subsets": int(n_subsets),
        "subset_size": int(m),
        "n_samples": int(n_s),
        "n_real": int(n_r),
        "seed": int(seed),
    }


# -- PRDC ---------------------------------------------------------------------
def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _sq_distances(a: np.ndarray, b: np.ndarray, na: np.ndarray, nb: np.ndarray) -> np.ndarray:
    d = na[:, None] + nb[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0, out=d)


def _exact_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise ‖a − b‖², summed directly: identical pairs give bitwise identical values."""
    diff = a - b
    return np.einsum("ij,ij->i", diff, diff)


def _rows_per_block(n_cols: int, block_elements: int) -> int:
    return max(1, block_elements // max(1, n_cols))


class _Band:
    """Decides d < r² exactly near the boundary.

    The product form is off by about 1e-16·(‖a‖² + ‖b‖²); a point lying exactly on a
    ball's edge (a real sample's k-th neighbour, or a copy of it) would fall
    either side at random. Entries within ``tol`` of the radius are recomputed
    directly, the same way as the radii, so ties are decided consistently.
    """

    def __init__(self, *norms: np.ndarray):
        self.tol = 1e-9 * sum(float(n.max(initial=0.0)) for n in norms) + 1e-300

    def inside(self, d: np.ndarray, r2: np.ndarray, a: np.ndarray, b: np.ndarray,
               a_index: np.ndarray, b_index: np.ndarray, r2_axis: int) -> np.ndarray:
        """d[i, j] < r2 (r2 indexed along ``r2_axis``); a/b hold the rows behind d's axes."""
        r2b = r2[None, :] if r2_axis == 1 else r2[:, None]
        inside = d < r2b
        rows, cols = np.nonzero(np.abs(d - r2b) <= self.tol)
        # a set of identical images (blank slices) ties nearly every pair: the pairs' feature rows
        # are gathered a chunk at a time, never all at once
        chunk = max(1, _BLOCK_ELEMENTS // (4 * a.shape[1]))
        for start in range(0, len(rows), chunk):
            r, c = rows[start:start + chunk], cols[start:start + chunk]
            exact = _exact_sq(a[a_index[r]], b[b_index[c]])
            inside[r, c] = exact < (r2[c] if r2_axis == 1 else r2[r])
        return inside


def _knn_sq_radii(x: np.ndarray, k: int, block_elements: int) -> np.ndarray:
    """Squared k-th-neighbour distances, recomputed directly (see :class:`_Band`)."""
    n = len(x)
    if n <= k:
        raise InputError(f"k-nearest-neighbour radii need more than k = {k} feature vectors, got {n}")
    norms = _sq_norms(x)
    neighbour = np.empty(n, dtype=np.intp)
    step = _rows_per_block(n, block_elements)
    for r0 in range(0, n, step):
        d = _sq_distances(x[r0:r0 + step], x, norms[r0:r0 + step], norms)
        d[np.arange(len(d)), np.arange(r0, r0 + len(d))] = np.inf
        neighbour[r0:r0 + len(d)] = np.argpartition(d, k - 1, axis=1)[:, k - 1]
    return _exact_sq(x, x[neighbour])


def prdc(real_features: np.ndarray, sample_features: np.ndarray, *, nearest_k: int = 5,
         block_elements: int = _BLOCK_ELEMENTS) -> dict[str, Any]:
    """Precision, recall, density and coverage of Naeem et al. (2020) with ``nearest_k`` neighbours.

    Ball membership is strict (distance < radius), as in the authors' code.
    Memory: one block of at most ``block_elements`` distances at a time.
    """
    if nearest_k < 1:
        raise InputError(f"evaluation.prdc.nearest_k must be at least 1, got {nearest_k}")
    real = np.asarray(real_features, np.float64)
    fake = np.asarray(sample_features, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise InputError(f"feature sets must be (N, D) with the same D, got {real.shape} and {fake.shape}")
    real_r2 = _knn_sq_radii(real, nearest_k, block_elements)
    fake_r2 = _knn_sq_radii(fake, nearest_k, block_elements)
    real_norms, fake_norms = _sq_norms(real), _sq_norms(fake)
    band = _Band(real_norms, fake_norms)
    real_index = np.arange(len(real))
    in_some_real_ball = np.zeros(len(fake), dtype=bool)
    real_balls_holding = 0
    real_in_some_fake_ball = np.zeros(len(real), dtype=bool)
    nearest_d = np.full(len(real), np.inf)
    nearest_fake = np.zeros(len(real), dtype=np.intp)
    step = _rows_per_block(len(real), block_elements)
    for f0 in range(0, len(fake), step):
        block = slice(f0, min(f0 + step, len(fake)))
        fake_index = np.arange(block.start, block.stop)
        d = _sq_distances(fake[block], real, fake_norms[block], real_norms)
        inside_real = band.inside(d, real_r2, fake, real, fake_index, real_index, r2_axis=1)
        in_some_real_ball[block] = inside_real.any(axis=1)
        real_balls_holding += int(inside_real.sum())
        inside_fake = band.inside(d, fake_r2[block], fake, real, fake_index, real_index, r2_axis=0)
        real_in_some_fake_ball |= inside_fake.any(axis=0)
        closest = d.argmin(axis=0)
        better = d[closest, real_index] < nearest_d
        nearest_d[better] = d[closest, real_index][better]
        nearest_fake[better] = closest[better] + f0
    # Coverage compares each real's nearest sample with its radius: recompute those distances directly.
    nearest_exact = _exact_sq(real, fake[nearest_fake])
    return {
        "precision": float(in_some_real_ball.mean()),
        "recall": float(real_in_some_fake_ball.mean()),
        "density": float(real_balls_holding / (nearest_k * len(fake))),
        "coverage": float((nearest_exact < real_r2).mean()),
        "nearest_k": int(nearest_k),
        "n_real": int(len(real)),
        "n_samples": int(len(fake)),
    }


def _subset(features: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    if limit is None or len(features) <= limit:
        return features
    return features[np.sort(rng.choice(len(features), size=int(limit), replace=False))]


# -- rule jobs -------------------------------------------------------------------
def distribution_metrics(sample_features: np.ndarray, real_features: np.ndarray, *,
                         fid: Mapping[str, Any] | None = None, kid_cfg: Mapping[str, Any] | None = None,
                         prdc_cfg: Mapping[str, Any] | None = None,
                         sample_labels: np.ndarray | None = None, real_labels: np.ndarray | None = None,
                         class_column: str | None = None,
                         sample_blocks: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """All distribution metrics of one sample set against one real set (features as rows).

    FID: on all images (``fid_all``) and repeated on subsets (``fid``); per
    class when labels are given. KID and PRDC as configured. ``sample_blocks``
    (``evaluation.fid.fresh_samples``): one fresh sample set per FID repeat, row for row
    like ``sample_features`` (and its labels); KID, PRDC and ``fid_all`` use the main set.
    """
    f_cfg = read_settings(FidSettings, fid)
    k_cfg = read_settings(KidSettings, kid_cfg)
    p_cfg = read_settings(PrdcSettings, prdc_cfg)
    fid_result = repeated_fid(sample_features, real_features, repeats=f_cfg.repeats,
                              subset_size=f_cfg.subset_size, seed=f_cfg.seed, sample_blocks=sample_blocks)
    result: dict[str, Any] = {
        "n_samples": int(len(sample_features)),
        "n_real": int(len(real_features)),
        "feature_dim": int(np.shape(sample_features)[1]),
        "feature_network": "pytorch-fid InceptionV3 (TF FID weights 2015-12-05), pool3",
        "fid_all": frechet_distance_features(sample_features, real_features),
        "fid": fid_result,
        "warning": fid_result["warning"],
        "warning_message": fid_result["warning_message"],
        "kid": kid(sample_features, real_features, n_subsets=k_cfg.n_subsets,
                   subset_size=k_cfg.subset_size, seed=k_cfg.seed),
        "fid_per_class": None,
    }
    rng = np.random.default_rng(p_cfg.seed)
    result["prdc"] = prdc(_subset(real_features, p_cfg.max_real, rng),
                          _subset(sample_features, p_cfg.max_samples, rng),
                          nearest_k=p_cfg.nearest_k)
    if sample_labels is not None and real_labels is not None:
        classes = per_class_fid(sample_features, sample_labels, real_features, real_labels,
                                repeats=f_cfg.repeats, subset_size=f_cfg.subset_size,
                                seed=f_cfg.seed, sample_blocks=sample_blocks, equal_sizes=f_cfg.equal_per_class)
        result["fid_per_class"] = {"column": class_column, "classes": classes}
        if any(c.get("warning") for c in classes.values()):
            result["warning"] = True
            result["warning_message"] = " ".join(filter(None, [
                result["warning_message"],
                "Per-class FIDs use fewer images still (see each class's subset size)."]))
    return result


def _table_labels(table: Path, rows: np.ndarray, column: str, what: str) -> np.ndarray:
    from pipeline_lib.core.slices import load_table

    frame = load_table(table)
    if column not in frame.columns:
        raise InputError(f"{table}: no column '{column}' (needed for per-class FID of {what})")
    if len(rows) and (rows.min() < 0 or rows.max() >= len(frame)):
        raise InputError(f"{what}: feature rows do not fit {table} ({len(frame)} rows)")
    return frame[column].astype(str).to_numpy()[rows]


def _real_rows(arrays: Mapping[str, np.ndarray], path: Path) -> np.ndarray:
    if "rows" not in arrays:
        raise InputError(f"{path}: real feature file has no 'rows' array (slice-table rows)")
    return arrays["rows"]


def model_distribution_job(sample_features: Path, real_features: Path, table: Path, labels: Path,
                           out: Path, *, model: str, condition_on: str | None = None,
                           evaluation: Mapping[str, Any] | None = None) -> dict:
    """The distribution_metrics rule: one model's samples against the real training slices.

    Conditional models (``condition_on`` set and class labels in ``labels``)
    also get per-class FID against the training slices of each class. With
    ``evaluation.fid.fresh_samples`` every repeat uses its own sample block of the feature file.
    """
    import pandas as pd

    evaluation = evaluation or {}
    samples = load_feature_file(sample_features)
    real = load_feature_file(real_features)
    sample_labels = real_labels = None
    if condition_on:
        frame = pd.read_csv(labels, sep="\t", dtype=str, keep_default_na=False)
        # a stacked model's features are per channel (fid.model_features_job): labels repeat per channel
        frame = grey_rows(frame, int(samples.get("channels", 1)))
        if "label" not in frame.columns or len(frame) != len(samples["features"]):
            raise InputError(f"{labels}: expected a 'label' column with one row per sample "
                             f"({len(samples['features'])}), got {len(frame)} rows")
        if (frame["label"] != "").all():
            sample_labels = frame["label"].to_numpy()
            real_labels = _table_labels(table, _real_rows(real, real_features), condition_on, model)
    blocks = None
    if read_settings(FidSettings, evaluation.get("fid")).fresh_samples:
        blocks = sample_blocks_of(samples, sample_features)
    return _write_result(out, "model", model, "real training slices", samples["features"], real["features"],
                         evaluation, sample_labels, real_labels, condition_on, blocks)


def original_distribution_job(test_features: Path, train_features: Path, table: Path, out: Path, *,
                              class_columns: Sequence[str] = (),
                              evaluation: Mapping[str, Any] | None = None) -> dict:
    """The reference row: real test slices treated as samples, against the real training slices.

    Per-class FID for the first of ``class_columns`` (the label that
    conditional models use) when it is given.
    """
    evaluation = evaluation or {}
    test = load_feature_file(test_features)
    train = load_feature_file(train_features)
    sample_labels = real_labels = None
    column = class_columns[0] if class_columns else None
    if column:
        sample_labels = _table_labels(table, _real_rows(test, test_features), column, "the test split")
        real_labels = _table_labels(table, _real_rows(train, train_features), column, "the train split")
    return _write_result(out, "original", "original", "real training slices (samples = real test slices)",
                         test["features"], train["features"], evaluation, sample_labels, real_labels, column)


def _write_result(out: Path, kind: str, model: str, reference: str, sample_features: np.ndarray,
                  real_features: np.ndarray, evaluation: Mapping[str, Any], sample_labels, real_labels,
                  class_column: str | None, sample_blocks: Sequence[np.ndarray] | None = None) -> dict:
    result = {"kind": kind, "model": model, **distribution_metrics(
        sample_features, real_features, fid=evaluation.get("fid"), kid_cfg=evaluation.get("kid"),
        prdc_cfg=evaluation.get("prdc"), sample_labels=sample_labels, real_labels=real_labels,
        class_column=class_column, sample_blocks=sample_blocks), "reference": reference}
    write_json(out, result)
    return result
