"""Diversity of samples (MS-SSIM between pairs) and fidelity of reconstructions (SSIM, PSNR), with MONAI.

* Diversity: the mean multi-scale structural similarity (Wang et al. 2003) over
  random pairs of distinct samples, the measure the MONAI generative-model
  literature reports (Pinaya et al. 2022; MONAI's realism/diversity tutorial).
  Lower means more diverse; a model that repeats one image scores 1. The
  "Original" row gives the value for pairs of real test slices, the level a
  model should reach: much higher means mode collapse, much lower means noise.
  It stands beside Ungría Hirte et al.'s pixel-space ISD, which averages squared
  differences instead of structure.
* Reconstructions (autoencoding families): SSIM, MS-SSIM and PSNR between each
  reconstructed test slice and its original, mean ± standard deviation.

All from ``monai.metrics`` (``MultiScaleSSIMMetric``, ``SSIMMetric``,
``PSNRMetric``) on images in [0, 1] (data range 1). The Gaussian window is
``kernel_size`` pixels wide (4, as in MONAI's tutorial on 64 px MedNIST, so the
standard five scales fit). MS-SSIM needs the image to stay larger than the
window at its coarsest scale (MONAI checks size // (scales - 1)² > kernel - 1):
smaller images use fewer scales, the first of Wang et al.'s five weights
renormalised to sum to one (five scales keep the published weights); the result
records the scales used.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import write_json
from pipeline_lib.core.settings import DiversitySettings, SamplingSettings, read_settings
from pipeline_lib.core.slices import load_checked_images, open_split

#: Wang et al.'s (2003) weights of the five scales, finest first (MONAI's defaults).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_BATCH = 256


def ms_ssim_weights(image_size: int, kernel_size: int) -> tuple[float, ...]:
    """The most scales (at most five) the image can hold, renormalised: after scales - 1 halvings
    the coarsest level must still be as wide as the window (the SSIM there is a valid convolution),
    and MONAI's own check (size // (scales - 1)^2 > kernel - 1) must pass. MONAI's check alone lets
    two scales through for a 16 px image and an 11 px window, whose coarsest level is 8 px."""
    for scales in range(len(MS_SSIM_WEIGHTS), 0, -1):
        fits_window = image_size // 2 ** (scales - 1) >= kernel_size
        if fits_window and image_size // max(1, scales - 1) ** 2 > kernel_size - 1:
            if scales == len(MS_SSIM_WEIGHTS):
                return MS_SSIM_WEIGHTS  # as published (they sum to 0.9999)
            weights = np.array(MS_SSIM_WEIGHTS[:scales])
            return tuple(float(w) for w in weights / weights.sum())
    raise InputError(f"images of {image_size} px are too small for MS-SSIM with a {kernel_size}-pixel window "
                     f"(evaluation.diversity.kernel_size)")


def random_pairs(n: int, n_pairs: int, seed: int) -> np.ndarray:
    """(P, 2) indices of distinct images: every pair when there are at most ``n_pairs``, else a seeded
    random draw of ``n_pairs`` pairs i != j (with replacement across pairs)."""
    if n < 2:
        raise InputError(f"MS-SSIM between pairs needs at least 2 images, got {n}")
    if n * (n - 1) // 2 <= n_pairs:
        return np.array(list(combinations(range(n), 2)), dtype=np.int64)
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n, n_pairs)
    second = (first + rng.integers(1, n, n_pairs)) % n  # never equal to first
    return np.stack([first, second], axis=1)


def _metric_values(metric, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image values of a MONAI metric for image stacks (N, H, W), in batches."""
    import torch

    out = []
    for start in range(0, len(a), _BATCH):
        x = torch.from_numpy(np.array(a[start:start + _BATCH], dtype=np.float32)).unsqueeze(1)
        y = torch.from_numpy(np.array(b[start:start + _BATCH], dtype=np.float32)).unsqueeze(1)
        with torch.no_grad():
            out.append(metric(y, x).reshape(-1).double().numpy())
    return np.concatenate(out)


def ms_ssim_metric(image_size: int, kernel_size: int):
    from monai.metrics import MultiScaleSSIMMetric

    return MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, kernel_size=kernel_size,
                                weights=ms_ssim_weights(image_size, kernel_size), reduction="none")


def pairwise_ms_ssim(images: np.ndarray, *, n_pairs: int, seed: int, kernel_size: int) -> dict[str, Any]:
    """Mean and standard deviation of MS-SSIM over random pairs of distinct images (N, H, W) in [0, 1]."""
    pairs = random_pairs(len(images), n_pairs, seed)
    metric = ms_ssim_metric(min(images.shape[-2:]), kernel_size)
    values = _metric_values(metric, images[pairs[:, 0]], images[pairs[:, 1]])
    return {"ms_ssim_mean": float(values.mean()), "ms_ssim_std": float(values.std()),
            "n_pairs": int(len(pairs)), "n_images": int(len(images)),
            "ms_ssim_scales": len(metric.weights), "kernel_size": kernel_size}


def reconstruction_similarity(originals: np.ndarray, reconstructions: np.ndarray, *,
                              kernel_size: int) -> dict[str, Any]:
    """SSIM, MS-SSIM and PSNR (dB, peak 1) of every reconstruction against its original: mean and std."""
    from monai.metrics import PSNRMetric, SSIMMetric

    if originals.shape != reconstructions.shape:
        raise InputError(f"reconstructions: shape {reconstructions.shape} does not match the originals "
                         f"{originals.shape}")
    size = min(originals.shape[-2:])
    metrics = {
        "ssim": SSIMMetric(spatial_dims=2, data_range=1.0, win_size=kernel_size, reduction="none"),
        "ms_ssim": ms_ssim_metric(size, kernel_size),
        "psnr": PSNRMetric(max_val=1.0, reduction="none"),
    }
    result: dict[str, Any] = {"n_reconstructions": int(len(originals))}
    for name, metric in metrics.items():
        values = _metric_values(metric, originals, reconstructions)
        result[f"recon_{name}_mean"] = float(values.mean())
        result[f"recon_{name}_std"] = float(values.std())
    return result


# ----------------------------------------------------------------- rule jobs


def model_diversity_job(samples: Path, reconstructions: Path, images: Path, table: Path, out: Path, *,
                        settings: DiversitySettings | Mapping | None, sampling: Mapping[str, Any]) -> dict:
    """MS-SSIM of sample pairs; SSIM/MS-SSIM/PSNR of the reconstructions of the sampled test subset
    (the same subset, ``sampling.n_reconstruct`` and ``sampling.seed``, the sample rule reconstructed)."""
    cfg = read_settings(DiversitySettings, settings)
    drawn = read_settings(SamplingSettings, sampling)
    result = {"kind": "model", **pairwise_ms_ssim(load_checked_images(samples, grey=True), n_pairs=cfg.n_pairs,
                                                   seed=cfg.seed, kernel_size=cfg.kernel_size)}
    if np.load(reconstructions, mmap_mode="r").shape[0]:
        test_images, _ = open_split(images, table, "test", n=drawn.n_reconstruct, seed=drawn.seed, grey=True)
        result.update(reconstruction_similarity(test_images, load_checked_images(reconstructions, grey=True),
                                                kernel_size=cfg.kernel_size))
    write_json(out, result)
    return result


def original_diversity_job(images: Path, table: Path, out: Path, *,
                           settings: DiversitySettings | Mapping | None) -> dict:
    """The reference: MS-SSIM between pairs of real test slices (a seeded subset of ``n_reference``)."""
    cfg = read_settings(DiversitySettings, settings)
    reference, _ = open_split(images, table, "test", n=cfg.n_reference, seed=cfg.seed, grey=True)
    result = {"kind": "original", **pairwise_ms_ssim(reference, n_pairs=cfg.n_pairs, seed=cfg.seed,
                                                      kernel_size=cfg.kernel_size)}
    write_json(out, result)
    return result
