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

Feature extraction and the distance live in ``core/inception.py`` (re-exported here), so the
trainer's optional cheap FID during training measures the same way.

Repeated FID (Ballesteros Ramirez: 20 repeats, mean ± std) draws R random subsets of
``subset_size`` images from each side; with fewer images than feature
dimensions the covariance is rank-deficient and FID is biased upwards, so the
result then carries a warning.

Fresh samples per repeat (``evaluation.fid.fresh_samples``): by default every repeat draws its
subset from the one sample set, so the spread only reflects which images were drawn. Seed 003
generates a new sample set for each of its 20 FIDs; with the option on, the ``fid_samples``
rule draws R sample *blocks* of the main set's size (block r from its own seed,
``models.sampling.block_seed``), ``model_features_job`` stores their features as
``block_features`` with the block of each row in ``block_index``, and repeat r draws its
subset from block r instead of the main set (the real subsets are drawn exactly as before), so
the spread then includes the model's sampling variation. Conditional models give every block
the main set's label plan, so per-class FID uses the same blocks.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.progress import Progress
from pipeline_lib.core.inception import (FEATURE_DIM, covariance_factor, extract_features,  # noqa: F401 (re-exported)
                                         feature_statistics, frechet_distance, frechet_distance_features,
                                         inception_input, load_feature_network)
from pipeline_lib.core.io import atomic_path
from pipeline_lib.core.settings import FidSettings, read_settings

FEATURE_FILE_KEYS = ("features", "mu", "sigma")
# Images read from disk at a time by the feature rules (about 64 MB at 128 px).
_CHUNK = 1024

log = logging.getLogger("pipeline.fid")


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


# -- repeated and per-class FID ---------------------------------------------------
def small_sample_warning(subset_size: int, feature_dim: int) -> str | None:
    """The report's warning when FID is estimated from fewer images than feature dimensions."""
    if subset_size >= feature_dim:
        return None
    return (f"FID computed on {subset_size} images per set, fewer than the {feature_dim} feature "
            f"dimensions: the covariance estimates are rank-deficient and FID is strongly biased "
            f"upwards. Compare only FIDs computed with the same number of images.")


def repeated_fid(sample_features: np.ndarray, real_features: np.ndarray, *, repeats: int = 20,
                 subset_size: int | None = None, seed: int = 0,
                 sample_blocks: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """FID on ``repeats`` random subsets (without replacement) of ``subset_size`` images per side.

    ``subset_size`` defaults to min(n_samples, n_real); with it equal to both
    set sizes every repeat sees the same images (std 0). With ``sample_blocks``
    (one freshly drawn sample set per repeat, each of ``len(sample_features)``
    rows) repeat r draws its sample subset from block r instead of
    ``sample_features``; the subsets' indices are drawn exactly as without blocks.
    Returns mean, std (n − 1), all values, the sizes, ``fresh_samples`` and
    ``warning`` (bool) + ``warning_message``.
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
    if sample_blocks is not None:
        sizes = [len(block) for block in sample_blocks]
        if len(sample_blocks) < repeats or any(size != n_s for size in sizes):
            raise InputError(f"fresh-sample FID needs {repeats} sample blocks of {n_s} images each "
                             f"(one per repeat), got {len(sample_blocks)} blocks of sizes {sizes}")
    rng = np.random.default_rng(seed)
    values = []
    for r in range(repeats):
        si = np.sort(rng.choice(n_s, size=m, replace=False))
        ri = np.sort(rng.choice(n_r, size=m, replace=False))
        source = sample_features if sample_blocks is None else sample_blocks[r]
        values.append(frechet_distance_features(source[si], real_features[ri]))
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
        "fresh_samples": sample_blocks is not None,
        "warning": message is not None,
        "warning_message": message,
    }


def per_class_fid(sample_features: np.ndarray, sample_labels: np.ndarray, real_features: np.ndarray,
                  real_labels: np.ndarray, *, repeats: int = 20, subset_size: int | None = None,
                  seed: int = 0, sample_blocks: Sequence[np.ndarray] | None = None,
                  equal_sizes: bool = False) -> dict[str, dict[str, Any]]:
    """Repeated FID of each class's samples against the real images of that class (Ballesteros Ramirez, Table 2).

    ``subset_size`` is capped per class at the smaller class count. A class
    with fewer than 2 images on either side gets ``{"skipped": reason}``.
    ``sample_blocks`` (fresh samples per repeat) carry ``sample_labels`` row for row.
    ``equal_sizes`` (``evaluation.fid.equal_per_class``): every class uses the same subset size,
    the smallest of the classes' (FID falls with the number of images, so unequal sizes would
    rank classes by their size as well as by their images).
    """
    sample_labels = np.asarray(sample_labels).astype(str)
    real_labels = np.asarray(real_labels).astype(str)
    if len(sample_labels) != len(sample_features) or len(real_labels) != len(real_features):
        raise InputError(f"labels and features differ in length: samples {len(sample_labels)} vs "
                         f"{len(sample_features)}, real {len(real_labels)} vs {len(real_features)}")
    out: dict[str, dict[str, Any]] = {}
    if equal_sizes:
        counts = [min(int((sample_labels == name).sum()), int((real_labels == name).sum()))
                  for name in set(sample_labels)]
        usable = [n for n in counts if n >= 2]
        if usable:
            subset_size = min(usable + ([int(subset_size)] if subset_size is not None else []))
    for name in sorted(set(sample_labels)):
        s = sample_features[sample_labels == name]
        r = real_features[real_labels == name]
        if min(len(s), len(r)) < 2:
            out[name] = {"skipped": f"class '{name}' has {len(s)} samples and {len(r)} real images; "
                                    f"FID needs at least 2 of each", "n_samples": len(s), "n_real": len(r)}
            continue
        size = None if subset_size is None else min(int(subset_size), len(s), len(r))
        blocks = None if sample_blocks is None else [b[sample_labels == name] for b in sample_blocks]
        out[name] = repeated_fid(s, r, repeats=repeats, subset_size=size, seed=seed, sample_blocks=blocks)
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
    per-class statistics can be drawn from it later. A stacked dataset's images count as their
    channels' grey images (core.slices.grey_images), each feature row naming its image's table row.
    """
    from pipeline_lib.core.slices import SplitImages, channel_count, load_table, open_images, split_rows, subset_rows
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
    channels = channel_count(data)
    # read from disk a chunk at a time (pread, not the mapping, whose touched pages stay resident)
    split_images = SplitImages(images, rows, grey=True)
    features = _features_of(split_images, np.arange(len(split_images)), weights, cfg, f"{images} ({split} split)")
    save_feature_file(out, features, rows=np.repeat(rows, channels).astype(np.int64))
    return {"split": split, "n_images": int(len(split_images))}


def model_features_job(weights: Path, samples: Path, out: Path, *, settings: FidSettings | Mapping[str, Any] | None = None,
                       threads: int | None = None, blocks: Path | None = None) -> dict:
    """The model_features rule: Inception features of one model's samples.

    With ``blocks`` (the fid_samples rule's ``(R, n, H, W)`` stack of fresh sample sets), their
    features are stored too, as ``block_features`` (R * n rows) and ``block_index``. A stacked
    model's samples (n, C, H, W) count as their channels' grey images (core.slices.grey_images);
    the file then records ``channels`` (C), so labels per sample can be repeated per channel.
    """
    from pipeline_lib.core.slices import channel_count, grey_images, load_checked_images
    from pipeline_lib.core.runtime import configure_threads

    cfg = read_settings(FidSettings, settings)
    configure_threads(threads)
    raw = load_checked_images(samples)
    stack = grey_images(raw)
    features = _features_of(stack, np.arange(len(stack)), weights, cfg, str(samples))
    extra: dict[str, np.ndarray] = {}
    if channel_count(raw) > 1:
        extra["channels"] = np.array(channel_count(raw), dtype=np.int64)
    if blocks is not None:
        block_images = _MappedImages(blocks, leading=2)
        n_blocks = load_sample_blocks(blocks).shape[0]
        extra["block_features"] = _features_of(block_images, np.arange(len(block_images)), weights, cfg, str(blocks))
        extra["block_index"] = np.repeat(np.arange(n_blocks), len(block_images) // n_blocks).astype(np.int64)
    save_feature_file(out, features, **extra)
    return {"n_images": int(len(stack)), "n_blocks": int(n_blocks) if blocks is not None else 0}


def load_sample_blocks(path: str | os.PathLike) -> np.ndarray:
    """The fid_samples rule's stack (R, n, H, W) of sample sets in [0, 1] ((R, n, C, H, W) for a
    stacked model), memory-mapped and checked (a chunk at a time)."""
    from pipeline_lib.core.slices import validate_images

    path = Path(path)
    try:
        stack = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as a .npy stack of sample blocks ({exc})") from exc
    if stack.ndim not in (4, 5) or stack.shape[0] < 1 or stack.shape[1] < 2:
        raise InputError(f"{path}: sample blocks must be (R >= 1, n >= 2, H, W) or (R, n, C, H, W), "
                         f"got shape {stack.shape}")
    flat = _MappedImages(path, leading=2)
    for start in range(0, len(flat), _CHUNK):
        validate_images(flat[start:start + _CHUNK], str(path))
    return stack


class _MappedImages:
    """The grey images of a ``.npy`` stack whose first ``leading`` axes count images (the sample
    blocks (R, n, [C,] H, W): leading 2), read through a mapping opened for each read and closed
    after it. Pages of a mapping stay in the resident set while it is open, so one mapping kept
    over a whole pass would grow the job to the file's size; per read it holds one chunk."""

    def __init__(self, path: str | os.PathLike, leading: int = 1):
        self.path, self.leading = Path(path), leading
        shape = np.load(self.path, mmap_mode="r", allow_pickle=False).shape
        per_image = int(shape[leading]) if len(shape) - leading == 3 else 1
        self.shape = (int(np.prod(shape[:leading])) * per_image,) + tuple(shape[-2:])
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        from pipeline_lib.core.slices import grey_images

        # the mapping (and its resident pages) goes when ``data`` does, on return
        data = np.load(self.path, mmap_mode="r", allow_pickle=False)
        flat = grey_images(data.reshape((-1,) + data.shape[self.leading:]))
        return np.array(flat[index], dtype=np.float32)


def sample_blocks_of(arrays: Mapping[str, np.ndarray], path: str | os.PathLike) -> list[np.ndarray]:
    """The per-repeat feature blocks of a model feature file (``block_features`` by ``block_index``)."""
    if "block_features" not in arrays or "block_index" not in arrays:
        raise InputError(f"{path}: no sample blocks in this feature file (evaluation.fid.fresh_samples "
                         f"needs the fid_samples rule's blocks; rerun model_features)")
    index = arrays["block_index"]
    return [arrays["block_features"][index == b] for b in range(int(index.max()) + 1)]


def centre_crop(images: np.ndarray, crop: tuple[int, int] | None, what: str = "images") -> np.ndarray:
    """``images`` (N, H, W) cut to their central ``crop`` (height, width), with the offsets the
    slicing's centre fit pads with (floor of half the difference), so a slice padded into a
    square frame comes back pixel for pixel; None: unchanged."""
    if crop is None:
        return images
    height, width = images.shape[-2:]
    if crop[0] > height or crop[1] > width:
        raise InputError(f"evaluation.fid.crop {list(crop)} is larger than the {height} x {width} images of {what}")
    top, left = (height - crop[0]) // 2, (width - crop[1]) // 2
    return images[..., top:top + crop[0], left:left + crop[1]]


def _features_of(source: np.ndarray, rows: np.ndarray, weights: Path, cfg: FidSettings,
                 what: str) -> np.ndarray:
    """Features of ``source[rows]``, read in chunks so a memory-mapped split is never loaded whole."""
    net = load_feature_network(weights, cfg.device, cfg.channels_last)
    out = np.empty((len(rows), FEATURE_DIM), dtype=np.float32)
    progress = Progress(f"Inception features of {what}", len(rows), log=log)
    for start in range(0, len(rows), _CHUNK):
        chunk = centre_crop(np.asarray(source[rows[start:start + _CHUNK]], dtype=np.float32), cfg.crop, what)
        out[start:start + len(chunk)] = extract_features(
            chunk, net, batch_size=cfg.batch_size, channels_last=cfg.channels_last,
            what=what, progress=lambda done, _, offset=start: progress.update(offset + done))
    return out
