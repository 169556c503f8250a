"""A stacked dataset through the whole workflow: a BraTS-like stand-in (four co-registered
sequences per case), one dataset stacking them as channels, one tiny VAE, up to the report."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_workflow import REPO, snakemake

from pipeline_lib.imaging.standin import make_standin

pytestmark = pytest.mark.integration
SEQUENCES = ["t1", "t1ce", "t2", "flair"]

CONFIG = {
    "input": {"layout": "brats"},
    "privacy": {"pseudonym_salt": "channels-test-salt"},
    "on_bad_input": "skip",
    "preprocessing": {"brain_extraction": "none"},
    "registration": {"transform": "Rigid", "reference_sequence": "t1", "grid": [24, 28, 16], "on_poor_fit": "keep"},
    "datasets": {"stacked": {"channels": SEQUENCES, "selection": {"mode": "central", "n": 4}, "size": [16, 16],
                             "test_fraction": 0.25}},
    "models": {"vae4": {"family": "vae", "width": 8, "latent_dim": 8, "batch_size": 8, "budget": {"steps": 10}}},
    "sampling": {"n": 16, "n_reconstruct": 4},
    "metrics": {"n_original": 8},
    "evaluation": {"fid": {"repeats": 2}, "kid": {"n_subsets": 2, "subset_size": 8},
                   "domain": {"steps": 10, "batch_size": 16}, "conditioning": {"steps": 10, "batch_size": 16},
                   "utility": {"seeds": 1, "steps": 10, "batch_size": 16, "n_synthetic": 16},
                   "memorization": {"gallery_k": 2}},
    "reader_study": {"n_real": 2, "n_per_model": 2, "display_size": 32},
}


@pytest.fixture(scope="module")
def stacked_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("channels")
    work = root / "checkout"
    work.mkdir()
    shutil.copy(REPO / "Snakefile", work)
    for folder in ("workflow", "src", "envs", "profiles"):
        shutil.copytree(REPO / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    source = make_standin("han_2018", root / "brats", n_subjects=4, resolution_mm=4)
    config = {**CONFIG, "input": {**CONFIG["input"], "source": str(source)}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(work, "--cores", "2", "all", timeout=1800)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return work


def _finite_numbers(value, where: str) -> int:
    """How many numbers ``value`` holds; every one must be finite (None stands for not applicable)."""
    if isinstance(value, dict):
        return sum(_finite_numbers(v, f"{where}.{k}") for k, v in value.items())
    if isinstance(value, list):
        return sum(_finite_numbers(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, float):
        assert math.isfinite(value), where
        return 1
    return 0


def test_a_stacked_dataset_runs_to_the_report_with_finite_metrics(stacked_run):
    slices = stacked_run / "results/slices/stacked"
    images = np.load(slices / "images.npy")
    table = pd.read_csv(slices / "slices.tsv", sep="\t", dtype=str)
    assert images.shape == (4 * 4, 4, 16, 16)
    assert set(table["sequence"]) == {"+".join(SEQUENCES)}
    samples = np.load(stacked_run / "results/samples/vae4/seed0/samples.npy")
    assert samples.shape == (16, 4, 16, 16) and np.isfinite(samples).all()
    metrics = sorted((stacked_run / "results/metrics").rglob("*.json"))
    assert {p.name for p in metrics} >= {"seed0.json", "seed0.distribution.json", "seed0.domain.json",
                                          "seed0.diversity.json", "stacked.json", "stacked.distribution.json"}
    for path in metrics:
        assert _finite_numbers(json.loads(path.read_text()), path.name) > 0, path
    distribution = json.loads((stacked_run / "results/metrics/vae4/seed0.distribution.json").read_text())
    assert distribution["fid"]["mean"] > 0
    memorization = json.loads((stacked_run / "results/memorization/vae4/seed0.json").read_text())
    _finite_numbers(memorization, "memorization")
    summary = json.loads((stacked_run / "results/models/vae4/seed0/summary.json").read_text())
    assert summary["channels"] == 4 and summary["training_data"]["channel_names"] == SEQUENCES
    html = (stacked_run / "results/report/index.html").read_text()
    assert "Channels (stacked sequences)" in html and "Concat" in html
    kit = json.loads((stacked_run / "results/reader_study/stacked/kit_summary.json").read_text())
    assert kit["image_width"] == 4 * kit["image_height"]  # the four sequences side by side
