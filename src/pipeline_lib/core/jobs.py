"""What every workflow script does first (send its logs to the rule's log file), and the paths
the workflow hands to Snakemake's records."""

from __future__ import annotations

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
    return logging.getLogger("pipeline")


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
