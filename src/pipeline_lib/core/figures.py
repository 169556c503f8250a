"""Small PNG figures shared by several stages (image grids)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline_lib.core.io import atomic_path  # noqa: E402


def tile(images: np.ndarray, ncols: int = 8, pad: int = 2) -> np.ndarray:
    """Arrange (N, H, W) images into one (rows*H, cols*W) mosaic with a white border."""
    n, h, w = images.shape
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    canvas = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y:y + h, x:x + w] = img
    return canvas


def save_grid(images: np.ndarray, path: Path, ncols: int = 8, max_images: int = 64) -> None:
    """Write the first ``max_images`` of (N, H, W) images in [0, 1] as a grayscale PNG grid."""
    mosaic = tile(np.clip(images[:max_images], 0, 1), ncols=ncols)
    with atomic_path(path, suffix=".png") as tmp:
        plt.imsave(tmp, mosaic, cmap="gray", vmin=0, vmax=1, format="png")


def save_pairs(originals: np.ndarray, reconstructions: np.ndarray, path: Path, n: int = 8) -> None:
    """Originals in the top row, their reconstructions below."""
    k = min(n, len(originals))
    stacked = np.concatenate([originals[:k], reconstructions[:k]])
    save_grid(stacked, path, ncols=k, max_images=2 * k)
