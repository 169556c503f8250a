"""Job start-up (core/jobs.py): a SLURM job without a GPU allocation never sees a GPU."""

from __future__ import annotations

import pytest

from pipeline_lib.core.jobs import hide_unallocated_gpus


@pytest.mark.parametrize("allocation", ["SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE",
                                        "CUDA_VISIBLE_DEVICES"])
def test_a_slurm_job_with_gpus_keeps_them(allocation):
    env = {"SLURM_JOB_ID": "17", allocation: "0"}
    assert hide_unallocated_gpus(env) is False
    assert env == {"SLURM_JOB_ID": "17", allocation: "0"}


def test_a_slurm_job_without_gpus_sees_none():
    """A node that does not confine devices shows every GPU to every job: hide them."""
    env = {"SLURM_JOB_ID": "17"}
    assert hide_unallocated_gpus(env) is True
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_outside_slurm_nothing_changes():
    env = {"HOME": "/root"}
    assert hide_unallocated_gpus(env) is False
    assert env == {"HOME": "/root"}


def test_an_empty_device_list_means_no_cuda_device(tmp_path):
    """What hiding does to torch: CUDA_VISIBLE_DEVICES="" leaves CUDA no device (checked in a fresh
    process, since CUDA reads the variable once)."""
    import subprocess
    import sys

    probe = "import torch; print(torch.cuda.device_count())"
    out = subprocess.run([sys.executable, "-c", probe], env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"
