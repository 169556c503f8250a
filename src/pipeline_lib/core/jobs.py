"""What every workflow script does first (send its logs to the rule's log file), and the paths
the workflow hands to Snakemake's records."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from pathlib import Path


def start_job(log_path: str | Path | None, threads: int | None = None) -> logging.Logger:
    """Route ``logging`` and stderr to the rule's log; limit numeric libraries to ``threads``.

    Only library messages reach the log: no tool's raw output, which may echo
    file paths or header fields.
    """
    handlers: list[logging.Handler] = []
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "w", buffering=1)
        sys.stderr = stream
        handlers.append(logging.StreamHandler(stream))
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
            os.environ[var] = str(threads)
    hide_unallocated_gpus()
    return_freed_host_memory()
    return logging.getLogger("pipeline")


#: glibc's malloc variables; a user who set one (or a glibc.malloc tunable) keeps them.
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_MAX_", "MALLOC_TOP_PAD_")
#: glibc mallopt parameter number (malloc.h) and the threshold jobs fix it at.
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 2**20


def malloc_is_the_users() -> bool:
    return any(name in os.environ for name in MALLOC_ENV) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")


def return_freed_host_memory() -> bool:
    """Fix glibc's mmap threshold at 1 MB, so that every large block (a batch of images, a layer's
    activations) is mapped on its own and given back when freed; True if applied.

    By default glibc raises the threshold to the size of each mapped block freed, after which
    blocks of that size come from the heap, where the freed ones stay part of the process: an
    evaluation job's resident set then grew with the number of batches it read (the domain network
    at 2,029 subjects: 1,971 MB with the default, 1,168 MB fixed; bench/rule_rss.py). Training
    then chooses speed instead (core.runtime.reuse_freed_host_memory), as its memory is flat per step.
    """
    mallopt = glibc_mallopt()
    return mallopt is not None and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1


def glibc_mallopt():
    """glibc's ``mallopt``, or None where the user set malloc's variables (they keep them) or the
    C library is not glibc (macOS, musl: a different allocator)."""
    if malloc_is_the_users():
        return None
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


#: What SLURM sets in a job that was allocated GPUs (gres/gpu, --gpus).
SLURM_GPU_VARIABLES = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE", "CUDA_VISIBLE_DEVICES")


def hide_unallocated_gpus(environ: dict[str, str] | None = None) -> bool:
    """In a SLURM job that was given no GPU, hide the node's GPUs from CUDA; True if hidden.

    On nodes that do not confine devices to their jobs (cgroup ConstrainDevices off), a job
    without a GPU request still sees every GPU, and ``device: auto`` would take one that another
    job was allocated. SLURM marks a job's GPUs in the variables above; a job with none of them
    gets ``CUDA_VISIBLE_DEVICES`` set to the empty string before torch first asks for CUDA, so
    CUDA reports no device. Outside SLURM (a workstation) nothing changes.
    """
    env = os.environ if environ is None else environ
    if "SLURM_JOB_ID" not in env or any(name in env for name in SLURM_GPU_VARIABLES):
        return False
    env["CUDA_VISIBLE_DEVICES"] = ""
    return True


def export_library_path(library: str) -> None:
    """Put ``library`` first on PYTHONPATH so every job (script or cluster job) imports it."""
    current = os.environ.get("PYTHONPATH", "")
    if library not in current.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [library, current]))



def is_within(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both made absolute, links not resolved)."""
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return os.path.commonpath([path, folder]) == folder


def portable_path(path: str | Path, workdir: str | Path, checkout: str | Path) -> str:
    """``path`` (a file of the checkout) as the workflow records it in a rule's input or params:
    relative to ``workdir`` when the checkout and the working directory are nested (the usual
    run, inside the checkout), so that a finished run copied or moved elsewhere keeps its records
    and reruns nothing; absolute when they lie apart, where moving the run folder alone is the
    likely move."""
    if is_within(workdir, checkout) or is_within(checkout, workdir):
        return os.path.relpath(os.path.abspath(path), os.path.abspath(workdir))
    return os.path.abspath(path)
