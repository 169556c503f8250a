"""Fréchet Inception Distance (Ballesteros Ramirez) computed offline, from stored Inception features.

Pipeline
    1. Images (N, H, W) in [0, 1] become 3-channel tensors (the grey value in
       every channel, as PIL's ``convert('RGB')`` does in pytorch-fid's command
       line) and go through pytorch-fid's ``InceptionV3`` with its own
       ``resize_input`` (bilinear to 299 × 299, ``align_corners=False``) and
       ``normalize_input`` (to [-1, 1]). The network runs in float32 with the
       ``channels_last`` memory format: same features, about 1.6× faster on CPU.
       bfloat16 would be faster still but moves FID, so it is not offered.
    2. The 2048-d pool3 features of a set are stored once (``.npz`` holding
       ``features``, ``mu``, ``sigma``) and every FID is computed from them.
    3. FID = ||μ₁ − μ₂||² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½.

The trace of the matrix square root is computed exactly without ``sqrtm``:

* from statistics: with any factor Σ₁ = F Fᵀ (Cholesky), Σ₁Σ₂ is similar to
  the symmetric Fᵀ Σ₂ F, so tr (Σ₁Σ₂)^½ = Σ √λᵢ(Fᵀ Σ₂ F);
* from features (A, B = centred feature matrices, n₁ and n₂ rows): Σ₁ = AᵀA/(n₁−1),
  Σ₂ = BᵀB/(n₂−1), and the non-zero eigenvalues of Σ₁Σ₂ are the squared singular
  values of A Bᵀ/√((n₁−1)(n₂−1)), so tr (Σ₁Σ₂)^½ is the nuclear norm of that
  n₁ × n₂ matrix — cheap whenever a set is smaller than the feature dimension,
  which is exactly when ``sqrtm`` of the rank-deficient product is least accurate.

Repeated FID (Ballesteros Ramirez: 20 repeats, mean ± std) draws R random subsets of
``subset_size`` images from each side; with fewer images than feature
dimensions the covariance is rank-deficient and FID is biased upwards, so the
result then carries a warning.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from scipy import linalg

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.progress import Progress
from pipeline_lib.core.io import atomic_path
from pipeline_lib.core.settings import FidSettings, read_settings

FEATURE_DIM = 2048
FEATURE_FILE_KEYS = ("features", "mu", "sigma")
# Images read from disk at a time by the feature rules (about 64 MB at 128 px).
_CHUNK = 1024

log = logging.getLogger("pipeline.fid")


# -- feature extraction ---------------------------------------------------------
def load_feature_network(weights: str | os.PathLike, device: str = "auto", channels_last: bool = True):
    """pytorch-fid's InceptionV3 (pool3 output) from ``weights`` on ``device``, optionally channels_last."""
    import torch

    from pipeline_lib.core.pretrained import load_fid_inception
    from pipeline_lib.core.runtime import select_device

    net = load_fid_inception(weights, device=select_device(device), output_blocks=(3,))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def inception_input(batch: np.ndarray, device, channels_last: bool = True):
    """(B, H, W) grey images in [0, 1] → a (B, 3, H, W) float32 tensor on ``device``.

    Resizing to 299 and mapping to [-1, 1] are left to pytorch-fid's network.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
    x = x.unsqueeze(1).expand(-1, 3, -1, -1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


def extract_features(images: np.ndarray, net, *, batch_size: int = 50, channels_last: bool = True,
                     what: str = "images", progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Pool3 features (N, 2048) float32 of an (N, H, W) stack in [0, 1], in batches.

    ``images`` may be memory-mapped; only one batch is in memory at a time.
    ``what`` names the stack (its file) in errors; ``progress(done, total)``
    is called after every batch.
    """
    import torch

    from pipeline_lib.core.slices import validate_images

    validate_images(images, what)
    if batch_size < 1:
        raise InputError(f"evaluation.fid.batch_size must be positive, got {batch_size}")
    device = next(net.parameters()).device
    n = images.shape[0]
    out = np.empty((n, FEATURE_DIM), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            x = inception_input(images[start:start + batch_size], device, channels_last)
            pred = net(x)[0]
            out[start:start + len(x)] = pred.reshape(len(x), -1).float().cpu().numpy()
            if progress is not None:
                progress(min(start + batch_size, n), n)
    return out


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64, ``np.cov`` with n − 1) of (N, D) features, as pytorch-fid."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise InputError(f"need at least 2 feature vectors shaped (N, D), got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def save_feature_file(path: str | os.PathLike, features: np.ndarray, **extra: np.ndarray) -> Path:
    """Write ``features`` (float32), their ``mu`` and ``sigma`` and any ``extra`` arrays to an .npz, atomically."""
    features = np.asarray(features, dtype=np.float32)
    mu, sigma = feature_statistics(features)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, features=features, mu=mu, sigma=sigma, **extra)
    return Path(path)


def load_feature_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Arrays of a feature file written by :func:`save_feature_file`, checked; errors name the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as a feature file (.npz) ({exc})") from exc
    missing = [key for key in FEATURE_FILE_KEYS if key not in arrays]
    if missing:
        raise InputError(f"{path}: not a feature file, missing arrays {missing}")
    feats = arrays["features"]
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise InputError(f"{path}: features must be (N ≥ 2, D), got shape {feats.shape}")
    if not np.all(np.isfinite(feats)):
        raise InputError(f"{path}: features contain NaN or Inf")
    return arrays


# -- Fréchet distance -------------------------------------------------------------
def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) from their statistics.

    Equals pytorch-fid's ``calculate_frechet_distance`` (to about 1e-12
    relative on well-conditioned inputs) without its ``sqrtm``: the trace of
    (Σ₁Σ₂)^½ is Σ √λ of the symmetric Fᵀ Σ₂ F with Σ₁ = F Fᵀ.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise InputError(f"statistics do not match: mu {mu1.shape} / {mu2.shape}, "
                         f"sigma {sigma1.shape} / {sigma2.shape}")
    factor = covariance_factor(sigma1)
    inner = factor.T @ sigma2 @ factor
    tr_sqrt = _sqrt_eigen_sum(inner)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_sqrt)


def covariance_factor(sigma: np.ndarray) -> np.ndarray:
    """F with F Fᵀ = sigma: Cholesky, or V √Λ from the eigendecomposition when sigma is singular."""
    try:
        return linalg.cholesky(sigma, lower=True, check_finite=True)
    except linalg.LinAlgError:
        w, v = linalg.eigh(sigma)
        return v * np.sqrt(np.clip(w, 0.0, None))


def _sqrt_eigen_sum(symmetric: np.ndarray) -> float:
    # Tiny negative eigenvalues of a PSD matrix are rounding error.
    w = linalg.eigvalsh((symmetric + symmetric.T) / 2.0)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets (rows = images), with covariances as ``np.cov`` (n − 1).

    When the smaller set has fewer rows than dimensions, tr (Σ₁Σ₂)^½ is the
    nuclear norm of A Bᵀ (or of A F with F Fᵀ = BᵀB when the larger set has
    more rows than dimensions), exact and cheap; otherwise the statistics path
    of :func:`frechet_distance`.
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise InputError(f"feature sets must be (N, D) with the same D, got {f1.shape} and {f2.shape}")
    if min(len(f1), len(f2)) < 2:
        raise InputError(f"FID needs at least 2 images per set, got {len(f1)} and {len(f2)}")
    dim = f1.shape[1]
    small, large = (f1, f2) if len(f1) <= len(f2) else (f2, f1)
    if len(small) >= dim:
        return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    a = small - small.mean(axis=0)
    b = large - large.mean(axis=0)
    n_a, n_b = len(a), len(b)
    if n_b <= dim:
        tr_sqrt = float(linalg.svdvals(a @ b.T).sum()) / np.sqrt((n_a - 1) * (n_b - 1))
    else:
        # B's scatter matrix BᵀB = F Fᵀ replaces the n_b × n_b product, bounding memory by n_b·D.
        factor = covariance_factor(b.T @ b)
        tr_sqrt = float(linalg.svdvals(a @ factor).sum()) / np.sqrt((n_a - 1) * (n_b - 1))
    diff = f1.mean(axis=0) - f2.mean(axis=0)
    tr_a = float(np.einsum("ij,ij->", a, a)) / (n_a - 1)
    tr_b = float(np.einsum("ij,ij->", b, b)) / (n_b - 1)
    return float(diff @ diff + tr_a + tr_b - 2.0 * tr_sqrt)


# -- repeated and per-class FID ---------------------------------------------------
def small_sample_warning(subset_size: int, feature_dim: int) -> str | None:
    """The report's warning when FID is estimated from fewer images than feature dimensions."""
    if subset_size >= feature_dim:
        return None
    return (f"FID computed on {subset_size} images per set, fewer than the {feature_dim} feature "
            f"dimensions: the covariance estimates are rank-deficient and FID is strongly biased "
            f"upwards. Compare only FIDs computed with the same number of images.")


def repeated_fid(sample_features: np.ndarray, real_features: np.ndarray, *, repeats: int = 20,
                 subset_size: int | None = None, seed: int = 0) -> dict[str, Any]:
    """FID on ``repeats`` random subsets (without replacement) of ``subset_size`` images per side.

    ``subset_size`` defaults to min(n_samples, n_real); with it equal to both
    set sizes every repeat sees the same images (std 0). Returns mean, std
    (n − 1), all values, the sizes, and ``warning`` (bool) + ``warning_message``.
    """
    n_s, n_r = len(sample_features), len(real_features)
    m = min(n_s, n_r) if subset_size is None else int(subset_size)
    if repeats < 1:
        raise InputError(f"evaluation.fid.repeats must be at least 1, got {repeats}")
    if m < 2:
        raise InputError(f"FID needs subsets of at least 2 images, got {m} "
                         f"(samples: {n_s}, real: {n_r})")
    if m > min(n_s, n_r):
        raise InputError(f"evaluation.fid.subset_size {m} exceeds the available images "
                         f"(samples: {n_s}, real: {n_r})")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(repeats):
        si = np.sort(rng.choice(n_s, size=m, replace=False))
        ri = np.sort(rng.choice(n_r, size=m, replace=False))
        values.append(frechet_distance_features(sample_features[si], real_features[ri]))
    dim = int(np.shape(sample_features)[1])
    message = small_sample_warning(m, dim)
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if repeats > 1 else 0.0,
        "values": [float(v) for v in values],
        "repeats": int(repeats),
        "subset_size": int(m),
        "n_samples": int(n_s),
        "n_real": int(n_r),
        "feature_dim": dim,
        "seed": int(seed),
        "warning": message is not None,
        "warning_message": message,
    }


def per_class_fid(sample_features: np.ndarray, sample_labels: np.ndarray, real_features: np.ndarray,
                  real_labels: np.ndarray, *, repeats: int = 20, subset_size: int | None = None,
                  seed: int = 0) -> dict[str, dict[str, Any]]:
    """Repeated FID of each class's samples against the real images of that class (Ballesteros Ramirez, Table 2).

    ``subset_size`` is capped per class at the smaller class count. A class
    with fewer than 2 images on either side gets ``{"skipped": reason}``.
    """
    sample_labels = np.asarray(sample_labels).astype(str)
    real_labels = np.asarray(real_labels).astype(str)
    if len(sample_labels) != len(sample_features) or len(real_labels) != len(real_features):
        raise InputError(f"labels and features differ in length: samples {len(sample_labels)} vs "
                         f"{len(sample_features)}, real {len(real_labels)} vs {len(real_features)}")
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(sample_labels)):
        s = sample_features[sample_labels == name]
        r = real_features[real_labels == name]
        if min(len(s), len(r)) < 2:
            out[name] = {"skipped": f"class '{name}' has {len(s)} samples and {len(r)} real images; "
                                    f"FID needs at least 2 of each", "n_samples": len(s), "n_real": len(r)}
            continue
        size = None if subset_size is None else min(int(subset_size), len(s), len(r))
        out[name] = repeated_fid(s, r, repeats=repeats, subset_size=size, seed=seed)
    return out


# -- rule jobs ----------------------------------------------------------------------
def fid_weights_job(out: str | os.PathLike, configured: str | os.PathLike | None = None) -> Path:
    """The fid_weights rule: make ``out`` the FID Inception weights (converted offline if needed).

    pytorch-fid's own file (torch hub cache) or a configured file is copied to
    ``out``, so every FID job reads one declared output.
    """
    from pipeline_lib.core.pretrained import fid_inception_weights

    out = Path(out)
    source = fid_inception_weights(out, configured)
    if source.resolve() != out.resolve():
        with atomic_path(out, suffix=".pth") as tmp:
            shutil.copyfile(source, tmp)
    log.info("FID Inception weights ready at %s (from %s)", out, source)
    return out


def real_features_job(weights: Path, images: Path, table: Path, split: str, out: Path, *,
                      settings: FidSettings | Mapping[str, Any] | None = None, threads: int | None = None) -> dict:
    """The real_features rule: Inception features of one split's slices (all, or ``max_real``).

    The .npz also holds ``rows``, the slice-table rows of the features, so
    per-class statistics can be drawn from it later.
    """
    from pipeline_lib.core.slices import load_table, open_images, split_rows, subset_rows
    from pipeline_lib.core.runtime import configure_threads

    cfg = read_settings(FidSettings, settings)
    configure_threads(threads)
    frame = load_table(table)
    data = open_images(images)
    if len(data) != len(frame):
        raise InputError(f"{images} has {len(data)} images but {table} has {len(frame)} rows")
    rows = split_rows(frame, split)
    if cfg.max_real is not None:
        rows = subset_rows(rows, cfg.max_real, cfg.seed)
    features = _features_of(data, rows, weights, cfg, f"{images} ({split} split)")
    save_feature_file(out, features, rows=rows.astype(np.int64))
    return {"split": split, "n_images": int(len(rows))}


def model_features_job(weights: Path, samples: Path, out: Path, *, settings: FidSettings | Mapping[str, Any] | None = None,
                       threads: int | None = None) -> dict:
    """The model_features rule: Inception features of one model's samples."""
    from pipeline_lib.core.slices import load_checked_images
    from pipeline_lib.core.runtime import configure_threads

    cfg = read_settings(FidSettings, settings)
    configure_threads(threads)
    stack = load_checked_images(samples)
    features = _features_of(stack, np.arange(len(stack)), weights, cfg, str(samples))
    save_feature_file(out, features)
    return {"n_images": int(len(stack))}


def _features_of(source: np.ndarray, rows: np.ndarray, weights: Path, cfg: FidSettings,
                 what: str) -> np.ndarray:
    """Features of ``source[rows]``, read in chunks so a memory-mapped split is never loaded whole."""
    net = load_feature_network(weights, cfg.device, cfg.channels_last)
    out = np.empty((len(rows), FEATURE_DIM), dtype=np.float32)
    progress = Progress(f"Inception features of {what}", len(rows), log=log)
    for start in range(0, len(rows), _CHUNK):
        chunk = np.asarray(source[rows[start:start + _CHUNK]], dtype=np.float32)
        out[start:start + len(chunk)] = extract_features(
            chunk, net, batch_size=cfg.batch_size, channels_last=cfg.channels_last,
            what=what, progress=lambda done, _, offset=start: progress.update(offset + done))
    return out
