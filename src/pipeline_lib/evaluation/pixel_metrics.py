"""Ungría Hirte et al.'s sample-quality metrics (Ungría Hirte et al., section 3.3, Table 1) and their rules.

All metrics take image stacks shaped ``(N, H, W)`` with intensities in [0, 1]
and compute in float64. "Per-pixel MSE" between two images is
``||a - b||² / D`` with ``D = H * W`` pixels.

* Dataset similarity (DS) and intra-sample diversity (ISD) are means over all
  pairs; both reduce algebraically to per-image squared norms and the sum
  image, so they cost O(N·D) and never form a pair.
* Minimum ISD needs each sample's nearest other sample; it is found with a
  blocked float64 matrix product (``||a||² + ||b||² − 2 a·b``) whose memory is
  bounded by the block size. The distance to the neighbour found is then
  recomputed directly, because the product form loses digits exactly for the
  near-duplicate pairs this metric is about.
* Laplacian variance is computed on ``image * scale``. Seed 001 reports values
  around 1,500 for real images, which only fits an 8-bit intensity scale, so
  the default scale is 255.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import write_json
from pipeline_lib.core.slices import load_checked_images, open_split, validate_images

#: Intensity scale applied before the Laplacian (8-bit, as Ungría Hirte et al.'s values imply).
DEFAULT_SHARPNESS_SCALE = 255.0

# Images converted to float64 at a time by the streaming reductions; bounds
# the extra memory to about _BLOCK * H * W * 8 bytes.
_BLOCK = 256


def dataset_similarity(samples: np.ndarray, originals: np.ndarray) -> float:
    """Mean per-pixel MSE over all (sample, original) pairs (Ungría Hirte et al., eq. 11).

    Uses mean_i mean_j ||a_i − b_j||² = mean||a||² + mean||b||² − 2 ā·b̄,
    divided by the number of pixels.
    """
    validate_images(samples, "samples")
    validate_images(originals, "originals")
    _check_same_image_shape(samples, originals, "samples", "originals")
    n_a, sq_a, sum_a = _moments(samples)
    n_b, sq_b, sum_b = _moments(originals)
    d = _pixels(samples)
    value = sq_a / n_a + sq_b / n_b - 2.0 * float(np.dot(sum_a / n_a, sum_b / n_b))
    return max(value, 0.0) / d


def intra_sample_diversity(samples: np.ndarray) -> float:
    """Mean per-pixel MSE over ordered pairs i ≠ j of samples (Ungría Hirte et al., eq. 12).

    The sum over all ordered pairs (the i = j terms are zero) equals
    2N Σ||a_i||² − 2||Σ a_i||²; dividing by N(N − 1) gives the mean over i ≠ j.
    """
    validate_images(samples, "samples")
    n, sq, total = _moments(samples)
    if n < 2:
        raise InputError(f"samples: intra-sample diversity needs at least 2 images, got {n}")
    pair_sum = 2.0 * n * sq - 2.0 * float(np.dot(total, total))
    return max(pair_sum, 0.0) / (n * (n - 1)) / _pixels(samples)


def minimum_isd(samples: np.ndarray, block: int = _BLOCK) -> float:
    """Mean over samples of the per-pixel MSE to the nearest *other* sample (eq. 13).

    Nearest neighbours come from a blocked float64 matrix product, clamped at
    0 with the diagonal excluded; memory grows with ``block``, not with N.
    """
    validate_images(samples, "samples")
    if block < 1:
        raise ValueError(f"block must be positive, got {block}")
    n = samples.shape[0]
    if n < 2:
        raise InputError(f"samples: minimum ISD needs at least 2 images, got {n}")
    norms = _row_norms(samples, block)
    nearest = _nearest_other(samples, norms, block)
    total = 0.0
    for start in range(0, n, block):
        rows = _flat64(samples[start : start + block])
        partners = _flat64(samples[nearest[start : start + block]])
        total += float(np.sum((rows - partners) ** 2))
    return total / n / _pixels(samples)


def laplacian_variance(images: np.ndarray, scale: float = DEFAULT_SHARPNESS_SCALE) -> np.ndarray:
    """Per-image variance of the Laplacian of ``image * scale`` (Ungría Hirte et al.'s sharpness).

    Uses ``cv2.Laplacian`` with its default 3×3 kernel ([0,1,0],[1,−4,1],[0,1,0])
    and reflect-101 borders on float64 input with a CV_64F result (opencv
    rejects float32 → CV_64F). The variance is the population variance.
    ``scale`` = 255 puts values on Ungría Hirte et al.'s 8-bit scale.
    """
    import cv2  # heavy import, only needed here

    validate_images(images, "images")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    out = np.empty(images.shape[0], dtype=np.float64)
    for start, block in _blocks(images):
        for i, image in enumerate(block, start):
            scaled = np.ascontiguousarray(image, dtype=np.float64) * scale
            out[i] = cv2.Laplacian(scaled, cv2.CV_64F).var()
    return out


def reconstruction_mse(originals: np.ndarray, reconstructions: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation over images of the per-image per-pixel MSE."""
    per_image, _ = _per_image_mse(originals, reconstructions)
    return float(per_image.mean()), float(per_image.std())


def pixel_squared_error_std(per_image_mse: np.ndarray, per_image_fourth: np.ndarray) -> float:
    """Standard deviation over every pixel of every image of the squared error, from each image's
    mean squared error and mean fourth power of the error (images of equal size): the spread
    Ungría Hirte et al. give beside their "pixel-by-pixel mean squared error" (0.004 ± 0.02, a
    spread five times the mean, which no spread over images of a per-image mean reaches)."""
    mean = float(per_image_mse.mean())
    return float(np.sqrt(max(float(per_image_fourth.mean()) - mean * mean, 0.0)))


def sample_metrics(
    samples: np.ndarray, originals: np.ndarray, *, sharpness_scale: float = DEFAULT_SHARPNESS_SCALE
) -> dict:
    """Seed 001's Table 1 row for ``samples`` against ``originals``.

    For the "Original" row pass the original images as ``samples`` too.
    """
    sharpness = laplacian_variance(samples, scale=sharpness_scale)
    return {
        "dataset_similarity": dataset_similarity(samples, originals),
        "isd": intra_sample_diversity(samples),
        "min_isd": minimum_isd(samples),
        "sharpness_mean": float(sharpness.mean()),
        "sharpness_std": float(sharpness.std()),
        "sharpness_scale": float(sharpness_scale),
        "n_samples": int(samples.shape[0]),
        "n_originals": int(originals.shape[0]),
    }


def reconstruction_metrics(
    originals: np.ndarray, reconstructions: np.ndarray, sharpness_scale: float = DEFAULT_SHARPNESS_SCALE
) -> dict:
    """Reconstruction error and sharpness of reconstructions vs originals (Ungría Hirte et al., 3.3)."""
    per_image, per_image_fourth = _per_image_mse(originals, reconstructions)
    sharp_rec = laplacian_variance(reconstructions, scale=sharpness_scale)
    sharp_orig = laplacian_variance(originals, scale=sharpness_scale)
    return {
        "recon_mse_mean": float(per_image.mean()),
        "recon_mse_std": float(per_image.std()),
        "recon_mse_pixel_std": pixel_squared_error_std(per_image, per_image_fourth),
        "recon_sharpness_mean": float(sharp_rec.mean()),
        "recon_sharpness_std": float(sharp_rec.std()),
        "original_sharpness_mean": float(sharp_orig.mean()),
        "original_sharpness_std": float(sharp_orig.std()),
        "sharpness_scale": float(sharpness_scale),
        "n_reconstructions": int(reconstructions.shape[0]),
    }


def _per_image_mse(originals: np.ndarray, reconstructions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image's mean squared error and mean fourth power of the error (float64)."""
    validate_images(originals, "originals")
    validate_images(reconstructions, "reconstructions")
    if originals.shape != reconstructions.shape:
        raise InputError(
            f"reconstructions: shape {reconstructions.shape} does not match originals {originals.shape}"
        )
    mse = np.empty(originals.shape[0], dtype=np.float64)
    fourth = np.empty(originals.shape[0], dtype=np.float64)
    for start in range(0, originals.shape[0], _BLOCK):
        a = originals[start : start + _BLOCK].astype(np.float64)
        b = reconstructions[start : start + _BLOCK].astype(np.float64)
        squared = (a - b) ** 2
        mse[start : start + len(a)] = squared.mean(axis=(1, 2))
        fourth[start : start + len(a)] = (squared**2).mean(axis=(1, 2))
    return mse, fourth


def _nearest_other(images: np.ndarray, norms: np.ndarray, block: int) -> np.ndarray:
    """Index of each image's nearest other image (squared L2), by blocked products; ``images`` is
    read a block at a time (an array or a split on disk, core.slices.SplitImages)."""
    n = images.shape[0]
    best = np.full(n, np.inf)
    nearest = np.zeros(n, dtype=np.intp)
    for r0 in range(0, n, block):
        rows = _flat64(images[r0 : r0 + block])
        r1 = r0 + len(rows)
        for c0 in range(0, n, block):
            cols = rows if c0 == r0 else _flat64(images[c0 : c0 + block])
            c1 = c0 + len(cols)
            dist = norms[r0:r1, None] + norms[None, c0:c1] - 2.0 * (rows @ cols.T)
            np.maximum(dist, 0.0, out=dist)
            if c0 == r0:
                np.fill_diagonal(dist, np.inf)
            arg = dist.argmin(axis=1)
            cand = dist[np.arange(len(rows)), arg]
            better = cand < best[r0:r1]
            best[r0:r1][better] = cand[better]
            nearest[r0:r1][better] = arg[better] + c0
    return nearest


def _row_norms(images: np.ndarray, block: int) -> np.ndarray:
    out = np.empty(images.shape[0], dtype=np.float64)
    for start in range(0, images.shape[0], block):
        rows = _flat64(images[start : start + block])
        out[start : start + len(rows)] = np.einsum("ij,ij->i", rows, rows)
    return out


def _flat64(block: np.ndarray) -> np.ndarray:
    """A block of images as float64 rows of pixels."""
    return np.asarray(block).reshape(len(block), -1).astype(np.float64)


def _moments(images: np.ndarray) -> tuple[int, float, np.ndarray]:
    """(N, Σ||x_i||², Σ x_i) in float64, streamed in blocks."""
    n = images.shape[0]
    sq = 0.0
    total = np.zeros(_pixels(images), dtype=np.float64)
    for _, block in _blocks(images):
        flat = block.reshape(len(block), -1).astype(np.float64)
        sq += float(np.einsum("ij,ij->", flat, flat))
        total += flat.sum(axis=0)
    return n, sq, total


def _blocks(images: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, images.shape[0], _BLOCK):
        yield start, images[start : start + _BLOCK]


def _pixels(images: np.ndarray) -> int:
    return int(images.shape[1] * images.shape[2])


def _check_same_image_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[1:] != b.shape[1:]:
        raise InputError(f"{name_a}: image size {a.shape[1:]} differs from {name_b} {b.shape[1:]}")


# ----------------------------------------------------------------- rule jobs


def model_metrics_job(samples: Path, reconstructions: Path, images: Path, table: Path, out: Path, *,
                      sharpness_scale: float, n_reconstruct: int, seed: int) -> dict:
    """Samples against all training slices; reconstructions against the test slices they came from.
    The slices are read from disk a block at a time (core.slices.open_split)."""
    originals, _ = open_split(images, table, "train", grey=True)
    result = {"kind": "model", **sample_metrics(load_checked_images(samples, grey=True), originals, sharpness_scale=sharpness_scale)}
    # Families that cannot reconstruct leave a zero-row array.
    if np.load(reconstructions, mmap_mode="r").shape[0]:
        recon = load_checked_images(reconstructions, grey=True)
        test_images, _ = open_split(images, table, "test", n=n_reconstruct, seed=seed, grey=True)
        result.update(reconstruction_metrics(test_images, recon, sharpness_scale=sharpness_scale))
    write_json(out, result)
    return result


def original_metrics_job(images: Path, table: Path, out: Path, *, sharpness_scale: float,
                         n_original: int, seed: int) -> dict:
    """The 'Original' row: held-out real slices treated as the sample set."""
    originals, _ = open_split(images, table, "train", grey=True)
    reference, _ = open_split(images, table, "test", n=n_original, seed=seed, grey=True)
    result = {"kind": "original", **sample_metrics(reference, originals, sharpness_scale=sharpness_scale)}
    write_json(out, result)
    return result
