"""bench/rule_rss.py on a cohort of a few subjects: the synthetic files, real jobs in fresh
processes, and the table's verdicts."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import rule_rss  # noqa: E402

TINY = rule_rss.Cohort("ungria_hirte_2020", "dwi", "vae", 6, ("image",), 26, 128, "sex", ("F", "M"), 0.2)


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    monkeypatch.setitem(rule_rss.COHORTS, "tiny", TINY)
    monkeypatch.setattr(rule_rss, "WRITTEN", 64)  # the rest: one row of its own per image
    rule_rss.synthesise(tmp_path, TINY)
    return tmp_path


def test_the_synthetic_dataset_has_the_cohort_shape_and_no_two_images_alike(tiny):
    images = np.load(tiny / "images.npy", mmap_mode="r")
    table = pd.read_csv(tiny / "slices.tsv", sep="\t")
    assert images.shape == (6 * 26, 128, 128)
    assert len(table) == len(images)
    assert table.groupby("subject").size().tolist() == [26] * 6
    assert set(table.loc[table["split"] == "test", "subject"]) == {"sub-00004"}
    firsts = np.asarray(images[:, 0, :4])
    assert len(np.unique(firsts, axis=0)) == len(images)


def test_jobs_run_as_their_rules_in_fresh_processes_and_report_peak_and_request(tiny):
    rows = []
    for job in ("slice_dataset", "metrics_original"):
        result = rule_rss.measure(job, tiny, TINY, time_cap=300)
        assert result["finished"]
        assert 100 < result["peak_rss_mb"] < 4000
        rows.append({"cohort": "tiny", "job": job, "request_mb": rule_rss.request_mb(job, TINY, 1000), **result})
    assert rows[0]["rows"] == 6 * (40 - 6 - 8)  # Ungría Hirte's slicing of the 128 x 128 x 40 grid


def test_the_table_marks_peaks_over_their_request_and_stopped_jobs(monkeypatch):
    monkeypatch.setitem(rule_rss.COHORTS, "tiny", TINY)
    rows = [{"cohort": "tiny", "job": "train", "peak_rss_mb": 2500.0, "request_mb": 2000, "finished": True,
             "seconds": 3.0},
            {"cohort": "tiny", "job": "sample", "peak_rss_mb": 1500.0, "request_mb": 2000, "finished": True,
             "seconds": 3.0},
            {"cohort": "tiny", "job": "memorization", "peak_rss_mb": 900.0, "request_mb": 2000, "finished": False,
             "seconds": 1200.0}]
    lines = {line.split(" | ")[0].strip("| "): line for line in rule_rss.render(rows).splitlines()}
    assert "2,500 / 2,000 **over**" in lines["train"]
    assert "1,500 / 2,000 ok" in lines["sample"]
    assert "(stopped at 1200 s)" in lines["memorization"]
    assert "unconditional" in lines["conditioning"]
    assert "not run" in lines["domain_network"]
