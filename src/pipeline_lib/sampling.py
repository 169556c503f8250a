"""Draw samples (and reconstructions) from a trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .figures import save_grid
from .io import write_npy
from .training import load_trained_model


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(size, n - start)


@torch.no_grad()
def draw_samples(model, n: int, seed: int, batch_size: int = 250) -> np.ndarray:
    """``n`` samples (n, H, W) float32 in [0, 1]; the same seed gives the same samples."""
    gen = torch.Generator().manual_seed(seed)
    out = [model.sample(size, generator=gen).cpu() for _, size in _batches(n, batch_size)]
    return torch.cat(out)[:, 0].clamp(0, 1).numpy().astype(np.float32)


@torch.no_grad()
def reconstruct_images(model, images: np.ndarray, batch_size: int = 250) -> np.ndarray:
    out = []
    for start, size in _batches(len(images), batch_size):
        x = torch.from_numpy(images[start:start + size]).unsqueeze(1).to(model.device)
        out.append(model.reconstruct(x).cpu())
    return torch.cat(out)[:, 0].clamp(0, 1).numpy().astype(np.float32)


def sample_model(weights: Path, n: int, seed: int, out_samples: Path, out_grid: Path,
                 out_reconstructions: Path, *, test_images: np.ndarray | None = None,
                 device: str = "auto") -> dict:
    """Write ``n`` samples, their grid, and reconstructions of ``test_images``.

    Families that cannot reconstruct get a reconstructions array with zero rows,
    so one rule serves every family; the metrics and the report skip such arrays.
    """
    model, _ = load_trained_model(weights, device=device)
    samples = draw_samples(model, n, seed)
    write_npy(out_samples, samples)
    save_grid(samples, out_grid)
    if model.can_reconstruct and test_images is not None and len(test_images):
        recon = reconstruct_images(model, test_images)
    else:
        recon = np.zeros((0,) + samples.shape[1:], dtype=np.float32)
    write_npy(out_reconstructions, recon)
    return {"n_samples": int(len(samples)), "n_reconstructions": int(len(recon))}


def sample_job(weights: Path, images: Path, table: Path, sampling: dict, *, samples: Path,
               grid: Path, reconstructions: Path, threads: int | None = None) -> dict:
    """The sample rule: ``sampling.n`` samples plus reconstructions of a seeded test subset."""
    from .dataset import load_split
    from .training import configure_threads

    configure_threads(threads)
    test_images, _ = load_split(images, table, "test", n=sampling["n_reconstruct"], seed=sampling["seed"])
    return sample_model(weights, sampling["n"], sampling["seed"], samples, grid, reconstructions,
                        test_images=test_images)
