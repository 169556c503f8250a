"""Cluster requests (``mem_mb``, ``runtime``) computed from the size of a job's data.

The rules call one function per rule (``mem_mb=lambda wildcards, input, attempt: ...``); each is a
sum of a fixed part (interpreter, libraries, model) and terms proportional to what the job holds in
memory (its slice dataset, its samples, its input volume), multiplied by ``ATTEMPT_GROWTH`` per
retry, so a job killed for memory gets more on the next attempt. docs/RESOURCES.md gives every
formula with the reason for each term and the measurement it is calibrated on.

When a job's input exists (at run time, and for a rerun) the size is read from it: the shape in a
``.npy`` header, the bytes of a volume. In a dry run before the data exist it is estimated from the
configuration and the discovered cohort (subjects x slices per volume x image size x channels), so
``snakemake -n`` shows every job's request. Nothing here imports numpy or torch: it runs while the
DAG is built, once per job.
"""

from __future__ import annotations

import ast
import inspect
import math
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: Each retry asks for this factor more memory (and time) than the previous attempt.
ATTEMPT_GROWTH = 1.5
MB = 1_000_000
#: Bytes of one float32 pixel, the dtype of images.npy, samples.npy and the models' tensors.
FLOAT32 = 4
#: Python, numpy, pandas and the pipeline's own imports (imaging jobs; measured ~250 MB).
PYTHON_MB = 500
#: The same with torch and MONAI imported (bench/results/published_scale.md: about 510 MB before a
#: model is built), plus allocator slack.
TORCH_MB = 1000
#: torch, Inception-v3 (FID) weights and the activations of one block of images at 299 px.
INCEPTION_MB = 2500
#: pool3 features per image (2,048 float64 values, as the feature files store them).
FEATURE_BYTES = 2048 * 8
#: Peak of deepbet + ANTs affine registration of a 1 mm head, 1 thread
#: (bench/results/registration_time.md: about 2.2 GB).
REGISTRATION_MB = 2200

#: Peak training memory per MB of one float32 batch (batch x pixels x channels x 4 B), beyond
#: torch's own, fitted on bench/results/published_scale.md (peak RSS - 510 MB) / batch MB at the
#: published sizes; activations, gradients and optimiser state all grow with it. Unknown families
#: get the largest factor.
TRAIN_MB_PER_BATCH_MB = {
    "vae": 460, "cvae": 1200, "dfc_vae": 1240, "intro_vae": 4960, "stylegan": 7050,
    "dcgan": 250, "cgan": 250, "wgan": 180, "wgan_gp": 360, "ddpm": 2000, "ldm": 2000,
    # a batch of volumes: the tutorial network at 32^3, batch 1 (bench/results/ddpm3d_step.md: 1957 MB
    # peak, 0.125 MB batch; 48^3 gives 7,400), the larger fit
    "ddpm3d": 11600,
}


@dataclass(frozen=True)
class ImageSet:
    """The shape of an image stack: images x channels x height x width (float32)."""

    images: int
    pixels: int  # channels x height x width

    @property
    def mb(self) -> float:
        return self.images * self.pixels * FLOAT32 / MB


def attempt_factor(attempt: int) -> float:
    return ATTEMPT_GROWTH ** (max(int(attempt), 1) - 1)


#: No job asks for less: a job that imports torch and MONAI (diversity metrics) peaks at 1.1 GB
#: before it reads any data (the demo's diversity jobs were stopped by the guard at a 1.0 GB request).
MIN_REQUEST_MB = 2000


def request_mb(mb: float, attempt: int) -> int:
    """``mb`` grown for ``attempt``, rounded up to 100 MB (schedulers count in MB), at least
    ``MIN_REQUEST_MB`` grown the same way."""
    return int(math.ceil(max(mb, MIN_REQUEST_MB) * attempt_factor(attempt) / 100.0) * 100)


def request_minutes(minutes: float, attempt: int) -> int:
    return int(math.ceil(minutes * attempt_factor(attempt)))


#: Where Snakemake (``snakemake.common.get_function_params``, 8.x and 9.x) looks for a callable's
#: parameters before it inspects the callable's signature.
SNAKEMAKE_PARAMETERS_ATTRIBUTE = "_overwrite_params"


def signature_once(func):
    """Decorator for the workflow's per-job callables (input functions, params, resources, group):
    Snakemake inspects a callable's signature every time it calls it, two or three times per job and
    callable, which was about a tenth of a 40,000-subject dry run's CPU (bench/results/dag_40000.md).
    The parameters kept are those inspect gives, so Snakemake passes the same arguments."""
    setattr(func, SNAKEMAKE_PARAMETERS_ATTRIBUTE, inspect.signature(func).parameters)
    return func


# ----- sizes from files -----


def npy_shape(path: str | os.PathLike) -> tuple[int, ...] | None:
    """The shape in a ``.npy`` header, or None when the file does not exist (yet) or holds no array:
    a failed run's record (core/guard.py) or a placeholder of ``snakemake --touch``. A request is
    then estimated; it must never stop the DAG."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(8)
            if magic[:6] != b"\x93NUMPY":
                return None
            length = int.from_bytes(handle.read(2 if magic[6] == 1 else 4), "little")
            header = ast.literal_eval(handle.read(length).decode("latin1"))
    except FileNotFoundError:
        return None
    return tuple(int(v) for v in header["shape"])


def image_set(path: str | os.PathLike) -> ImageSet | None:
    """An images.npy / samples.npy stack's size from its header (None when absent)."""
    shape = npy_shape(path)
    if shape is None:
        return None
    return ImageSet(images=shape[0] if shape else 0, pixels=math.prod(shape[1:]))


#: Bytes counted for a folder (a DICOM series) instead of listing it: about 200 slices of 512 x 512
#: 16-bit, a 1 mm T1. Listing 20,000 series folders was the largest cost of a 40,000-subject dry run.
SERIES_FOLDER_BYTES = 200 * 512 * 512 * 2


def bytes_on_disk(paths: Iterable[str | os.PathLike], folder_bytes: int | None = None) -> int:
    """Bytes of the files (links followed) and of the files directly inside folders; missing = 0.
    With ``folder_bytes`` a folder counts that much instead of a stat per file inside."""
    total = 0
    for path in paths:
        try:
            info = os.stat(path)
            if not stat.S_ISDIR(info.st_mode):
                total += info.st_size
            elif folder_bytes is not None:
                total += folder_bytes
            else:
                with os.scandir(path) as entries:
                    total += sum(e.stat().st_size for e in entries if e.is_file())
        except OSError:
            continue
    return total


def source_bytes(paths: Iterable[str | os.PathLike]) -> int:
    """A subject's source files' bytes; a DICOM series folder counts SERIES_FOLDER_BYTES."""
    return bytes_on_disk(paths, SERIES_FOLDER_BYTES)


# ----- sizes from the configuration (before the data exist) -----


AXIS_OF_GRID = {"sagittal": 0, "coronal": 1, "axial": 2}


def slices_per_volume(dataset: Any, grid: tuple[int, int, int]) -> int:
    """Slices a dataset cuts from one registered volume (imaging/slice_geometry.py's selection)."""
    depth = grid[AXIS_OF_GRID[dataset.axis]]
    selection = dataset.selection
    mode = selection["mode"]
    if mode == "drop":
        return max(depth - selection["low"] - selection["high"], 1)
    if mode == "range":
        return min(selection["last"], depth - 1) - selection["first"] + 1
    if mode == "central":
        return min(selection["n"], depth)
    if mode == "offsets_mm":
        return len(selection["offsets_mm"])
    return depth


def estimated_dataset(dataset: Any, grid: tuple[int, int, int], subjects: int, sequences: int = 1) -> ImageSet:
    """A slice dataset's size before slicing: every subject kept, each volume (one per sequence
    unless the dataset stacks sequences as channels or filters on one) with its selected slices,
    training subjects' augmented copies included."""
    channels = len(dataset.channels) if dataset.channels else 1
    volumes = 1 if dataset.channels or "sequence" in dataset.filters else max(sequences, 1)
    images = subjects * volumes * slices_per_volume(dataset, grid)
    if dataset.augmentation and dataset.augmentation.get("mode", "offline") == "offline":
        # augmentation.count copies of every training volume (defaults to one when unstated); on the
        # fly, images.npy holds the real slices only and training draws the copies from slabs
        copies = int(dataset.augmentation.get("count", 1))
        images += int(images * (1 - dataset.test_fraction)) * copies
    return ImageSet(images=images, pixels=channels * dataset.size[0] * dataset.size[1])


def dataset_size(images_path: str | os.PathLike, estimate: ImageSet) -> ImageSet:
    """The slice dataset as written when it exists, else the estimate from the configuration."""
    return image_set(images_path) or estimate


# ----- per-rule requests (MB) -----


def ingest_mb(input_bytes: int) -> float:
    """Ingest holds the source volume decoded as float32 (gzip ~3x) a few times over (reorientation,
    validation, the written copy): 12 x the bytes on disk."""
    return PYTHON_MB + 500 + 12 * input_bytes / MB


def register_mb(volume_bytes: int, grid: tuple[int, int, int]) -> float:
    """deepbet + ANTs: the measured 1 mm peak, plus 12 x the ingested volume beyond a 1 mm head's
    ~30 MB (decoded, resampled, masked copies) and 10 float32 copies of the output grid."""
    grid_mb = math.prod(grid) * FLOAT32 / MB
    return REGISTRATION_MB + 500 + 12 * max(volume_bytes / MB - 30, 0) + 10 * grid_mb


def slice_dataset_mb(dataset: ImageSet, grid: tuple[int, int, int]) -> float:
    """Slicing keeps the whole dataset in memory while stacking it (x2: list of slices and the
    stacked array) and one registered volume at a time."""
    return PYTHON_MB + 500 + 2 * dataset.mb + 10 * math.prod(grid) * FLOAT32 / MB


def train_mb(family: str, batch_size: int, dataset: ImageSet) -> float:
    """torch + the model's per-batch footprint (TRAIN_MB_PER_BATCH_MB, fitted per family) + the
    slice dataset as a float32 tensor and its batches (x2)."""
    per_batch = TRAIN_MB_PER_BATCH_MB.get(family, max(TRAIN_MB_PER_BATCH_MB.values()))
    batch_mb = batch_size * dataset.pixels * FLOAT32 / MB
    return TORCH_MB + per_batch * batch_mb + 2 * dataset.mb


def sample_mb(family: str, n_samples: int, batch_size: int, dataset: ImageSet) -> float:
    """The model at its sampling batch (as in training) plus every sample and reconstruction (x3:
    samples, reconstructions, test slices)."""
    per_batch = TRAIN_MB_PER_BATCH_MB.get(family, max(TRAIN_MB_PER_BATCH_MB.values()))
    batch_mb = batch_size * dataset.pixels * FLOAT32 / MB
    samples_mb = n_samples * dataset.pixels * FLOAT32 / MB
    return TORCH_MB + per_batch * batch_mb / 2 + 3 * max(samples_mb, 0) + dataset.mb


#: Images an evaluation job reads from images.npy at a time (core.slices.SplitImages): the largest
#: block of its streamed reductions and searches (evaluation/fid._CHUNK for Inception, 256 elsewhere).
EVAL_BLOCK_IMAGES = 1024
#: Bytes a streaming evaluation job keeps per slice of its dataset besides the images, which stay on
#: disk: the slice table (pandas rows of slices.tsv, read whole), a split's row numbers, its domain
#: features (64 float64, three copies in the memorization audit) and neighbour indices and
#: distances. Measured growth from 8,000 to 32,000 slices (bench/results/eval_rss.md and
#: eval_rss_memorization.md): at most about 2.2 KB per slice (memorization), noise aside.
EVAL_BYTES_PER_IMAGE = 4096


def streamed_evaluation_mb(dataset: ImageSet, samples: ImageSet | None = None, held: int = 0) -> float:
    """Evaluation jobs that read their splits from disk a block at a time (core/slices.open_split):
    torch, four blocks of EVAL_BLOCK_IMAGES images in float64 (a query and a reference block of a
    neighbour search, their copies), EVAL_BYTES_PER_IMAGE per slice of the dataset, the samples
    they compare with (x2) and ``held`` images read at once (the diversity jobs' pairs)."""
    image_bytes = dataset.pixels * FLOAT32
    blocks = 4 * EVAL_BLOCK_IMAGES * image_bytes * 2
    return (TORCH_MB + (blocks + EVAL_BYTES_PER_IMAGE * dataset.images + held * image_bytes) / MB
            + (2 * samples.mb if samples else 0))


def features_mb(images: ImageSet, held: ImageSet | None = None) -> float:
    """Inception reads its images from disk a chunk at a time (evaluation/fid._CHUNK, the size of
    EVAL_BLOCK_IMAGES: a real split through core/slices.SplitImages, fresh FID blocks memory-mapped),
    as float32 and a cropped copy; the features of every image are kept (2,048 float64 each) with
    their covariance. ``held``: images loaded whole besides (a run's samples, x2 for their grey view)."""
    chunk_bytes = 2 * min(images.images, EVAL_BLOCK_IMAGES) * images.pixels * FLOAT32
    return (INCEPTION_MB + (images.images * FEATURE_BYTES * 2 + chunk_bytes) / MB
            + (2 * held.mb if held else 0))


#: Inception-v3 images per second on one CPU core pair (issue 22's estimate, about 5/s); a GPU is
#: far faster, so the CPU rate bounds the time limit from above.
INCEPTION_IMAGES_PER_S = 5.0


def features_minutes(images: int) -> float:
    """Loading the weights (a few minutes on a busy node) plus the images at the CPU rate."""
    return 15 + images / INCEPTION_IMAGES_PER_S / 60


def distribution_mb(n_features: int) -> float:
    """FID/KID/PRDC: both feature sets (x2 for the PRDC distance blocks)."""
    return TORCH_MB + 3 * n_features * FEATURE_BYTES / MB


def report_mb(subjects: int, dataset: ImageSet) -> float:
    """The report reads every QC row and one slice per subject for overlays, plus the datasets'
    tables; 0.2 MB per subject covers the rows and their figures."""
    return TORCH_MB + 0.2 * subjects + dataset.mb / 4


def table_mb(subjects: int) -> float:
    """QC tables: one row (a small JSON per subject) each."""
    return PYTHON_MB + 0.05 * subjects



# ----- training time limits -----

#: Measured or estimated training time is multiplied by this (a slower node, a busier file system).
TRAIN_SAFETY = 1.3
#: Minutes for what is not steps: start-up (imports, building the model, reading the checkpoint),
#: the final weights and losses, the data loader's start.
TRAIN_ALLOWANCE_MINUTES = 20
#: No train job asks for less.
TRAIN_FLOOR_MINUTES = 30
#: The longest time limit a job asks for where the site names none (partitions have a MaxTime;
#: profiles/slurm site key max_runtime_minutes).
DEFAULT_MAX_RUNTIME_MINUTES = 7 * 24 * 60
#: Without a measurement or an estimate: a steps/epochs budget gets this many minutes.
TRAIN_UNKNOWN_MINUTES = 240


@dataclass(frozen=True)
class TrainTimeLimit:
    minutes: int  # the request of this attempt (sbatch -t)
    needed_minutes: float  # the remaining work's estimate, before the cap
    source: str  # "measured", "estimate" (budget.seconds_per_step) or "budget" (no speed known)
    attempts_needed: int  # attempts at this request that the remaining work takes (1 if it fits)


def train_time_limit(attempt: int, *, steps_left: int | None = None, seconds_per_step: float | None = None,
                     measured: bool = False, budget_minutes: float | None = None,
                     cap_minutes: float = DEFAULT_MAX_RUNTIME_MINUTES) -> TrainTimeLimit:
    """A train job's time limit in minutes.

    With a speed (``measured`` by an earlier attempt of this run, or the user's estimate
    budget.seconds_per_step) and the steps left: steps x s/step x TRAIN_SAFETY + the allowance. A
    measured speed is not grown per attempt (the measurement follows the run); an estimate grows by
    ATTEMPT_GROWTH per attempt, in case it was optimistic. Without a speed: the minutes cap x 1.1 +
    20 (TRAIN_UNKNOWN_MINUTES without one), doubled per attempt. At least TRAIN_FLOOR_MINUTES, at
    most ``cap_minutes``; work beyond the cap continues over further attempts from the checkpoint,
    ``attempts_needed`` of them."""
    attempt = max(int(attempt), 1)
    if seconds_per_step is not None and steps_left is not None:
        needed = steps_left * seconds_per_step * TRAIN_SAFETY / 60 + TRAIN_ALLOWANCE_MINUTES
        if not measured:
            needed *= attempt_factor(attempt)
        source = "measured" if measured else "estimate"
    else:
        base = int(budget_minutes * 1.1) + 20 if budget_minutes else TRAIN_UNKNOWN_MINUTES
        needed, source = base * 2 ** (attempt - 1), "budget"
    minutes = int(math.ceil(min(max(needed, TRAIN_FLOOR_MINUTES), cap_minutes)))
    # each capped attempt trains for its minutes less the allowance it spends starting and saving
    per_attempt = max(minutes - TRAIN_ALLOWANCE_MINUTES, 1)
    attempts = max(1, math.ceil((needed - TRAIN_ALLOWANCE_MINUTES) / per_attempt))
    return TrainTimeLimit(minutes=minutes, needed_minutes=needed, source=source, attempts_needed=attempts)
