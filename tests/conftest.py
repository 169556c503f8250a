"""Suite-wide settings."""

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def private_torch_home(tmp_path_factory):
    """Weights converted during tests (FID Inception) go to a scratch cache, not ~/.cache."""
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch_home"))
    yield
    if previous is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = previous


@pytest.fixture(scope="session", autouse=True)
def two_threads():
    """CI machines have 2 cores; more threads only add contention."""
    torch.set_num_threads(2)
