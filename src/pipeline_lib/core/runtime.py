"""Where a job runs: device choice, threads, seeding and CPU memory behaviour.

Every stage that runs torch (training, sampling, feature extraction, the small
evaluation CNNs) takes these from here, so no stage needs the trainer to run.
"""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.jobs import glibc_mallopt

log = logging.getLogger(__name__)


def select_device(preference: str = "auto") -> torch.device:
    """CUDA when present (the scheduler restricts visibility via CUDA_VISIBLE_DEVICES), else CPU."""
    # "<none>": set empty by core.jobs for a SLURM job that was allocated no GPU.
    log.info("CUDA_VISIBLE_DEVICES=%s", os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>") or "<none>")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device '{preference}' requested but CUDA is not available")
    return device


#: glibc mallopt parameter numbers (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
#: mallopt takes an int: the largest one keeps the heap top for the whole run.
KEEP_HEAP_TOP_BYTES = 2**31 - 1


def reuse_freed_host_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse; True if the settings were applied.

    A CPU training step frees and re-allocates the same large tensors
    (gradients, activations) every iteration. By default glibc serves large
    blocks with mmap and unmaps them on free, and trims the heap top, so each
    step page-faults its tensors back in, zero-filled; how often depends on
    thresholds that glibc adapts to the process's earlier frees. Serving every
    block from the heap and never trimming it roughly doubled the plain cvae's
    steps/s at 128 px in bench/train_throughput.py (compare its plain columns
    with and without ``--plain-allocator tuned``). The cost: the process keeps
    its peak heap until it exits, which a training job does when it finishes.
    A user who set glibc's malloc variables or tunables keeps them.
    """
    mallopt = glibc_mallopt()
    if mallopt is None:
        return False
    heap_only = mallopt(M_MMAP_MAX, 0) == 1
    keep_top = mallopt(M_TRIM_THRESHOLD, KEEP_HEAP_TOP_BYTES) == 1
    return heap_only and keep_top


def deterministic_kernels(device: torch.device) -> None:
    """On CUDA, ask for deterministic kernels, so a seed gives the same run twice on one GPU.

    cuDNN's autotuner and several atomics-based CUDA kernels pick differently from run to run;
    cuBLAS needs a fixed workspace (CUBLAS_WORKSPACE_CONFIG, read when cuBLAS starts, so it is set
    before the first CUDA matrix product). An operation with no deterministic CUDA kernel warns
    (warn_only) instead of stopping the run. CPU kernels are deterministic for a thread count
    already; the flags are left alone there so CPU results stay as they were.
    """
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_threads(threads: int | None) -> None:
    """Keep torch to the cores the scheduler granted this job."""
    if threads:
        torch.set_num_threads(int(threads))
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def prepare_cpu_training() -> None:
    """Settings every CPU training job gets: no denormal floats, freed memory kept for reuse."""
    # Denormal floats made one CPU step ~30x slower in measurements here.
    torch.set_flush_denormal(True)
    if reuse_freed_host_memory():
        log.info("glibc malloc set to reuse freed memory (no mmap, no heap trimming)")
