"""Suite-wide settings and fixtures."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from helpers.threads import single_torch_thread

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHROMIUM_INSTALL_HINT = "apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver"


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
def torch_threads():
    """CI machines have 2 cores; more threads only add contention. Under pytest-xdist the workers
    share the cores (two one-thread processes beat two two-thread ones on 2 cores, see Makefile)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // workers)))


@pytest.fixture
def one_thread():
    """A test on one torch thread (seeded results repeat only at a fixed thread count); a file
    opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    with single_torch_thread():
        yield


@pytest.fixture
def one_thread_no_denormals():
    """`one_thread` with denormals flushed, as the trainer runs on CPU."""
    with single_torch_thread(flush_denormal=True):
        yield


# `make test` hands whole files to its two workers in this order: the SLURM test first (it mostly
# waits on the scheduler, so it overlaps the busiest run), then the slowest files, slowest first (a
# long file started last would run alone at the end).
SLOWEST_FILES = ("test_slurm.py", "test_workflow.py", "test_presets.py", "test_privacy.py", "test_layout_workflow.py",
                 "test_failures_workflow.py", "test_training.py", "test_registration_ground_truth.py",
                 "test_registration.py", "test_reruns.py", "test_relocation.py")


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


# ---- evaluation (domain features, memorization audit, utility) -------------------------------


def _evaluation_slice_image(size: int, position: float, bright: float, shift: tuple[float, float],
                            rng):
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = size / 2 + shift[0], size / 2 + shift[1]
    radius = size * (0.12 + 0.28 * position)  # grows from the bottom slice to the top one
    disk = ((yy - cy) ** 2 + (xx - cx) ** 2) <= radius ** 2
    image = 0.05 + bright * disk + rng.normal(0.0, 0.05, (size, size))
    return np.clip(image, 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="session")
def evaluation_slices():
    """Factory of a labelled toy slice dataset: (images (N, S, S), table like slices.tsv).

    A bright disk whose radius grows with the slice position and whose
    brightness depends on the 'scanner' (A dim, B bright); every subject has
    its own small shift, every image its own noise. ``random_positions`` draws
    each slice's index at random (independent images) instead of 0..n-1.
    """
    import numpy as np
    import pandas as pd

    def make(n_subjects: int = 16, slices_per_subject: int = 10, size: int = 32, seed: int = 0,
             test_fraction: float = 0.25, random_positions: bool = False, max_index: int = 19):
        rng = np.random.default_rng(seed)
        images, rows = [], []
        n_test = max(1, round(test_fraction * n_subjects))
        for s in range(n_subjects):
            scanner = "scanner-A" if s % 2 == 0 else "scanner-B"
            shift = tuple(rng.uniform(-2, 2, 2))
            for k in range(slices_per_subject):
                index = int(rng.integers(0, max_index + 1)) if random_positions else k
                top = max_index if random_positions else slices_per_subject - 1
                bright = 0.4 if scanner == "scanner-A" else 0.8
                images.append(_evaluation_slice_image(size, index / top, bright, shift, rng))
                rows.append({"row": len(rows), "subject": f"sub-{s:010x}", "slice_index": index,
                             "split": "test" if s >= n_subjects - n_test else "train", "scanner": scanner})
        return np.stack(images), pd.DataFrame(rows)

    return make


# ---- a real browser (the reader page, the report) ---------------------------------------------


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not Path(path).is_file():
        pytest.fail(f"Chromium is not installed; the browser tests need it. Install it with: {CHROMIUM_INSTALL_HINT}")
    return path


@pytest.fixture(scope="module")
def browser_context():
    """Debian's headless Chromium driven by Playwright's bundled driver (no browser download);
    a 1000 x 800 viewport. Missing Chromium or Playwright is a failure, not a skip."""
    chromium = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("The Python package playwright is missing: pip install playwright==1.65.2 "
                    "(do not run `playwright install`; the tests drive the system Chromium)")
    profile = tempfile.mkdtemp(prefix="test-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium, headless=True, args=CHROMIUM_FLAGS, accept_downloads=True,
            viewport={"width": 1000, "height": 800})
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
