"""Metrics of generated volumes (volume datasets, core/volumes.py: (N, C, X, Y, Z) in RAS voxel order).

- **Three planes**: :func:`plane_slices` cuts volumes into axial, coronal and sagittal slices in the
  slice datasets' radiological display (imaging/slice_geometry.ras_to_display), so every 2-D metric
  applies to a 3-D model, and a 2-D and a 3-D model can be compared on the same slices.
- **2.5-D FID**: :func:`three_plane_fid` averages a per-plane FID over the three planes, the practice
  of the 3-D literature (no Inception network sees volumes); it is stated as such in its result.
- **Diversity**: :func:`pairwise_ms_ssim_3d`, MONAI's MultiScaleSSIMMetric with ``spatial_dims=3``
  between random pairs of distinct volumes (lower = more diverse), with as many scales as the
  volume's smallest side holds (:func:`ms_ssim_3d_scales`).
- **Memorization**: :func:`nearest_training_volumes` and :func:`volume_memorization`, the slice
  audit's nearest-neighbour MSE and copy fraction (evaluation/memorization.py) over whole volumes,
  the training volumes read a chunk at a time.
- **Anatomical plausibility**: :func:`brain_volumes_ml` (voxels above a threshold inside the template's
  brain mask x the voxel volume) and :func:`tissue_histogram` / :func:`histogram_wasserstein` (the
  intensity distribution of brain voxels, samples against real volumes, by the Wasserstein-1 distance).

Arrays in, numbers out: the volumes may be numpy arrays or core.slices.SplitImages (read when
indexed); functions that stream read ``batch`` volumes at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.volumes import BRAIN_VOXEL_THRESHOLD, VOLUMETRIC_CHUNK, VOLUMETRIC_SLICES_PER_PLANE
from pipeline_lib.evaluation.diversity import MS_SSIM_WEIGHTS, ms_ssim_weights, pairwise_ms_ssim, random_pairs
from pipeline_lib.evaluation.memorization import _distance_summary, nearest_by_mse

if TYPE_CHECKING:
    import pandas as pd

PLANES = ("axial", "coronal", "sagittal")
#: How the three-plane FID is reported: it is not a 3-D FID.
FID_25D_NOTE = ("2.5-D FID: the mean of the Fréchet Inception distances of axial, coronal and sagittal "
                "slices of the volumes (no Inception network sees volumes)")
_BATCH = 8


def _volumes(volumes, what: str = "volumes"):
    """``volumes`` as (N, C, X, Y, Z) (a (N, X, Y, Z) array gains C = 1); SplitImages pass as they are."""
    if isinstance(volumes, np.ndarray) and volumes.ndim == 4:
        volumes = volumes[:, None]
    if len(getattr(volumes, "shape", ())) != 5 or volumes.shape[0] == 0:
        raise InputError(f"{what}: expected a non-empty (N, C, X, Y, Z) or (N, X, Y, Z) stack of volumes, "
                         f"got shape {getattr(volumes, 'shape', None)}")
    return volumes


def _batches(volumes, batch: int = _BATCH):
    for start in range(0, len(volumes), batch):
        yield start, np.asarray(volumes[start:start + batch], dtype=np.float32)


# ----------------------------------------------------------------- slices in three planes


def plane_slices(volumes, plane: str, indices: Sequence[int] | None = None) -> np.ndarray:
    """(M, H, W) grey slices of ``volumes`` along ``plane``, in the slice datasets' display orientation
    (radiological: the patient's right on the image's left; anterior, resp. superior, up).

    ``indices`` are slice positions along the plane's axis (None = every slice); slices come volume by
    volume, each volume's channels in order (channel-major, as core.slices.grey_images pools them),
    then by index. Axial slices are Y x X, coronal Z x X, sagittal Z x Y voxels.
    """
    if plane not in PLANES:
        raise InputError(f"plane must be one of {', '.join(PLANES)}, not {plane!r}")
    data = np.asarray(_volumes(volumes), dtype=np.float32)
    axis = {"sagittal": 2, "coronal": 3, "axial": 4}[plane]
    depth = data.shape[axis]
    chosen = np.arange(depth) if indices is None else np.asarray(indices, dtype=np.int64)
    if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= depth:
        raise InputError(f"{plane} slice indices {list(chosen)} must lie in 0..{depth - 1}")
    # The same transposes as imaging.slice_geometry.ras_to_display, on (N, C, x, y, z).
    if plane == "axial":       # (z, y, x): rows anterior first, columns right first
        out = np.transpose(data, (0, 1, 4, 3, 2))[:, :, :, ::-1, ::-1]
    elif plane == "coronal":   # (y, z, x): rows superior first, columns right first
        out = np.transpose(data, (0, 1, 3, 4, 2))[:, :, :, ::-1, ::-1]
    else:                      # sagittal (x, z, y): rows superior first, columns anterior first
        out = np.transpose(data, (0, 1, 2, 4, 3))[:, :, :, ::-1, ::-1]
    out = out[:, :, chosen]
    return np.ascontiguousarray(out.reshape((-1,) + out.shape[-2:]))


def central_indices(depth: int, n: int) -> np.ndarray:
    """``n`` slice positions spread evenly over the central half of an axis of ``depth`` voxels (the
    outer quarters of a brain-centred grid are mostly background)."""
    if n < 1 or depth < 1:
        raise InputError(f"need at least one slice of at least one voxel, got n={n}, depth={depth}")
    return np.unique(np.rint(np.linspace(depth / 4, 3 * depth / 4 - 1, n)).astype(np.int64).clip(0, depth - 1))


def three_plane_fid(real, generated, plane_fid: Callable[[np.ndarray, np.ndarray], float],
                    indices: dict[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """The 2.5-D FID: ``plane_fid(real_slices, generated_slices)`` (a 2-D FID of (M, H, W) slices in
    [0, 1], e.g. evaluation/fid.py's on Inception features) in each plane and their mean.

    ``real`` and ``generated`` are volumes, or a mapping plane -> their slices already cut (the
    volumetric job cuts the real volumes' slices a chunk at a time onto disk). ``indices`` maps a
    plane to its slice positions (default: every slice). Returns ``fid_axial``, ``fid_coronal``,
    ``fid_sagittal``, ``fid_2_5d`` (their mean) and ``note`` (:data:`FID_25D_NOTE`).
    """
    indices = indices or {}

    def cut(volumes, plane):
        return volumes[plane] if isinstance(volumes, Mapping) else plane_slices(volumes, plane, indices.get(plane))

    out: dict[str, Any] = {}
    for plane in PLANES:
        value = float(plane_fid(cut(real, plane), cut(generated, plane)))
        if not np.isfinite(value):
            raise InputError(f"the {plane} FID is not a finite number ({value})")
        out[f"fid_{plane}"] = value
    out["fid_2_5d"] = float(np.mean([out[f"fid_{plane}"] for plane in PLANES]))
    out["note"] = FID_25D_NOTE
    return out


# ----------------------------------------------------------------- diversity


def ms_ssim_3d_scales(shape: Sequence[int], kernel_size: int) -> tuple[float, ...]:
    """The weights of the most scales (at most five) a volume of ``shape`` (X, Y, Z) holds with a cubic
    ``kernel_size`` window: its smallest side decides, by the same rule as the 2-D metric
    (evaluation/diversity.ms_ssim_weights: the coarsest level as wide as the window, and MONAI's
    check side // (scales - 1)^2 > kernel - 1, applied to every spatial axis). All five scales with
    MONAI's default 11-voxel window need at least 176 voxels a side; 48 holds three, 32 two."""
    side = int(min(shape))
    try:
        return ms_ssim_weights(side, kernel_size)
    except InputError as exc:
        raise InputError(f"volumes of {tuple(shape)} voxels: {exc}") from exc


def min_side_for_scales(scales: int, kernel_size: int) -> int:
    """The smallest side (voxels) that holds ``scales`` MS-SSIM scales with a ``kernel_size`` window."""
    if not 1 <= scales <= len(MS_SSIM_WEIGHTS):
        raise InputError(f"scales must lie in 1..{len(MS_SSIM_WEIGHTS)}, got {scales}")
    side = 1
    while len(_weights_or_none(side, kernel_size)) < scales:
        side += 1
    return side


def _weights_or_none(side: int, kernel_size: int) -> tuple[float, ...]:
    try:
        return ms_ssim_weights(side, kernel_size)
    except InputError:
        return ()


def pairwise_ms_ssim_3d(volumes, *, n_pairs: int, seed: int, kernel_size: int = 11,
                        batch: int = _BATCH) -> dict[str, Any]:
    """Mean and standard deviation of 3-D MS-SSIM (MONAI, ``spatial_dims=3``, data range 1, a channel's
    values averaged with the others') over random pairs of distinct volumes; the pairs are read
    ``batch`` at a time. Lower means more diverse."""
    import torch
    from monai.metrics import MultiScaleSSIMMetric

    volumes = _volumes(volumes)
    weights = ms_ssim_3d_scales(volumes.shape[2:], kernel_size)
    metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=kernel_size, weights=weights,
                                  reduction="none")
    pairs = random_pairs(len(volumes), n_pairs, seed)
    values = []
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        a = torch.from_numpy(np.asarray(volumes[chunk[:, 0]], dtype=np.float32))
        b = torch.from_numpy(np.asarray(volumes[chunk[:, 1]], dtype=np.float32))
        with torch.no_grad():
            values.append(metric(b, a).reshape(len(chunk), -1).mean(dim=1).double().numpy())
    values = np.concatenate(values)
    return {"ms_ssim_3d_mean": float(values.mean()), "ms_ssim_3d_std": float(values.std()),
            "n_pairs": int(len(pairs)), "n_volumes": int(len(volumes)), "ms_ssim_scales": len(weights),
            "kernel_size": int(kernel_size)}


# ----------------------------------------------------------------- memorization


def nearest_training_volumes(samples, train, *, chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Index of each sample's nearest training volume and the per-voxel MSE to it (ties to the lowest
    index), with the training volumes read ``chunk`` at a time: memory holds the samples and one chunk."""
    samples, train = _volumes(samples, "samples"), _volumes(train, "training volumes")
    if tuple(samples.shape[1:]) != tuple(train.shape[1:]):
        raise InputError(f"samples of {tuple(samples.shape[1:])} cannot be compared with training volumes of "
                         f"{tuple(train.shape[1:])}")
    if chunk < 1:
        raise InputError(f"chunk must be positive, got {chunk}")
    queries = np.asarray(samples, dtype=np.float32).reshape(len(samples), 1, -1)
    best = np.full(len(queries), np.inf)
    nearest = np.zeros(len(queries), dtype=np.intp)
    for start, block in _batches(train, chunk):
        index, mse = nearest_by_mse(queries, block.reshape(len(block), 1, -1))
        better = mse < best
        best[better], nearest[better] = mse[better], index[better] + start
    return nearest, best


def volume_memorization(samples, train, test, *, percentile: float = 5.0, chunk: int = 16) -> dict[str, Any]:
    """The slice audit over whole volumes: each sample's distance (per-voxel MSE) to its nearest
    training volume against the real test volumes' distances to theirs; a sample closer than the test
    distances' ``percentile`` is a likely copy. ``_arrays`` holds the per-sample neighbours."""
    s_index, s_mse = nearest_training_volumes(samples, train, chunk=chunk)
    _, t_mse = nearest_training_volumes(test, train, chunk=chunk)
    return {"percentile": float(percentile), "n_samples": int(len(s_mse)), "n_train": int(len(train)),
            "n_test_reference": int(len(t_mse)),
            "voxel": _distance_summary(s_mse, t_mse, percentile, "per-voxel mean squared error"),
            "_arrays": {"nearest": s_index, "distance": s_mse}}


# ----------------------------------------------------------------- anatomical plausibility


def voxel_volume_ml(affine: np.ndarray) -> float:
    """mL per voxel of a grid with ``affine`` (voxel -> mm)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise InputError(f"expected a 4 x 4 affine, got shape {affine.shape}")
    return abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0


def _mask(mask, shape) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask) > 0
    if mask.shape != tuple(shape):
        raise InputError(f"the brain mask of shape {mask.shape} is not on the volumes' grid {tuple(shape)}")
    return mask


def brain_volumes_ml(volumes, affine: np.ndarray, *, mask=None, threshold: float = BRAIN_VOXEL_THRESHOLD, channel: int = 0,
                     batch: int = _BATCH) -> np.ndarray:
    """Brain volume (mL) of each volume: its ``channel``'s voxels above ``threshold`` inside ``mask``
    (the template's brain mask on the volumes' grid; None = everywhere) times the voxel volume."""
    volumes = _volumes(volumes)
    inside = _mask(mask, volumes.shape[2:])
    per_voxel = voxel_volume_ml(affine)
    out = np.empty(len(volumes))
    for start, block in _batches(volumes, batch):
        counts = ((block[:, channel] > threshold) & inside).reshape(len(block), -1).sum(axis=1)
        out[start:start + len(block)] = counts * per_voxel
    return out


def brain_volume_comparison(generated, real, affine: np.ndarray, **kwargs) -> dict[str, Any]:
    """Brain volumes of generated and real volumes (:func:`brain_volumes_ml`): each set's mean and
    standard deviation and the Wasserstein-1 distance (mL) between the two sets' values."""
    from scipy.stats import wasserstein_distance

    generated_ml = brain_volumes_ml(generated, affine, **kwargs)
    real_ml = brain_volumes_ml(real, affine, **kwargs)
    return {"generated_ml": {"mean": float(generated_ml.mean()), "std": float(generated_ml.std())},
            "real_ml": {"mean": float(real_ml.mean()), "std": float(real_ml.std())},
            "wasserstein_ml": float(wasserstein_distance(generated_ml, real_ml))}


def covariate_following(requested: np.ndarray, measured: np.ndarray, *, seed: int = 0,
                        permutations: int = 200) -> dict[str, Any]:
    """How well a covariate-conditional model's samples follow the covariate they were asked for
    (Pinaya et al.'s check: the brain volume measured on each sample against the one requested).

    ``pearson_r`` and the least-squares ``slope`` of measured on requested (1 = follows exactly),
    the mean absolute error, and the same error with the measured values shuffled over the samples
    (``mae_if_ignored``: the mean over ``permutations`` seeded shuffles), what a model that draws
    the right distribution but ignores each request would score: following means an error well
    below it."""
    requested = np.asarray(requested, dtype=np.float64)
    measured = np.asarray(measured, dtype=np.float64)
    if requested.shape != measured.shape or requested.ndim != 1 or len(requested) < 3:
        raise InputError(f"need one requested and one measured value per sample (3 or more), got "
                         f"{requested.shape} and {measured.shape}")
    rng = np.random.default_rng(seed)
    ignored = np.mean([np.abs(requested - rng.permutation(measured)).mean() for _ in range(permutations)])
    spread = requested.std() > 0 and measured.std() > 0
    return {"n": int(len(requested)),
            "pearson_r": float(np.corrcoef(requested, measured)[0, 1]) if spread else None,
            "slope": float(np.polyfit(requested, measured, 1)[0]) if requested.std() > 0 else None,
            "mae": float(np.abs(requested - measured).mean()), "mae_if_ignored": float(ignored),
            "requested": {"min": float(requested.min()), "max": float(requested.max())},
            "measured": {"mean": float(measured.mean()), "std": float(measured.std())}}


def conditioning_check(samples, labels: pd.DataFrame, affine: np.ndarray, covariates: Sequence[str], *,
                       seed: int = 0) -> dict[str, Any]:
    """The conditioning check of a covariate-conditional 3-D run: for each covariate the evaluation
    can measure on a volume (``brain_volume_ml``: :func:`brain_volumes_ml`, as the dataset measured
    its volumes), :func:`covariate_following` of the samples' requested values (``labels``, their
    labels.tsv) against the measured ones; any other covariate (age, ...) is listed as not
    measurable from a volume."""
    from pipeline_lib.core.covariates import BRAIN_VOLUME_COLUMN

    out: dict[str, Any] = {}
    for name in covariates:
        if name not in labels.columns:
            raise InputError(f"the samples' labels.tsv has no column '{name}' (a covariate of the model)")
        if name == BRAIN_VOLUME_COLUMN:
            measured = brain_volumes_ml(samples, affine)
            out[name] = covariate_following(labels[name].to_numpy(dtype=np.float64), measured, seed=seed)
        else:
            out[name] = {"measured": None, "note": f"'{name}' cannot be measured on a generated volume here"}
    return out


def tissue_histogram(volumes, *, mask=None, threshold: float = BRAIN_VOXEL_THRESHOLD, bins: int = 100, channel: int = 0,
                     batch: int = _BATCH) -> tuple[np.ndarray, np.ndarray]:
    """``(counts, edges)``: the intensity histogram over [0, 1] of the tissue voxels (the ``channel``'s
    voxels above ``threshold`` inside ``mask``) of every volume, accumulated ``batch`` volumes at a time."""
    volumes = _volumes(volumes)
    inside = _mask(mask, volumes.shape[2:])
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    counts = np.zeros(int(bins), dtype=np.int64)
    for _, block in _batches(volumes, batch):
        values = block[:, channel][(block[:, channel] > threshold) & inside]
        counts += np.histogram(values, bins=edges)[0]
    if counts.sum() == 0:
        raise InputError(f"no tissue voxel (above {threshold} inside the mask) to histogram")
    return counts, edges


def histogram_wasserstein(counts_a: np.ndarray, counts_b: np.ndarray, edges: np.ndarray) -> float:
    """Wasserstein-1 distance between two intensity histograms on the same ``edges``: the area between
    their cumulative distributions (exact for mass at the bin centres; within one bin width of the
    distance between the unbinned intensities)."""
    a, b = np.asarray(counts_a, dtype=np.float64), np.asarray(counts_b, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(edges) != len(a) + 1:
        raise InputError(f"histograms of {a.shape} and {b.shape} bins on {len(edges)} edges do not match")
    if a.sum() <= 0 or b.sum() <= 0:
        raise InputError("an empty histogram has no distribution to compare")
    gap = np.abs(np.cumsum(a / a.sum()) - np.cumsum(b / b.sum()))[:-1]
    return float(np.sum(gap * np.diff((edges[:-1] + edges[1:]) / 2)))


def tissue_intensity_comparison(generated, real, *, bins: int = 100, **kwargs) -> dict[str, Any]:
    """Tissue intensity histograms of generated and real volumes (:func:`tissue_histogram`, same
    bins) and the Wasserstein-1 distance between them (intensity units, [0, 1])."""
    generated_counts, edges = tissue_histogram(generated, bins=bins, **kwargs)
    real_counts, _ = tissue_histogram(real, bins=bins, **kwargs)
    return {"wasserstein": histogram_wasserstein(generated_counts, real_counts, edges), "bins": int(bins),
            "generated_counts": generated_counts.tolist(), "real_counts": real_counts.tolist()}


# ----------------------------------------------------------------- one 3-D run (the volumetric_metrics rule)

#: Slice positions per plane at which samples and real volumes are both cut (the central half,
#: :func:`central_indices`): the 2-D metrics and the 2.5-D FID compare the same anatomy.
SLICES_PER_PLANE = VOLUMETRIC_SLICES_PER_PLANE
#: Real volumes read at a time: memory holds the samples and one chunk, whatever the cohort's size.
REAL_CHUNK = VOLUMETRIC_CHUNK
#: Sample and real volumes shown in the orthogonal-views figure.
VIEW_VOLUMES = 4
#: A figure tile is enlarged (nearest neighbour, whole factors) to at least this many pixels a side.
VIEW_MIN_PIXELS = 96
#: The 2-D metrics reported per plane (evaluation/pixel_metrics.sample_metrics, diversity.pairwise_ms_ssim).
PLANE_METRICS = ("dataset_similarity", "isd", "min_isd", "sharpness_mean", "sharpness_std", "ms_ssim_mean")


def slice_positions(shape: Sequence[int], slices_per_plane: int = SLICES_PER_PLANE) -> dict[str, list[int]]:
    """Plane -> the slice positions used for volumes of spatial ``shape`` (X, Y, Z)."""
    depth = {"sagittal": shape[0], "coronal": shape[1], "axial": shape[2]}
    return {plane: central_indices(int(depth[plane]), slices_per_plane).tolist() for plane in PLANES}


def write_plane_slices(volumes, plane: str, indices: Sequence[int], path: Path, *, chunk: int = REAL_CHUNK):
    """``plane_slices(volumes, plane, indices)`` written to the .npy file ``path`` ``chunk`` volumes at
    a time, returned as a core.slices.SplitImages (read when indexed): the real volumes' slices of a
    large cohort are never in memory at once. Each chunk is written through a mapping opened for it
    alone, so written pages leave the resident set when it closes."""
    from pipeline_lib.core.slices import SplitImages

    volumes = _volumes(volumes, "real volumes")
    first = plane_slices(np.asarray(volumes[:1], dtype=np.float32), plane, indices)
    per_volume = len(first)
    total = per_volume * len(volumes)
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(total,) + first.shape[1:])
    for start, block in _batches(volumes, chunk):
        target = np.load(path, mmap_mode="r+")
        target[start * per_volume:(start + len(block)) * per_volume] = plane_slices(block, plane, indices)
        target.flush()
        del target
    return SplitImages(Path(path), np.arange(total))


def frechet_plane_fid(features: Callable[[Any], np.ndarray], dims: list[int] | None = None
                      ) -> Callable[[Any, Any], float]:
    """A 2-D FID of two slice sets from ``features`` (slices -> (M, D) feature rows), for
    :func:`three_plane_fid`; the volumetric job passes the FID Inception's pool3 features. Each
    call appends D to ``dims`` (for the small-sample warning)."""
    from pipeline_lib.core.inception import frechet_distance_features

    def plane_fid(real_slices, generated_slices) -> float:
        real, fake = np.asarray(features(real_slices)), np.asarray(features(generated_slices))
        if dims is not None:
            dims.append(int(real.shape[1]))
        return frechet_distance_features(real, fake)

    return plane_fid


def _plane_metrics(samples, reference, *, sharpness_scale: float) -> dict[str, Any]:
    from pipeline_lib.evaluation.pixel_metrics import sample_metrics

    return sample_metrics(samples, reference, sharpness_scale=sharpness_scale)


def volumetric_metrics(samples: np.ndarray, train, test, affine: np.ndarray, *, scratch: Path,
                       features: Callable[[Any], np.ndarray], sharpness_scale: float, n_pairs: int,
                       kernel_size: int, percentile: float, seed: int,
                       slices_per_plane: int = SLICES_PER_PLANE, chunk: int = REAL_CHUNK) -> dict[str, Any]:
    """Every volumetric metric of one run's ``samples`` (N, C, X, Y, Z) against the real ``train`` and
    ``test`` volumes (arrays or core.slices.SplitImages, read ``chunk`` at a time; their slices go to
    files in ``scratch``):

    - ``planes``: per plane, the 2-D metrics of Ungría Hirte et al. (DS against the training
      volumes' slices, ISD, minimum ISD, sharpness) and MS-SSIM between pairs of distinct slices
      (evaluation/diversity.py) on the samples' slices at ``slice_indices``;
      ``real_planes``: the same of the real test volumes' slices (the reference row);
    - ``fid``: the 2.5-D FID (:func:`three_plane_fid`, samples' slices against the training
      volumes' at the same positions, on ``features``), with its note and a small-sample warning;
    - ``ms_ssim_3d`` (samples) and ``ms_ssim_3d_real`` (test volumes, when two or more);
    - ``memorization`` (:func:`volume_memorization`), ``brain_volume`` and ``tissue_intensity``
      (samples against the training volumes; no brain mask: every voxel above the threshold).
    """
    from pipeline_lib.evaluation.fid import small_sample_warning

    samples = np.asarray(_volumes(samples, "samples"), dtype=np.float32)
    train, test = _volumes(train, "training volumes"), _volumes(test, "test volumes")
    for name, real in (("training", train), ("test", test)):
        if tuple(real.shape[1:]) != tuple(samples.shape[1:]):
            raise InputError(f"samples of {tuple(samples.shape[1:])} (C, X, Y, Z) do not match the {name} "
                             f"volumes' {tuple(real.shape[1:])}: a run's samples must be on its dataset's grid")
    positions = slice_positions(samples.shape[2:], slices_per_plane)
    planes, real_planes, real_train, generated = {}, {}, {}, {}
    for plane in PLANES:
        generated[plane] = plane_slices(samples, plane, positions[plane])
        real_train[plane] = write_plane_slices(train, plane, positions[plane], scratch / f"train-{plane}.npy",
                                               chunk=chunk)
        real_test = write_plane_slices(test, plane, positions[plane], scratch / f"test-{plane}.npy", chunk=chunk)
        planes[plane] = {**_plane_metrics(generated[plane], real_train[plane], sharpness_scale=sharpness_scale),
                         **pairwise_ms_ssim(generated[plane], n_pairs=n_pairs, seed=seed, kernel_size=kernel_size)}
        real_planes[plane] = {**_plane_metrics(real_test, real_train[plane], sharpness_scale=sharpness_scale),
                              **pairwise_ms_ssim(real_test, n_pairs=n_pairs, seed=seed, kernel_size=kernel_size)}
    dims: list[int] = []
    fid_result = three_plane_fid(real_train, generated, frechet_plane_fid(features, dims))
    smallest = min(min(len(generated[p]), len(real_train[p])) for p in PLANES)
    fid_result["slices_per_set"] = {p: {"generated": len(generated[p]), "real": len(real_train[p])} for p in PLANES}
    fid_result["warning"] = small_sample_warning(smallest, max(dims))
    memorization = volume_memorization(samples, train, test, percentile=percentile, chunk=chunk)
    memorization.pop("_arrays")
    result = {
        "kind": "volumetric",
        "n_samples": int(len(samples)), "n_train": int(len(train)), "n_test": int(len(test)),
        "volume_shape": [int(v) for v in samples.shape[1:]],
        "slice_indices": positions,
        "planes": planes,
        "real_planes": real_planes,
        "fid": fid_result,
        "ms_ssim_3d": pairwise_ms_ssim_3d(samples, n_pairs=n_pairs, seed=seed, kernel_size=kernel_size),
        "memorization": memorization,
        "brain_volume": brain_volume_comparison(samples, train, affine),
        "tissue_intensity": tissue_intensity_comparison(samples, train),
    }
    if len(test) >= 2:
        result["ms_ssim_3d_real"] = pairwise_ms_ssim_3d(test, n_pairs=n_pairs, seed=seed, kernel_size=kernel_size)
    return result


def orthogonal_views(samples, real, *, n: int = VIEW_VOLUMES, min_pixels: int = VIEW_MIN_PIXELS) -> np.ndarray:
    """One grey image in [0, 1]: a row per volume, the central axial, coronal and sagittal slices of
    the first channel of ``n`` samples on the left, of ``n`` real volumes on the right (in the slice
    datasets' display orientation), each tile padded to one size and enlarged to ``min_pixels``."""
    from pipeline_lib.core.figures import tile

    def rows_of(volumes) -> np.ndarray:
        volumes = np.asarray(_volumes(volumes)[:n], dtype=np.float32)[:, :1]
        centre = {plane: [depth // 2] for plane, depth in
                  zip(("sagittal", "coronal", "axial"), volumes.shape[2:])}
        views = [plane_slices(volumes, plane, centre[plane]) for plane in PLANES]
        height, width = max(v.shape[1] for v in views), max(v.shape[2] for v in views)
        factor = max(1, -(-min_pixels // max(height, width)))
        tiles = np.zeros((len(volumes), len(PLANES), height * factor, width * factor), dtype=np.float32)
        for p, view in enumerate(views):
            big = view.repeat(factor, axis=1).repeat(factor, axis=2)
            top, left = (tiles.shape[2] - big.shape[1]) // 2, (tiles.shape[3] - big.shape[2]) // 2
            tiles[:, p, top:top + big.shape[1], left:left + big.shape[2]] = big
        return tile(tiles.reshape((-1,) + tiles.shape[2:]), ncols=len(PLANES))

    left, right = rows_of(samples), rows_of(real)
    height = max(left.shape[0], right.shape[0])
    gap = np.ones((height, 3 * 4), dtype=np.float32)
    pad = [np.vstack([part, np.ones((height - part.shape[0], part.shape[1]), dtype=np.float32)])
           for part in (left, right)]
    return np.hstack([pad[0], gap, pad[1]])


def volumetric_job(samples: Path, volumes: Path, table: Path, grid: Path, weights: Path, *, out_json: Path,
                   out_png: Path, sharpness_scale: float = 255.0, n_pairs: int = 1000, kernel_size: int = 4,
                   percentile: float = 5.0, seed: int = 0, fid: Mapping[str, Any] | None = None,
                   features: Callable[[Any], np.ndarray] | None = None, labels: Path | None = None,
                   covariates: Sequence[str] = ()) -> dict[str, Any]:
    """The volumetric_metrics rule: one 3-D run's ``samples`` (volumes.npy) against its volume
    dataset (``volumes``, ``table``, ``grid``) with :func:`volumetric_metrics`, written to
    ``out_json``; the orthogonal views of samples beside real test volumes to ``out_png``. The
    settings are the 2-D metrics' (``metrics.sharpness_scale``, ``evaluation.diversity``'s
    ``n_pairs`` and ``kernel_size``, ``evaluation.memorization.percentile``, ``sampling.seed``);
    ``features`` defaults to the FID Inception of ``weights`` (core/inception.py, the 2-D FID's
    features) run with ``fid``'s runtime keys (``evaluation.fid``: device, batch_size, channels_last).
    A model conditioned on ``covariates`` gets :func:`conditioning_check` of the samples against the
    values in their ``labels`` (labels.tsv), under ``conditioning``."""
    import tempfile

    from pipeline_lib.core.figures import encode_png_gray8, to_uint8
    from pipeline_lib.core.io import atomic_path, write_json
    from pipeline_lib.core.settings import FidSettings, read_settings
    from pipeline_lib.core.slices import validate_images
    from pipeline_lib.core.volumes import open_volume_split, read_grid

    fid_settings = read_settings(FidSettings, fid)
    generated = np.load(samples)
    if generated.ndim != 5 or generated.dtype != np.float32:
        raise InputError(f"{samples}: expected float32 volumes shaped (n, C, X, Y, Z), got {generated.dtype} "
                         f"{generated.shape}")
    validate_images(generated.reshape(len(generated), -1, generated.shape[-1]), str(samples))
    train, _ = open_volume_split(volumes, table, "train")
    test, _ = open_volume_split(volumes, table, "test")
    if len(train) == 0 or len(test) == 0:
        raise InputError(f"{table}: the volume dataset needs training and test volumes (has {len(train)} and "
                         f"{len(test)})")
    if features is None:
        from pipeline_lib.core.inception import extract_features, load_feature_network

        net = load_feature_network(weights, device=fid_settings.device, channels_last=fid_settings.channels_last)

        def features(slices):
            return extract_features(slices, net, batch_size=fid_settings.batch_size,
                                    channels_last=fid_settings.channels_last, what="volume slices")

    with tempfile.TemporaryDirectory(dir=Path(out_json).parent, prefix=".volumetric-") as scratch:
        result = volumetric_metrics(generated, train, test, read_grid(grid)["affine"], scratch=Path(scratch),
                                    features=features, sharpness_scale=sharpness_scale, n_pairs=n_pairs,
                                    kernel_size=kernel_size, percentile=percentile, seed=seed)
    if covariates:
        import pandas as pd

        if labels is None:
            raise InputError(f"{samples}: the model conditions on {', '.join(covariates)}: the evaluation needs "
                             "the samples' labels.tsv")
        requested = pd.read_csv(labels, sep="\t", keep_default_na=False)
        if len(requested) != len(generated):
            raise InputError(f"{labels}: {len(requested)} rows for {len(generated)} sampled volumes")
        result["conditioning"] = conditioning_check(generated, requested, read_grid(grid)["affine"], covariates,
                                                    seed=seed)
    with atomic_path(out_png, suffix=".png") as tmp:
        tmp.write_bytes(encode_png_gray8(to_uint8(orthogonal_views(generated, test))))
    write_json(out_json, result)
    return result
