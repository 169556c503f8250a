"""The single-node SLURM test cluster, for tests: install-if-missing, start, stop.

The shell scripts next to this file do the work (CI can call them directly); this
module decides whether this machine can run them at all and stops, at the end,
only the daemons that its own start brought up.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
#: Partitions that tests/slurm/start.sh creates; "batch" is the default partition.
CPU_PARTITION = "cpu"
GPU_PARTITION = "gpu"
#: Set to "require" (CI) to fail instead of skipping where the cluster cannot run.
REQUIRE_VARIABLE = "PIPELINE_SLURM_TESTS"


class ClusterError(RuntimeError):
    """The test cluster could not be installed, started or stopped; ``output`` is the script's."""

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output


def unavailable_reason() -> str | None:
    """Why this machine cannot host the test cluster (not root, no apt), or None if it can."""
    if os.geteuid() != 0:
        return "the local SLURM test cluster needs root (it installs Debian packages and starts daemons)"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and apt-get is not available to install it"
    return None


def required() -> bool:
    """True where the environment demands the cluster tests run (CI): never skip them."""
    return os.environ.get(REQUIRE_VARIABLE, "").lower() == "require"


def _run_script(name: str, *args: str, timeout: int) -> str:
    result = subprocess.run(["bash", str(HERE / name), *args], capture_output=True,
                            text=True, timeout=timeout)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise ClusterError(f"tests/slurm/{name} failed (exit {result.returncode}):\n{output}", output)
    return output


def _started(output: str) -> list[str]:
    return re.findall(r"started (\w+) \(pid", output)


def start() -> list[str]:
    """Install missing packages and start missing daemons; the names of those started.

    If the cluster does not come up, the daemons this call started are stopped again
    before the error is raised.
    """
    _run_script("install.sh", timeout=900)
    try:
        return _started(_run_script("start.sh", timeout=300))
    except ClusterError as error:
        if _started(error.output):
            stop(_started(error.output))
        raise


def stop(names: list[str]) -> None:
    """Stop the daemons ``names`` that start.sh recorded (all of them if ``names`` is empty)."""
    _run_script("stop.sh", *names, timeout=300)


@contextmanager
def running_cluster() -> Iterator[list[str]]:
    """A running cluster for the duration of the block; daemons started here stop after it."""
    started = start()
    try:
        yield started
    finally:
        if started:
            stop(started)
