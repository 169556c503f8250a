"""Slice datasets as a dimension of the workflow: two datasets built in one run, one model each,
a report that groups them, and a changed dataset that reruns only its own chain."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from test_workflow import REPO, dry_run_jobs, snakemake, summary_table

CONFIG = Path(__file__).parent / "data" / "config.datasets.yaml"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def datasets_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("datasets") / "checkout"
    work.mkdir()
    shutil.copy(REPO / "Snakefile", work)
    for folder in ("workflow", "src", "envs", "profiles"):
        shutil.copytree(REPO / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(CONFIG, work / "config.yaml")
    result = snakemake(work, "--cores", "2", "all", timeout=1800)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return work


def test_two_datasets_in_one_run_with_a_report_grouped_by_dataset(datasets_run):
    slices = datasets_run / "results/slices"
    axial, sagittal = np.load(slices / "axial32/images.npy"), np.load(slices / "sagittal16/images.npy")
    assert axial.shape[1:] == (32, 32) and sagittal.shape[1:] == (16, 16)
    a = pd.read_csv(slices / "axial32/slices.tsv", sep="\t", dtype=str)
    s = pd.read_csv(slices / "sagittal16/slices.tsv", sep="\t", dtype=str)
    assert set(a["axis"]) == {"axial"} and set(s["axis"]) == {"sagittal"}
    assert s.groupby("subject").size().eq(8).all()
    # the same subjects are test in both datasets
    assert dict(zip(a["subject"], a["split"])) == dict(zip(s["subject"], s["split"]))
    for name in ("axial32", "sagittal16"):
        for suffix in ("json", "distribution.json", "domain.json", "diversity.json"):
            assert (datasets_run / f"results/metrics/original/{name}.{suffix}").is_file()
        assert (datasets_run / f"results/reader_study/{name}/answer_key.tsv").is_file()
    key = pd.read_csv(datasets_run / "results/reader_study/sagittal16/answer_key.tsv", sep="\t", dtype=str)
    assert set(key["source"]) == {"real", "vae16"}  # the kit mixes the dataset's own model and real slices
    summary = pd.read_csv(datasets_run / "results/report/summary.tsv", sep="\t")
    assert dict(zip(summary["model"], summary["dataset"])) == {"vae32": "axial32", "vae16": "sagittal16"}
    html = (datasets_run / "results/report/index.html").read_text()
    summary_html = html.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert summary_html.count('class="dataset-block" data-dataset="axial32"') == 1
    assert summary_html.count('class="dataset-block" data-dataset="sagittal16"') == 1
    block = summary_html.split('data-dataset="sagittal16"', 1)[1]
    assert 'data-model="vae16"' in block and 'data-model="vae32"' not in block
    # ingest QC is the cohort's, shown once
    assert html.count('id="ingest-qc"') == 1


def _stale_outputs(work: Path) -> set[tuple[str, str]]:
    return {(row["rule"], row["output_file"]) for row in summary_table(work) if row["plan"] != "no update"}


def test_changing_one_datasets_setting_reruns_only_that_datasets_chain(datasets_run):
    config = yaml.safe_load(CONFIG.read_text())
    config["datasets"]["sagittal16"]["selection"]["n"] = 6
    (datasets_run / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        stale = _stale_outputs(datasets_run)
        files = {path for _, path in stale}
        assert any("slices/sagittal16/" in f for f in files)
        assert not any(re.search(r"axial32|vae32", f) for f in files), sorted(files)
        jobs = dry_run_jobs(datasets_run)
        assert jobs["slice_dataset"] == 1 and jobs["train"] == 1 and jobs["report"] == 1
        assert jobs["real_features"] == 2 and jobs["reader_kit"] == 1
    finally:
        shutil.copy(CONFIG, datasets_run / "config.yaml")
    assert dry_run_jobs(datasets_run) == {}
