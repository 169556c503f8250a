"""Where a job runs (core/runtime.py): deterministic kernels on CUDA, CPU left as it was."""

from __future__ import annotations

import os

import pytest
import torch

from pipeline_lib.core.runtime import deterministic_kernels


@pytest.fixture
def restore_flags(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]


def test_cpu_runs_keep_the_default_kernels(restore_flags):
    deterministic_kernels(torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_cuda_runs_ask_for_deterministic_kernels(restore_flags):
    """The flags only (no GPU needed to set them): what a CUDA training job runs with."""
    torch.backends.cudnn.benchmark = True
    deterministic_kernels(torch.device("cuda"))
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
