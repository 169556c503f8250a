"""Memorization audit: did a model reproduce training slices?

Synthetic images that reproduce a training patient leak that patient's data,
so every model gets this audit. For every sample it finds the nearest
TRAINING slice by

* pixel distance: per-pixel mean squared error, exact, from blocked float64
  matrix products (memory bounded by the block size, as in
  ``metrics.minimum_isd``), with the chosen neighbour's error recomputed
  directly because the product form loses digits for near-duplicates; and
* domain-feature distance: 1 − cosine similarity of the domain network's
  features (``domain_features.py``), standardised by the training slices'
  per-feature mean and std so that the cosine compares how images differ
  rather than the component all features share.

A sample's distance only means something next to what real images achieve:
the reference distribution is that of real TEST slices (other subjects) to
their nearest training slice. A sample closer to a training slice than the
``percentile``-th percentile (5 by default) of that reference is counted as a
"likely copy". Fresh images from the real distribution are flagged at about
the percentile's rate (5 %); a rate well above it means copying.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import atomic_path, write_json
from pipeline_lib.core.settings import MemorizationSettings, read_settings

log = logging.getLogger(__name__)

# Rows converted to float64 per block; bounds the distance matrix to _BLOCK² doubles.
_BLOCK = 256


def nearest_by_mse(queries: np.ndarray, references: np.ndarray, block: int = _BLOCK
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Index of each query's nearest reference image and the per-pixel MSE to it.

    ``queries`` (Q, H, W) and ``references`` (R, H, W), either an array or a split on disk
    (core.slices.SplitImages); distances in float64 from ‖a‖² + ‖b‖² − 2a·b in
    ``block``×``block`` tiles, ties to the lowest index. The references are read once, a block at
    a time (the outer loop), so memory holds one reference block, the queries and the best
    candidate per query, never the reference set. The MSE returned is recomputed from the pixel
    difference.
    """
    queries, references = _stack(queries, "queries"), _stack(references, "references")
    if queries.shape[1:] != references.shape[1:]:
        raise InputError(f"queries of {queries.shape[1:]} pixels cannot be compared with references "
                         f"of {references.shape[1:]}")
    if block < 1:
        raise ValueError(f"block must be positive, got {block}")
    n_q = len(queries)
    q_starts = range(0, n_q, block)
    q_norms = [np.einsum("ij,ij->i", rows, rows) for rows in _float64_blocks(queries, block)]
    best = np.full(n_q, np.inf)
    nearest = np.zeros(n_q, dtype=np.intp)
    for c0, cols in zip(range(0, len(references), block), _float64_blocks(references, block)):
        c_norms = np.einsum("ij,ij->i", cols, cols)
        # Each query sees the reference blocks in ascending order, as a query-major loop would,
        # so ties still go to the lowest index and every tile is the same product.
        for q0, rows, norms in zip(q_starts, _float64_blocks(queries, block), q_norms):
            sl = slice(q0, q0 + len(rows))
            dist = norms[:, None] + c_norms[None, :] - 2.0 * (rows @ cols.T)
            arg = dist.argmin(axis=1)
            cand = dist[np.arange(len(rows)), arg]
            better = cand < best[sl]
            best[sl][better] = cand[better]
            nearest[sl][better] = arg[better] + c0
    mse = np.empty(n_q)
    for q0, rows in zip(q_starts, _float64_blocks(queries, block)):
        partners = _flat64(references[nearest[q0:q0 + len(rows)]])
        mse[q0:q0 + len(rows)] = np.mean((rows - partners) ** 2, axis=1)
    return nearest, mse


def nearest_by_cosine(queries: np.ndarray, references: np.ndarray, block: int = 4096
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Index of each query feature vector's most similar reference and its cosine distance (1 − cos).

    A zero vector has similarity 0 to everything (distance 1). Similarities are computed in tiles
    of ``block`` queries × ``block`` references, so memory does not grow with the product of the
    two sets; ties go to the lowest reference index, as a whole-row argmax would.
    """
    q = _unit_rows(np.asarray(queries, dtype=np.float64))
    r = _unit_rows(np.asarray(references, dtype=np.float64))
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1] or len(r) == 0:
        raise InputError(f"feature arrays of shapes {np.shape(queries)} and {np.shape(references)} "
                         "cannot be compared")
    nearest = np.zeros(len(q), dtype=np.intp)
    similarity = np.full(len(q), -np.inf)
    for q0 in range(0, len(q), block):
        rows = slice(q0, q0 + block)
        for r0 in range(0, len(r), block):
            sim = q[rows] @ r[r0:r0 + block].T
            arg = sim.argmax(axis=1)
            cand = sim[np.arange(len(sim)), arg]
            better = cand > similarity[rows]
            similarity[rows][better] = cand[better]
            nearest[rows][better] = arg[better] + r0
    return nearest, np.clip(1.0 - similarity, 0.0, 2.0)


def standardise_features(*arrays: np.ndarray, reference_index: int = 1) -> list[np.ndarray]:
    """Subtract the reference array's per-feature mean and divide by its std (std 0 → 1).

    Raw post-activation features share a large common component, which makes
    every pair's cosine similarity close to 1; centring on the training
    features makes the cosine compare the directions in which images differ.
    """
    ref = np.asarray(arrays[reference_index], dtype=np.float64)
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [(np.asarray(a, dtype=np.float64) - mean) / std for a in arrays]


def copy_fraction(distances: np.ndarray, reference: np.ndarray, percentile: float) -> tuple[float, float]:
    """(threshold, fraction): the ``percentile`` of ``reference`` and the share of ``distances`` below it."""
    if not 0 < percentile < 100:
        raise InputError(f"percentile must lie between 0 and 100, got {percentile}")
    if len(reference) == 0 or len(distances) == 0:
        raise InputError("the memorization audit needs at least one sample and one reference distance")
    threshold = float(np.percentile(reference, percentile))
    return threshold, float(np.mean(np.asarray(distances) < threshold))


def audit(samples: np.ndarray, train: np.ndarray, test: np.ndarray, *, percentile: float = 5.0,
          sample_features: np.ndarray | None = None, train_features: np.ndarray | None = None,
          test_features: np.ndarray | None = None, block: int = _BLOCK) -> dict[str, Any]:
    """Nearest-training-slice distances of samples and of real test slices, and the copy fractions.

    Returns the JSON-ready summary under ``"pixel"`` (and ``"domain"`` when
    all three feature arrays are given) plus, under ``"_arrays"``, the
    per-sample neighbour indices and distances the gallery needs.
    """
    s_idx, s_mse = nearest_by_mse(samples, train, block)
    _, t_mse = nearest_by_mse(test, train, block)
    result: dict[str, Any] = {
        "percentile": float(percentile),
        "n_samples": int(len(samples)), "n_train": int(len(train)), "n_test_reference": int(len(test)),
        "pixel": _distance_summary(s_mse, t_mse, percentile, "per-pixel mean squared error"),
    }
    arrays = {"pixel_nearest": s_idx, "pixel_distance": s_mse}
    features = (sample_features, train_features, test_features)
    if all(f is not None for f in features):
        sample_z, train_z, test_z = standardise_features(sample_features, train_features, test_features)
        f_idx, f_dist = nearest_by_cosine(sample_z, train_z)
        _, t_dist = nearest_by_cosine(test_z, train_z)
        result["domain"] = _distance_summary(f_dist, t_dist, percentile,
                                             "1 - cosine similarity of domain-network features "
                                             "standardised by the training slices' mean and std")
        arrays.update(domain_nearest=f_idx, domain_distance=f_dist)
    elif any(f is not None for f in features):
        raise ValueError("pass the features of samples, training and test slices together, or none")
    result["_arrays"] = arrays
    return result


def _distance_summary(distances: np.ndarray, reference: np.ndarray, percentile: float, what: str) -> dict:
    threshold, fraction = copy_fraction(distances, reference, percentile)
    return {
        "distance": what,
        "threshold": threshold,
        "fraction_likely_copies": fraction,
        "n_likely_copies": int(np.sum(distances < threshold)),
        "samples": _quantiles(distances),
        "reference": _quantiles(reference),
    }


def _quantiles(values: np.ndarray) -> dict[str, float]:
    q = np.percentile(values, [0, 5, 50, 95])
    return {"min": float(q[0]), "p5": float(q[1]), "median": float(q[2]), "p95": float(q[3]),
            "mean": float(np.mean(values))}


def closest_pairs(nearest: np.ndarray, distances: np.ndarray, k: int) -> list[tuple[int, int, float]]:
    """The ``k`` (sample, training index, distance) pairs with the smallest distances, ascending."""
    order = np.argsort(distances, kind="stable")[:k]
    return [(int(i), int(nearest[i]), float(distances[i])) for i in order]


def save_gallery(samples: np.ndarray, train: np.ndarray, pairs: list[tuple[int, int, float]],
                 path: Path, threshold: float | None = None, pairs_per_row: int = 4) -> None:
    """PNG of sample/training pairs side by side (sample left), ``pairs_per_row`` pairs per row.

    Each training slice is titled with its pixel MSE to the sample; an
    asterisk marks pairs below ``threshold`` (likely copies).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_row = max(1, min(pairs_per_row, len(pairs)))
    rows = max(1, -(-len(pairs) // per_row))
    fig, axes = plt.subplots(rows, 2 * per_row, figsize=(2.6 * per_row, 1.45 * rows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for n, (s, t, d) in enumerate(pairs):
        r, c = divmod(n, per_row)
        flag = "*" if threshold is not None and d < threshold else ""
        axes[r, 2 * c].imshow(samples[s], cmap="gray", vmin=0, vmax=1)
        axes[r, 2 * c].set_title(f"sample {s}", fontsize=7)
        axes[r, 2 * c + 1].imshow(train[t], cmap="gray", vmin=0, vmax=1)
        axes[r, 2 * c + 1].set_title(f"train, MSE {d:.2g}{flag}", fontsize=7)
    if not pairs:
        axes[0, 0].text(0.5, 0.5, "no samples", ha="center", va="center")
    note = "left: sample, right: nearest training slice"
    if threshold is not None:
        note += f"; * below the likely-copy threshold (MSE {threshold:.2g})"
    fig.suptitle(note, fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        # No date in the metadata, so a rerun gives the same bytes.
        fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None})
    plt.close(fig)


def memorization_job(samples: Path, images: Path, table: Path, network: Path, *, out_audit: Path,
                     out_gallery: Path, settings: Mapping[str, Any]) -> dict:
    """The ``memorization_audit`` rule: audit one model's samples, write the JSON and the gallery."""
    from pipeline_lib.core.slices import open_split
    from pipeline_lib.evaluation.domain_features import extract_domain_features, load_domain_network
    from pipeline_lib.core.slices import load_checked_images
    from pipeline_lib.core.runtime import configure_threads

    # The rule's threads (set by start_job) go to numpy's distance products; the small feature
    # CNN runs best on one torch thread (two were 9x slower on a loaded 2-core machine).
    configure_threads(1)
    cfg = read_settings(MemorizationSettings, settings)
    synth = np.asarray(load_checked_images(samples, grey=True), dtype=np.float32)
    # the slices stay on disk, read a block at a time by the searches and the feature network
    train, train_rows = open_split(images, table, "train", grey=True)
    test, _ = open_split(images, table, "test", n=cfg.n_test_reference, seed=cfg.seed, grey=True)
    if synth.shape[1:] != train.shape[1:]:
        raise InputError(f"{samples}: image size {synth.shape[1:]} differs from the slices' {train.shape[1:]}")
    net = load_domain_network(network)
    result = audit(synth, train, test, percentile=cfg.percentile,
                   sample_features=extract_domain_features(net, synth),
                   train_features=extract_domain_features(net, train),
                   test_features=extract_domain_features(net, test), block=cfg.block)
    arrays = result.pop("_arrays")
    pairs = closest_pairs(arrays["pixel_nearest"], arrays["pixel_distance"], cfg.gallery_k)
    result["closest_pairs"] = [
        {"sample": s, "train_row": int(train_rows.loc[t, "row"]) if "row" in train_rows else t,
         "train_subject": str(train_rows.loc[t, "subject"]), "mse": d,
         "domain_cosine_distance_to_nearest": float(arrays["domain_distance"][s])}
        for s, t, d in pairs
    ]
    result["gallery_k"] = len(pairs)
    save_gallery(synth, train, pairs, out_gallery, threshold=result["pixel"]["threshold"])
    write_json(out_audit, result)
    log.info("likely copies: pixel %.3f, domain %.3f", result["pixel"]["fraction_likely_copies"],
             result["domain"]["fraction_likely_copies"])
    return result


def _stack(images, what: str):
    """``images`` as an indexable (N, H, W) stack: arrays and splits on disk as they are."""
    images = images if hasattr(images, "shape") else np.asarray(images)
    if images.ndim != 3 or images.shape[0] == 0:
        raise InputError(f"{what}: expected a non-empty (N, H, W) image stack, got shape {images.shape}")
    return images


def _flat64(block: np.ndarray) -> np.ndarray:
    return np.asarray(block).reshape(len(block), -1).astype(np.float64)


def _float64_blocks(images, block: int):
    """Images read ``block`` at a time, as float64 rows of pixels."""
    for start in range(0, images.shape[0], block):
        yield _flat64(images[start:start + block])


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True) if x.ndim == 2 else np.ones(1)
    return x / np.maximum(norms, 1e-12)
