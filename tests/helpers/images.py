"""Toy images: bright ellipses on a dark background, structured and easy to learn, in [0, 1]."""

from __future__ import annotations

import numpy as np
import torch


def _ellipse_images(size: int, cy: np.ndarray, cx: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] / size
    return np.exp(-(((yy - cy) / 0.2) ** 2 + ((xx - cx) / 0.15) ** 2)).astype(np.float32)


def ellipses(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """(n, size, size) ellipses at random positions."""
    rng = np.random.default_rng(seed)
    cy, cx = rng.uniform(0.3, 0.7, (2, n, 1, 1))
    return _ellipse_images(size, cy, cx)


def ellipse_batch(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """`ellipses` as a model's input batch, (n, 1, size, size)."""
    return torch.from_numpy(ellipses(n, size, seed)).unsqueeze(1)


def two_class_ellipses(n: int, size: int = 32, seed: int = 0, centres: tuple[float, float] = (0.3, 0.7),
                       jitter: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(n, size, size) images and their labels 0, 1, 0, ...: class 0's ellipse sits at the first of
    `centres` across, class 1's at the second, each moved by up to `jitter`; the height is random."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    cy = rng.uniform(0.35, 0.65, (n, 1, 1))
    cx = np.where(labels == 0, *centres)[:, None, None]
    if jitter:
        cx = cx + rng.uniform(-jitter, jitter, (n, 1, 1))
    return _ellipse_images(size, cy, cx), labels


def two_class_ellipse_batch(n: int, size: int = 32, seed: int = 0, **placement) -> tuple[torch.Tensor, torch.Tensor]:
    """`two_class_ellipses` as a conditional model's input: (n, 1, size, size) images and labels."""
    images, labels = two_class_ellipses(n, size, seed, **placement)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)
