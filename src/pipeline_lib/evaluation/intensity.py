"""Do the samples have the real slices' grey levels? Brightness, contrast and the share of
background, which FID, KID and the pixel metrics fold into one number or leave out.

Per run, the pooled pixel intensities of the samples against those of the real training slices:

* ``wasserstein``: the 1-D Wasserstein (earth mover's) distance between the two intensity
  distributions, in intensity units ([0, 1]); 0 = the same histogram. Computed on 256 bins of
  width 1/255 (the 8-bit grey levels the report's images show), as the area between the two
  cumulative histograms, so the memory is flat in the number of images.
* ``mean``, ``std`` of the intensities (samples, and real as ``real_mean``, ``real_std``).
* ``background``: the share of pixels darker than :data:`BACKGROUND_LEVEL` (outside the head, or
  black); a model that fills the background with noise, or loses the head, moves it.

Images are read in blocks (grey view: a stacked dataset's channels count as grey images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import write_json
from pipeline_lib.core.slices import load_checked_images, open_split

#: 8-bit grey levels: bin i holds intensities in [(i - 0.5)/255, (i + 0.5)/255).
BINS = 256
#: Darker than 2 % of full scale (about 5 of 255 grey levels) counts as background: it shows as black
#: on the page. Real slices' background is exactly 0 after brain extraction; this also counts a
#: sample's near-black background as background rather than tissue.
BACKGROUND_LEVEL = 0.02
#: Images read at a time.
_BLOCK = 256


def intensity_histogram(images) -> np.ndarray:
    """Counts of the pixels of ``images`` ((N, H, W), read in blocks) per 8-bit grey level; values
    outside [0, 1] are counted at its ends."""
    counts = np.zeros(BINS, dtype=np.int64)
    for start in range(0, len(images), _BLOCK):
        block = np.asarray(images[start:start + _BLOCK], dtype=np.float64)
        levels = np.clip(np.rint(block * (BINS - 1)), 0, BINS - 1).astype(np.int64)
        counts += np.bincount(levels.ravel(), minlength=BINS)
    return counts


def _moments(images) -> tuple[float, float, float, int]:
    """Mean, standard deviation and background share of every pixel of ``images``, and the count."""
    total = total_sq = 0.0
    dark = n = 0
    for start in range(0, len(images), _BLOCK):
        block = np.asarray(images[start:start + _BLOCK], dtype=np.float64)
        total += float(block.sum())
        total_sq += float(np.square(block).sum())
        dark += int((block < BACKGROUND_LEVEL).sum())
        n += block.size
    mean = total / n
    return mean, float(np.sqrt(max(total_sq / n - mean * mean, 0.0))), dark / n, n


def wasserstein_from_histograms(a: np.ndarray, b: np.ndarray) -> float:
    """W1 between two histograms on the grey levels: the area between their cumulative shares."""
    cdf_a = np.cumsum(a) / a.sum()
    cdf_b = np.cumsum(b) / b.sum()
    return float(np.abs(cdf_a - cdf_b)[:-1].sum() / (BINS - 1))


def intensity_statistics(samples, real) -> dict:
    """The record of the module docstring for two image stacks (N, H, W) in [0, 1]."""
    if len(samples) == 0 or len(real) == 0:
        raise InputError("intensity statistics need at least one sample and one real slice")
    mean, std, background, _ = _moments(samples)
    real_mean, real_std, real_background, _ = _moments(real)
    return {
        "wasserstein": wasserstein_from_histograms(intensity_histogram(samples), intensity_histogram(real)),
        "mean": mean, "std": std, "background": background,
        "real_mean": real_mean, "real_std": real_std, "real_background": real_background,
        "n_samples": len(samples), "n_real": len(real),
    }


def intensity_job(samples: Path, images: Path, table: Path, *, out: Path) -> dict:
    """The ``intensity_statistics`` rule: one run's samples against its dataset's training slices."""
    synth = load_checked_images(samples, grey=True)
    train, _ = open_split(images, table, "train", grey=True)
    if synth.shape[1:] != train.shape[1:]:
        raise InputError(f"{samples}: image size {synth.shape[1:]} differs from the slices' {train.shape[1:]}")
    result = intensity_statistics(synth, train)
    write_json(out, result)
    return result
