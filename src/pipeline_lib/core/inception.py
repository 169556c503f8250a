"""Inception features of grey images and the Fréchet distance between feature sets.

Shared by the FID of the evaluation stage (``evaluation/fid.py``, which documents
the method) and the cheap FID a training run may compute on the side
(``models/monitor.py``), so both use the same network input and the same
distance. The trace of the matrix square root is computed without ``sqrtm``:
see :func:`frechet_distance` and :func:`frechet_distance_features`.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np
from scipy import linalg

from pipeline_lib.core.errors import InputError

FEATURE_DIM = 2048


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


