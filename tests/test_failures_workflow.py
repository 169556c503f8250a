"""Failures are rows, not stalls: a real workflow run in which one subject's registration and one
model's training are SIGKILLed on every attempt (the guard's test hook, core/guard.py) still
reaches the report, with the subject failed in the QC table and the run failed in the report; and
one in which a whole dataset's slicing is SIGKILLed on every attempt reports the other dataset, with
the killed dataset's runs listed as failed."""

from __future__ import annotations

import os
import re

import pandas as pd
import pytest
import yaml

from pipeline_lib.core.guard import TEST_KILL_VARIABLE, read_failure
from helpers.workflow import copy_checkout, small_evaluation, snakemake

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    work = copy_checkout(tmp_path_factory, "failures")
    config = yaml.safe_load((work / "config.yaml").read_text())
    # two small models: the killed one and one that reports
    config["models"] = {name: config["models"][name] for name in ("vae", "dcgan")}
    # as in the SLURM test: no brain extraction (test_workflow.py runs it), flagged subjects kept
    config["preprocessing"] = {"brain_extraction": "none"}
    config["registration"]["on_poor_fit"] = "keep"
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    discovered = snakemake(work, "--cores", "2", "private/linkage.tsv", timeout=600)
    assert discovered.returncode == 0, discovered.stdout[-3000:] + discovered.stderr[-3000:]
    linkage = pd.read_csv(work / "private/linkage.tsv", sep="\t")
    subject = linkage[linkage["path"].astype(str).str.contains("demo-01")]["subject"].iloc[0]
    os.environ[TEST_KILL_VARIABLE] = f"register:subject={subject}@kill;train:model=dcgan,*@kill"
    try:
        # --retries 1: the first attempt's death fails the job, the second (last) one is recorded
        result = snakemake(work, "--cores", "2", "--retries", "1", "all", timeout=1800)
    finally:
        del os.environ[TEST_KILL_VARIABLE]
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return work, subject, result.stdout + result.stderr


def test_a_registration_killed_on_every_attempt_is_a_failed_row_and_the_cohort_goes_on(killed_run):
    work, subject, output = killed_run
    qc = pd.read_csv(work / "results/qc/registration.tsv", sep="\t", keep_default_na=False).set_index("subject")
    assert qc.loc[subject, "status"] == "failed"
    assert qc.loc[subject, "reason"].startswith("signal 9 (SIGKILL) from outside in registration")
    # the other subjects went on: three phantoms and the wrong-geometry one (ok or flagged, kept)
    usable = qc[qc["status"].isin(["ok", "flagged"])]
    assert len(usable) == 4
    slices = pd.read_csv(work / "results/slices/default/slices.tsv", sep="\t")
    assert set(slices["subject"]) == set(usable.index)
    # the first attempt failed and was retried; the second, the last, recorded the death
    assert "Trying to restart job" in output
    log = (work / f"logs/register/{subject}.log").read_text()
    assert "guard: attempt 2 of 2: signal 9 (SIGKILL)" in log
    assert "recorded as failed" in log
    html = (work / "results/report/index.html").read_text()
    table = re.search(r'<table id="registration-qc">.*?</table>', html, re.S).group(0)
    row = re.search(rf'<tr class="failed">.*?{subject}.*?</tr>', table, re.S).group(0)
    assert "signal 9 (SIGKILL)" in row


def test_a_training_run_killed_on_every_attempt_is_reported_as_failed_beside_the_others(killed_run):
    work, _, _ = killed_run
    summary = work / "results/models/dcgan/seed0/summary.json"
    record = read_failure(summary)
    assert record is not None
    assert record["stage"] == "train"
    assert record["reason"].startswith("signal 9 (SIGKILL) from outside in training")
    # every downstream output of the run is a failed record naming where it failed
    for path in ("results/samples/dcgan/seed0/samples.npy", "results/metrics/dcgan/seed0.json",
                 "results/metrics/dcgan/seed0.distribution.json", "results/memorization/dcgan/seed0.png"):
        assert read_failure(work / path) == record, path
    html = (work / "results/report/index.html").read_text()
    failed = re.search(r'<table id="failed-runs-table">.*?</table>', html, re.S).group(0)
    assert "dcgan" in failed
    assert "signal 9 (SIGKILL)" in failed
    assert "vae" not in failed
    table = pd.read_csv(work / "results/report/summary.tsv", sep="\t").set_index("model")
    assert table.loc["vae", "runs"] == 1
    assert pd.notna(table.loc["vae", "fid_mean"])
    assert table.loc["dcgan", "runs"] == 0
    assert table.loc["dcgan", "failed"].startswith("train: signal 9")
    kit = yaml.safe_load((work / "results/reader_study/default/kit_summary.json").read_text())
    assert "dcgan" not in str(kit)
    assert "vae" in str(kit)


#: Two tiny datasets of the same slices (a central 6 per volume at 16 px), one model each.
TINY_DATASET = {"selection": {"mode": "central", "n": 6}, "size": [16, 16], "test_fraction": 0.25}
TINY_VAE = {"family": "vae", "width": 8, "latent_dim": 8, "batch_size": 8, "budget": {"steps": 6},
            "checkpoint_every": 3}


@pytest.fixture(scope="module")
def killed_dataset_run(tmp_path_factory):
    work = copy_checkout(tmp_path_factory, "failed_dataset")
    config = yaml.safe_load((work / "config.yaml").read_text())
    config.pop("slicing")
    config["datasets"] = {"kept": TINY_DATASET, "killed": TINY_DATASET}
    config["models"] = {"vae_kept": {**TINY_VAE, "dataset": "kept"}, "vae_killed": {**TINY_VAE, "dataset": "killed"}}
    config["preprocessing"] = {"brain_extraction": "none"}
    config["registration"]["on_poor_fit"] = "keep"
    small_evaluation(config)
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    os.environ[TEST_KILL_VARIABLE] = "slice_dataset:dataset=killed@kill"
    try:
        result = snakemake(work, "--cores", "2", "--retries", "1", "all", timeout=1800)
    finally:
        del os.environ[TEST_KILL_VARIABLE]
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return work


def test_a_slicing_killed_on_every_attempt_fails_its_dataset_and_the_report_comes(killed_dataset_run):
    work = killed_dataset_run
    record = read_failure(work / "results/slices/killed/images.npy")
    assert record is not None
    assert record["stage"] == "slice_dataset"
    assert record["dataset"] == "killed"
    assert record["reason"].startswith("signal 9 (SIGKILL) from outside in slicing")
    assert "guard: attempt 2 of 2: signal 9 (SIGKILL)" in (work / "logs/slice_dataset/killed.log").read_text()
    assert read_failure(work / "results/slices/kept/images.npy") is None
    # the dataset's own later jobs and every job of its model pass the record on without working
    for path in ("results/features/inception/real/killed/train.npz", "results/metrics/original/killed.json",
                 "results/domain/killed/network.json", "results/models/vae_killed/seed0/summary.json",
                 "results/samples/vae_killed/seed0/samples.npy", "results/metrics/vae_killed/seed0.distribution.json",
                 "results/reader_study/killed/kit_summary.json"):
        assert read_failure(work / path) == record, path
    assert "slice_dataset failed for this run" in (work / "logs/train/vae_killed/seed0.log").read_text()


def test_the_failed_datasets_runs_are_listed_and_the_other_dataset_is_reported(killed_dataset_run):
    work = killed_dataset_run
    html = (work / "results/report/index.html").read_text()
    failed = re.search(r'<table id="failed-runs-table">.*?</table>', html, re.S).group(0)
    assert "vae_killed" in failed
    assert "slice_dataset (dataset killed)" in failed
    assert "vae_kept" not in failed
    datasets = re.search(r'<table id="failed-datasets-table">.*?</table>', html, re.S).group(0)
    assert "killed" in datasets
    assert "signal 9 (SIGKILL)" in datasets
    table = pd.read_csv(work / "results/report/summary.tsv", sep="\t").set_index("model")
    assert table.loc["vae_kept", "runs"] == 1
    assert pd.notna(table.loc["vae_kept", "fid_mean"])
    assert table.loc["vae_killed", "runs"] == 0
    assert table.loc["vae_killed", "failed"].startswith("slice_dataset (dataset killed): signal 9")
