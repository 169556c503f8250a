"""Draw samples (and reconstructions) from a trained model: slices from a 2-D one, volumes from a 3-D one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.figures import save_grid, save_orthogonal_views
from pipeline_lib.core.io import atomic_path, write_npy, write_tsv
from pipeline_lib.core.progress import Progress
from pipeline_lib.core.runtime import configure_threads
from pipeline_lib.core.settings import SamplingSettings, read_settings
from pipeline_lib.core.slices import load_split
from pipeline_lib.models.base import batch_images, condition_tensor, image_batch
from pipeline_lib.models.training import load_trained_model


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(size, n - start)


@torch.no_grad()
def draw_samples(model, n: int, seed: int, labels: np.ndarray | None = None,
                 batch_size: int = 250) -> np.ndarray:
    """``n`` samples (n, H, W) float32 in [0, 1] ((n, C, H, W) from a model of a stacked dataset);
    the same seed gives the same samples.

    Conditional models take one class index per sample in ``labels``; covariate-conditional ones a
    row of scaled covariates (n, K) float.
    """
    gen = torch.Generator().manual_seed(seed)
    out = []
    progress = Progress("sampling", n, unit="samples")
    for start, size in _batches(n, batch_size):
        batch_labels = None
        if labels is not None:
            batch_labels = condition_tensor(labels[start:start + size]).to(model.device)
        out.append(model.sample(size, labels=batch_labels, generator=gen).cpu())
        progress.update(start + size)
    return batch_images(torch.cat(out))


@torch.no_grad()
def reconstruct_images(model, images: np.ndarray, batch_size: int = 250) -> np.ndarray:
    out = []
    progress = Progress("reconstructing test slices", len(images))
    for start, size in _batches(len(images), batch_size):
        x = image_batch(images[start:start + size]).to(model.device)
        out.append(model.reconstruct(x).cpu())
        progress.update(start + size)
    return batch_images(torch.cat(out))


def sample_labels(n: int, n_classes: int, n_per_class: int | None) -> np.ndarray | None:
    """Class index per sample: ``n_per_class`` of each class (default: ``n`` split evenly)."""
    if n_classes == 0:
        return None
    per_class = n_per_class or max(1, n // n_classes)
    return np.repeat(np.arange(n_classes), per_class)


def sample_model(weights: Path, n: int, seed: int, out_samples: Path, out_grid: Path,
                 out_reconstructions: Path, out_labels: Path, *, n_per_class: int | None = None,
                 test_images: np.ndarray | None = None, device: str = "auto") -> dict:
    """Write samples, their grid, their class labels, and reconstructions of ``test_images``.

    Conditional models draw ``n_per_class`` images of every class (``n`` in
    total otherwise). Families that cannot reconstruct leave a reconstructions
    array with zero rows, so one rule serves every family.
    """
    model, summary = load_trained_model(weights, device=device)
    labels = sample_labels(n, summary["n_classes"], n_per_class) if model.conditional else None
    samples = draw_samples(model, n if labels is None else len(labels), seed, labels=labels)
    write_npy(out_samples, samples)
    save_grid(samples, out_grid)
    write_sample_labels(out_labels, len(samples), labels, summary.get("class_names") or [])
    if model.can_reconstruct and test_images is not None and len(test_images):
        recon = reconstruct_images(model, test_images)
    else:
        recon = np.zeros((0,) + samples.shape[1:], dtype=np.float32)
    write_npy(out_reconstructions, recon)
    return {"n_samples": int(len(samples)), "n_reconstructions": int(len(recon))}


def block_seed(seed: int, block: int) -> int:
    """The sampling seed of FID block ``block``: distinct per block and from ``seed`` itself
    (so no block repeats the main sample set), the same on every machine."""
    return int(np.random.SeedSequence([int(seed), int(block), 0xF1D]).generate_state(1, np.uint64)[0] >> 1)


def write_sample_blocks(model, n_blocks: int, n: int, seed: int, out: Path,
                        labels: np.ndarray | None = None) -> None:
    """Write (n_blocks, n, H, W) ((n_blocks, n, C, H, W) for a stacked model) to the ``.npy`` file
    ``out``, block r holding ``n`` samples drawn with :func:`block_seed` (seed, r), each with the
    same class plan ``labels`` as the main sample set. Each block goes to disk as soon as it is
    drawn, so memory holds one block, never the stack; the file is byte for byte what ``np.save``
    writes for the stacked blocks, and appears only when complete (core.io.atomic_path)."""
    if n_blocks < 1:
        raise ValueError(f"at least one sample block is needed, got {n_blocks}")
    with atomic_path(out, suffix=".npy") as tmp, open(tmp, "wb") as handle:
        for r in range(n_blocks):
            block = np.ascontiguousarray(draw_samples(model, n, block_seed(seed, r), labels=labels))
            if r == 0:
                np.lib.format.write_array_header_1_0(handle, {
                    "descr": np.lib.format.dtype_to_descr(block.dtype), "fortran_order": False,
                    "shape": (n_blocks,) + block.shape})
            handle.write(block.tobytes())


def fid_samples_job(weights: Path, sampling: SamplingSettings | dict, repeats: int, out: Path, *,
                    threads: int | None = None, device: str = "auto") -> dict:
    """The fid_samples rule (``evaluation.fid.fresh_samples``): ``repeats`` fresh sample sets, each
    the size and class plan of the sample rule's set, for one FID repeat each (Ballesteros Ramirez)."""
    cfg = read_settings(SamplingSettings, sampling)
    configure_threads(threads)
    model, summary = load_trained_model(weights, device=device)
    labels = sample_labels(cfg.n, summary["n_classes"], cfg.n_per_class) if model.conditional else None
    n = cfg.n if labels is None else len(labels)
    write_sample_blocks(model, int(repeats), n, cfg.seed, out, labels)
    return {"n_blocks": int(repeats), "block_size": int(n)}


def sample_job(weights: Path, images: Path, table: Path, sampling: SamplingSettings | dict, *, samples: Path,
               grid: Path, reconstructions: Path, labels: Path, threads: int | None = None) -> dict:
    """The sample rule: ``sampling.n`` samples plus reconstructions of a seeded test subset."""
    cfg = read_settings(SamplingSettings, sampling)
    configure_threads(threads)
    test_images, _ = load_split(images, table, "test", n=cfg.n_reconstruct, seed=cfg.seed)
    return sample_model(weights, cfg.n, cfg.seed, samples, grid, reconstructions,
                        labels, n_per_class=cfg.n_per_class, test_images=test_images)


#: Volumes shown in a 3-D run's views.png (one row each: axial, coronal, sagittal middle slices).
VIEWED_VOLUMES = 4


def write_sample_labels(out: Path, n: int, labels: np.ndarray | None, names: list[str],
                        covariates: dict[str, np.ndarray] | None = None) -> None:
    """labels.tsv of a sample set: sample number and class name ("" for an unconditional model), then
    the covariates each sample was drawn with, in their columns' units (a covariate-conditional model)."""
    write_tsv(out, pd.DataFrame({
        "sample": np.arange(n),
        "label": [names[i] for i in labels] if labels is not None else [""] * n,
        **{name: np.round(values, 6) for name, values in (covariates or {}).items()},
    }))


def covariate_requests(summary: dict, table: Path | None, n: int, seed: int) -> np.ndarray | None:
    """The covariates (n, K, in their units) a covariate-conditional model samples with: rows of its
    volume dataset's training split drawn with ``seed`` (core/covariates.draw_requests); None for
    another model."""
    scaling = summary.get("covariates") or []
    if not scaling:
        return None
    from pipeline_lib.core.covariates import covariate_values, draw_requests
    from pipeline_lib.core.slices import split_rows

    if table is None:
        raise InputError(f"model {summary.get('model')} conditions on covariates: sampling needs its volume "
                         "dataset's table to draw them from")
    frame = pd.read_csv(table, sep="\t", dtype={"subject": str}, keep_default_na=False)
    names = [s["name"] for s in scaling]
    train = covariate_values(frame.loc[split_rows(frame, "train")], names, f"{table} (the covariates of model "
                                                                 f"{summary.get('model')})")
    return draw_requests(train, n, seed)


def sample_volumes_job(weights: Path, sampling: SamplingSettings | dict, *, volumes: Path, labels: Path,
                       views: Path, table: Path | None = None, threads: int | None = None,
                       device: str = "auto") -> dict:
    """The sample_volumes rule (3-D runs): ``sampling.n`` volumes (``n_per_class`` of each class from
    a conditional model; a covariate-conditional model's drawn with covariates of training volumes
    from ``table``, its volume dataset's volumes.tsv), written as (n, C, X, Y, Z) float32 in [0, 1] on
    the axes of the volume dataset's volumes.npy, their class labels or covariates, and the
    orthogonal views of the first few. Drawn a training batch at a time (a volume's activations are
    large), from ``sampling.seed``."""
    from pipeline_lib.core.covariates import scale

    cfg = read_settings(SamplingSettings, sampling)
    configure_threads(threads)
    model, summary = load_trained_model(weights, device=device)
    if model.spatial_dims != 3:
        raise InputError(f"{weights}: family {summary.get('family')} draws 2-D slices; the sample rule "
                         "samples it, sample_volumes only 3-D families")
    plan = sample_labels(cfg.n, summary["n_classes"], cfg.n_per_class) if model.conditional else None
    requests = covariate_requests(summary, table, cfg.n, cfg.seed)
    if requests is not None:
        plan = scale(requests, summary["covariates"])
    drawn = draw_samples(model, cfg.n if plan is None else len(plan), cfg.seed, labels=plan,
                         batch_size=int(model.hp.batch_size))
    write_npy(volumes, drawn)
    named = None if requests is None else {s["name"]: requests[:, k] for k, s in enumerate(summary["covariates"])}
    write_sample_labels(labels, len(drawn), None if requests is not None else plan,
                        summary.get("class_names") or [], named)
    save_orthogonal_views(drawn, views, n=VIEWED_VOLUMES)
    return {"n_samples": int(len(drawn)), "shape": list(drawn.shape[1:])}
