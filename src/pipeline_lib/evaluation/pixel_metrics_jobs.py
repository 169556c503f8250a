"""The metrics rules: seed-001 metrics of a model's samples, and of the real reference set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline_lib.core.slices import load_split
from pipeline_lib.core.io import write_json
from pipeline_lib.evaluation.pixel_metrics import load_images, reconstruction_metrics, sample_metrics


def model_metrics_job(samples: Path, reconstructions: Path, images: Path, table: Path, out: Path, *,
                      sharpness_scale: float, n_reconstruct: int, seed: int) -> dict:
    """Samples against all training slices; reconstructions against the test slices they came from."""
    originals, _ = load_split(images, table, "train")
    result = {"kind": "model", **sample_metrics(load_images(samples), originals, sharpness_scale=sharpness_scale)}
    # Families that cannot reconstruct leave a zero-row array.
    if np.load(reconstructions, mmap_mode="r").shape[0]:
        recon = load_images(reconstructions)
        test_images, _ = load_split(images, table, "test", n=n_reconstruct, seed=seed)
        result.update(reconstruction_metrics(test_images, recon, sharpness_scale=sharpness_scale))
    write_json(out, result)
    return result


def original_metrics_job(images: Path, table: Path, out: Path, *, sharpness_scale: float,
                         n_original: int, seed: int) -> dict:
    """The 'Original' row: held-out real slices treated as the sample set."""
    originals, _ = load_split(images, table, "train")
    reference, _ = load_split(images, table, "test", n=n_original, seed=seed)
    result = {"kind": "original", **sample_metrics(reference, originals, sharpness_scale=sharpness_scale)}
    write_json(out, result)
    return result
