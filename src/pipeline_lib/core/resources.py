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
    # stylegan with the preset's loss (gradient penalty: a second backward pass), 9,644 MB at 128 px
    # batch 16 (1 MB); 7,909 with the penalty-free literal form
    "vae": 460, "cvae": 1200, "dfc_vae": 1240, "intro_vae": 4960, "stylegan": 9000,
    "dcgan": 250, "cgan": 250, "wgan": 180, "wgan_gp": 360, "ddpm": 2000, "ldm": 2000,
    # a batch of volumes: the tutorial network at 32^3, batch 1 (bench/results/ddpm3d_step.md: 1957 MB
    # peak, 0.125 MB batch; 48^3 gives 7,400), the larger fit
    "ddpm3d": 11600,
    # bench/results/ldm3d_step.md: stage 1 (autoencoder with its adversarial and perceptual terms)
    # is the larger, 1380 MB at 32^3 batch 1 (0.125 MB); 48^3 gives 3,500
    "ldm3d": 7000,
    # bench/results/wgan_gp3d_step.md: the published width at 32^3 batch 4 (0.5 MB), 1324 MB, where
    # the 20 M parameters weigh most; the demo width and 64^3 give 460 and 480
    "wgan_gp3d": 1700,
}


#: Memory the latent diffusion families keep for their frozen encoder's posterior moments during
#: the diffusion stage on the CPU (models/families/ldm.py), where the encoder's forward pass was
#: about half of a 3-D stage-2 step (32^3 volumes, the 3-D demo's widths: 0.26 of 0.57 s). 256 MB
#: hold 21,000 such volumes (12 KB each), 950 of the published 160 x 224 x 160 grid's; images beyond
#: it are encoded every time they come. Their training request counts it (train_mb).
POSTERIOR_CACHE_MB = 256
POSTERIOR_CACHE_FAMILIES = ("ldm", "ldm3d")


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


def dataset_volumes(dataset: Any, subjects: int, sequences: int = 1) -> tuple[int, int]:
    """(registered volumes a slice dataset reads, offline augmented copies of each training volume):
    one per sequence, or each of its stacked channels, or the one its sequence filter keeps."""
    if dataset.channels:
        per_subject = len(dataset.channels)
    else:
        per_subject = 1 if "sequence" in dataset.filters else max(sequences, 1)
    augmentation = dataset.augmentation or {}
    copies = int(augmentation.get("count", 1)) if augmentation and augmentation.get("mode", "offline") == "offline" else 0
    return subjects * per_subject, copies


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


#: Bytes a slicing, training or sampling job keeps per slice of its dataset besides the images, which
#: go to or stay on disk: the slice table's row (a dict per row while slicing, then the pandas table
#: read whole), the split's row numbers and the trainer's order. Measured with bench/rule_rss.py
#: (bench/results/rule_rss.md) from 5,278 to 1,040,000 slices.
TABLE_BYTES_PER_IMAGE = 4096


def slice_dataset_mb(dataset: ImageSet, grid: tuple[int, int, int]) -> float:
    """Slicing writes each volume's slices to disk as it goes (core.io.NpyRows, so no page of the
    dataset stays in the job), keeps every slice's table row and one registered volume at a time
    (10 float32 copies of the grid while normalising and fitting)."""
    return PYTHON_MB + 500 + (TABLE_BYTES_PER_IMAGE * dataset.images + 10 * math.prod(grid) * FLOAT32) / MB


def train_mb(family: str, batch_size: int, dataset: ImageSet) -> float:
    """torch + the model's per-batch footprint (TRAIN_MB_PER_BATCH_MB, fitted per family) + the
    latent diffusion families' kept posterior moments (POSTERIOR_CACHE_MB) + the slice table's rows;
    the images stay on disk and are read a batch at a time (models/loader.py)."""
    per_batch = TRAIN_MB_PER_BATCH_MB.get(family, max(TRAIN_MB_PER_BATCH_MB.values()))
    batch_mb = batch_size * dataset.pixels * FLOAT32 / MB
    cache_mb = POSTERIOR_CACHE_MB if family in POSTERIOR_CACHE_FAMILIES else 0
    return TORCH_MB + per_batch * batch_mb + cache_mb + TABLE_BYTES_PER_IMAGE * dataset.images / MB


def sample_mb(family: str, n_samples: int, batch_size: int, dataset: ImageSet) -> float:
    """The model at its sampling batch (the training footprint: bench/results/rule_rss.md measured
    more than half of it) plus every sample and reconstruction (x3: samples, reconstructions, the
    test slices they reconstruct) and the slice table's rows (the test subset is read from disk)."""
    per_batch = TRAIN_MB_PER_BATCH_MB.get(family, max(TRAIN_MB_PER_BATCH_MB.values()))
    batch_mb = batch_size * dataset.pixels * FLOAT32 / MB
    samples_mb = n_samples * dataset.pixels * FLOAT32 / MB
    return TORCH_MB + per_batch * batch_mb + 3 * max(samples_mb, 0) + TABLE_BYTES_PER_IMAGE * dataset.images / MB


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


# ----- time limits of the other rules (minutes) -----
#
# Each is a fixed start-up plus a per-item cost times the job's items (images, pairs, steps,
# subjects), the per-item costs measured on this repository's CPU benches (docs/RESOURCES.md, "Time
# limits", names each source) and multiplied by RULE_SAFETY. The workflow grows them per attempt
# (request_minutes) and caps them at the site's max_runtime_minutes (capped_request_minutes).

#: Measured seconds are multiplied by this: a cluster CPU core slower than the benches' machine,
#: other jobs on the node, a network file system.
RULE_SAFETY = 2.0
#: Start-up of a job: Snakemake's job wrapper, Python with torch and MONAI imported from a cold
#: network file system, the weights of a model; and writing the outputs.
RULE_STARTUP_MINUTES = 10
#: No rule asks for less (a scheduler backfills short jobs; a shorter request saves nothing).
RULE_FLOOR_MINUTES = 15

#: Slicing or boxing a registered volume: read, normalise, resample, write; seconds per voxel
#: (bench/results/volume_sizes.md: 32 volumes of 96 x 112 x 96 built in 6.03 s, 1.8e-7 s/voxel).
VOLUME_SECONDS_PER_VOXEL = 1.9e-7
#: Reading one subject's QC record (a small JSON file) into a table row; not measured: a network
#: file system's open and read, generously.
TABLE_SECONDS_PER_SUBJECT = 0.02
#: Seconds per image and MB of the image a family takes to sample on one CPU (its generator, or a
#: decoder and, for the diffusion families, 100 DDIM steps): bench/results/published_scale.md's
#: "sampling (s, n)" over n and the image's float32 MB (vae 0.53 s / 64 at 128 px: 0.13; dfc_vae
#: 0.16; intro_vae 1.3; stylegan 12.4 s / 16: 12; dcgan 0.16 (Kazuhiro's, the largest of three);
#: wgan 0.12; cvae 0.06) and bench/results/ddim_sampling.md (ddpm 11.7 s / image at 64 px, 100 DDIM
#: steps: 720; ldm 240). cgan and wgan_gp share dcgan's and wgan's generator; a 3-D family counts
#: its volume's MB with its 2-D counterpart's rate. Unknown families get the largest.
SAMPLE_SECONDS_PER_IMAGE_MB = {
    "vae": 0.13, "cvae": 0.06, "dfc_vae": 0.16, "intro_vae": 1.3, "stylegan": 12.0,
    "dcgan": 0.16, "cgan": 0.16, "wgan": 0.12, "wgan_gp": 0.12, "wgan_gp3d": 0.12,
    "ddpm": 720.0, "ddpm3d": 720.0, "ldm": 240.0, "ldm3d": 240.0,
}
#: The evaluation CNNs (domain network, conditioning and utility classifiers): seconds per training
#: step per MB of a float32 batch (bench/results/rule_rates.md, cnn_step: 0.036 s per step of 32
#: images of 64 x 64, 0.52 MB).
CNN_SECONDS_PER_STEP_BATCH_MB = 0.07
#: The domain network's forward pass over the slices it encodes, seconds per slice per MB
#: (rule_rates.md, domain_forward: 0.054).
CNN_FORWARD_SECONDS_PER_IMAGE_MB = 0.055
#: Nearest training slice of every sample (memorization_audit, the pixel metrics' minimum ISD):
#: seconds per (sample, training slice) pair and MB of one image (bench/results/metrics.md: 1,000
#: samples x 52,754 slices of 128 px in 6.11 s, 1.8e-9). rule_rates.md's memorization slope (8.4e-4 s
#: per training slice at 256 samples of 64 px) is the domain encoding of the slice (domain_forward,
#: 8.8e-4 s): the pairs are below its noise.
PAIR_SECONDS_PER_MB = 2e-9
#: MS-SSIM of one pair of images (MONAI), seconds per MB of one image (rule_rates.md, ms_ssim_pair:
#: 0.16).
MS_SSIM_SECONDS_PER_PAIR_MB = 0.2
#: Reading a slice and its histogram (intensity_statistics), seconds per slice per MB
#: (rule_rates.md, intensity: 0.0036).
STREAM_SECONDS_PER_IMAGE_MB = 0.004
#: Seconds per multiply-add of the feature statistics' matrix products (covariances, KID's kernels,
#: PRDC's distances): rule_rates.md's matmul, 1.04e-10 for a float64 product on one core.
MATMUL_SECONDS_PER_FLOP = 1.1e-10
#: One repeat of a repeated FID besides its covariances: the Fréchet distance of two 2,048-d
#: statistics (a Cholesky factor and an eigen-decomposition); rule_rates.md's fid_repeat, 3.1 s
#: with the covariances of two sets of 3,000 features.
FID_REPEAT_SECONDS = 3.2
#: Writing one image of a reader kit (a PNG at the display size, its table row); not measured.
KIT_SECONDS_PER_IMAGE = 0.1
#: The report: per subject its QC rows and (flagged subjects') overlay, per run its tables and
#: figures; not measured.
REPORT_SECONDS_PER_SUBJECT = 0.05
REPORT_SECONDS_PER_RUN = 10.0


def rule_minutes(seconds: float) -> float:
    """A job's time limit before attempt growth: start-up plus the measured work x RULE_SAFETY,
    at least RULE_FLOOR_MINUTES."""
    return max(RULE_STARTUP_MINUTES + RULE_SAFETY * max(seconds, 0.0) / 60, RULE_FLOOR_MINUTES)


def capped_request_minutes(minutes: float, attempt: int, cap_minutes: float = DEFAULT_MAX_RUNTIME_MINUTES) -> int:
    """``minutes`` grown for ``attempt`` (request_minutes), at most the site's longest time limit."""
    return int(min(request_minutes(minutes, attempt), math.floor(cap_minutes)))


def image_mb(images: ImageSet) -> float:
    """One image's float32 MB."""
    return images.pixels * FLOAT32 / MB


def slice_dataset_minutes(volumes: int, grid: tuple[int, int, int], copies: int = 0) -> float:
    """Every registered volume read and sliced, and each training volume's offline augmented
    ``copies`` resampled as much again (an upper bound: every volume counted as a training one)."""
    return rule_minutes(volumes * (1 + copies) * math.prod(grid) * VOLUME_SECONDS_PER_VOXEL)


def volume_dataset_minutes(volumes: int, grid: tuple[int, int, int]) -> float:
    """Every registered volume read, normalised and resampled onto the dataset's grid."""
    return rule_minutes(volumes * math.prod(grid) * VOLUME_SECONDS_PER_VOXEL)


def table_minutes(subjects: int) -> float:
    """ingest_qc, qc_tables: one QC record read per subject."""
    return rule_minutes(subjects * TABLE_SECONDS_PER_SUBJECT)


def sample_seconds_per_image_mb(family: str) -> float:
    return SAMPLE_SECONDS_PER_IMAGE_MB.get(family, max(SAMPLE_SECONDS_PER_IMAGE_MB.values()))


def sample_minutes(family: str, images: ImageSet) -> float:
    """sample, sample_volumes, fid_samples: ``images`` drawn (samples, reconstructions, every fresh
    FID block) at the family's rate."""
    return rule_minutes(images.images * image_mb(images) * sample_seconds_per_image_mb(family))


def cnn_seconds(steps: int, batch_size: int, images: ImageSet, encoded: int = 0) -> float:
    """An evaluation CNN: ``steps`` training steps of ``batch_size`` images and ``encoded`` images
    through the network once."""
    return (steps * batch_size * image_mb(images) * CNN_SECONDS_PER_STEP_BATCH_MB
            + encoded * image_mb(images) * CNN_FORWARD_SECONDS_PER_IMAGE_MB)


def domain_network_minutes(steps: int, batch_size: int, dataset: ImageSet) -> float:
    """Training, then both splits encoded for its held-out quality."""
    return rule_minutes(cnn_seconds(steps, batch_size, dataset, encoded=dataset.images))


def domain_metrics_minutes(dataset: ImageSet, encoded: int) -> float:
    """The reference slices (at most n_reference training slices) and the compared set (the
    samples, or the test slices) encoded."""
    return rule_minutes(cnn_seconds(0, 0, dataset, encoded=encoded))


def conditioning_minutes(steps: int, batch_size: int, dataset: ImageSet, tested: int, samples: int) -> float:
    """A classifier trained on the real training slices, then the ``tested`` test slices and the
    samples classified."""
    return rule_minutes(cnn_seconds(steps, batch_size, dataset, encoded=tested + samples))


def utility_minutes(seeds: int, steps: int, batch_size: int, dataset: ImageSet, tested: int, samples: int) -> float:
    """Three classifiers (real, synthetic, both) per seed, each tested on the ``tested`` real test
    slices; the samples pseudo-labelled by the domain network once."""
    per_seed = 3 * cnn_seconds(steps, batch_size, dataset, encoded=tested)
    return rule_minutes(seeds * per_seed + cnn_seconds(0, 0, dataset, encoded=samples))


def nearest_pairs_minutes(queries: int, dataset: ImageSet, encoded: int = 0) -> float:
    """memorization_audit, metrics_model, metrics_original: every query image against every slice
    of the dataset (an upper bound on the training share), ``encoded`` slices through the domain
    network besides, and the slices streamed once."""
    mb = image_mb(dataset)
    seconds = (queries * dataset.images * mb * PAIR_SECONDS_PER_MB
               + encoded * mb * CNN_FORWARD_SECONDS_PER_IMAGE_MB + dataset.images * mb * STREAM_SECONDS_PER_IMAGE_MB)
    return rule_minutes(seconds)


def diversity_minutes(pairs: int, images: ImageSet) -> float:
    """MS-SSIM of ``pairs`` pairs (the sample pairs and the reconstructions against their slices)."""
    return rule_minutes(pairs * image_mb(images) * MS_SSIM_SECONDS_PER_PAIR_MB)


def intensity_minutes(dataset: ImageSet, samples: int) -> float:
    """Every training slice (an upper bound: the dataset) and sample read and binned once."""
    return rule_minutes((dataset.images + samples) * image_mb(dataset) * STREAM_SECONDS_PER_IMAGE_MB)


def distribution_minutes(real: int, samples: int, *, fid_repeats: int, kid_subsets: int, kid_subset_size: int,
                         prdc_max_real: int, prdc_max_samples: int, features: int = 2048) -> float:
    """FID, KID and PRDC on ``features``-dimensional features: per FID repeat both covariances (an
    upper bound: every feature row) and the distance, KID's polynomial kernels per subset (three
    subset_size^2 products) and PRDC's distance matrices (each side capped at its max_real /
    max_samples)."""
    real_prdc, samples_prdc = min(real, prdc_max_real), min(samples, prdc_max_samples)
    repeats = max(fid_repeats, 1)
    flops = (repeats * (real + samples) * features ** 2 + kid_subsets * 3 * kid_subset_size ** 2 * features
             + (real_prdc + samples_prdc) ** 2 * features)
    return rule_minutes(flops * MATMUL_SECONDS_PER_FLOP + repeats * FID_REPEAT_SECONDS)


def kit_minutes(images: int, image: ImageSet | None = None) -> float:
    """reader_kit, reader_volume_kit: ``images`` written (a volume counts its voxels as slices at
    VOLUME_SECONDS_PER_VOXEL when ``image`` is a volume's size)."""
    per_image = KIT_SECONDS_PER_IMAGE if image is None else KIT_SECONDS_PER_IMAGE + image.pixels * VOLUME_SECONDS_PER_VOXEL
    return rule_minutes(images * per_image)


def report_minutes(subjects: int, runs: int) -> float:
    return rule_minutes(subjects * REPORT_SECONDS_PER_SUBJECT + runs * REPORT_SECONDS_PER_RUN)
