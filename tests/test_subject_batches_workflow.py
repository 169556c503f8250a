"""execution.subject_batches in a real workflow run of three tiny subjects: the DAG has batch jobs
instead of per-subject ones, one subject's registration SIGKILLed (the guard's test hook) is that
subject's failed row while its batch's other subjects complete, a subject's folder holds what its
own job writes, and a changed input reruns only its batch."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest
import yaml

from pipeline_lib.core.guard import TEST_KILL_VARIABLE
from pipeline_lib.core.subject_batches import assign_batches, read_manifest
from helpers.workflow import copy_checkout, job_counts, snakemake

pytestmark = pytest.mark.integration

QC_TABLES = ("results/qc/ingest.tsv", "results/qc/registration.tsv")
PHANTOMS = ("demo-01.nii.gz", "demo-02.nii", "demo-06.nii.gz")


def _dry_run(work, *config):
    result = snakemake(work, "-n", "--cores", "2", *QC_TABLES, *config)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    return {} if "Nothing to be done" in text else job_counts(text)


def _folder_bytes(folder):
    """The folder's files and their bytes, less the marker Snakemake puts into a directory() output
    (a batch's folders are not Snakemake's outputs: the manifest is)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".snakemake_timestamp"}


@pytest.fixture(scope="module")
def batched_run(tmp_path_factory):
    work = copy_checkout(tmp_path_factory, "batches")
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["preprocessing"] = {"brain_extraction": "none"}  # as test_failures_workflow.py: registration only
    config["registration"]["on_poor_fit"] = "keep"
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    built = snakemake(work, "--cores", "1", "resources/demo/samples.tsv", timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    # three of the demo's phantoms in a sheet of their own
    (work / "cohort.tsv").write_text("subject\tpath\tformat\n" + "".join(
        f"p{i}\tresources/demo/{name}\tnifti\n" for i, name in enumerate(PHANTOMS)))
    config["input"] = {**config["input"], "source": "cohort.tsv"}
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    discovered = snakemake(work, "--cores", "1", "private/linkage.tsv", timeout=600)
    assert discovered.returncode == 0, discovered.stdout[-3000:] + discovered.stderr[-3000:]
    subjects = list(pd.read_csv(work / "results/inputs/subjects.tsv", sep="\t")["subject"])
    # the fewest batches that split the three subjects (the pseudonyms come from the test's salt)
    n_batches = next(b for b in range(2, 50) if len(assign_batches(subjects, b)) >= 2)
    batches = assign_batches(subjects, n_batches)
    shared = next((members for members in batches.values() if len(members) > 1), subjects)
    killed = shared[0]
    config["execution"] = {"subject_batches": n_batches}
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    planned = {"per_subject": _dry_run(work, "--config", "execution={'subject_batches': 0}"),
               "batched": _dry_run(work)}
    os.environ[TEST_KILL_VARIABLE] = f"register:subject={killed}@kill"
    try:
        # no retries: the first attempt is the last, so the death is recorded at once
        result = snakemake(work, "--cores", "2", "--retries", "0", *QC_TABLES, timeout=1500)
    finally:
        del os.environ[TEST_KILL_VARIABLE]
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return work, batches, killed, planned


def test_the_dag_has_a_job_per_batch_instead_of_per_subject(batched_run):
    _, batches, _, planned = batched_run
    assert planned["per_subject"] == {"ingest": 3, "register": 3, "ingest_qc": 1, "qc_tables": 1}
    assert planned["batched"] == {"ingest_batch": len(batches), "register_batch": len(batches),
                                  "ingest_qc": 1, "qc_tables": 1}


def test_a_killed_subject_is_its_failed_row_and_its_batchs_other_subjects_complete(batched_run):
    work, batches, killed, _ = batched_run
    qc = pd.read_csv(work / "results/qc/registration.tsv", sep="\t", keep_default_na=False).set_index("subject")
    assert sorted(qc.index) == sorted(s for members in batches.values() for s in members)
    assert qc.loc[killed, "status"] == "failed"
    assert qc.loc[killed, "reason"].startswith("signal 9 (SIGKILL) from outside in registration")
    others = qc.drop(index=killed)
    assert set(others["status"]) <= {"ok", "flagged"}
    batch = next(b for b, members in batches.items() if killed in members)
    manifest = read_manifest(work / f"results/batches/register/{batch}.subjects.tsv").set_index("subject")
    assert list(manifest.index) == batches[batch]
    assert manifest.loc[killed, "status"] == "failed"
    assert manifest.loc[killed, "folder"] == f"results/register/{killed}"
    assert "recorded as failed" in (work / f"logs/register_batch/{batch}.log").read_text()


def test_a_changed_input_reruns_only_its_batch_and_a_folder_is_what_its_own_job_writes(batched_run):
    work, batches, killed, _ = batched_run
    assert _dry_run(work) == {}
    subject = next(s for s in batches[next(iter(batches))])
    source = os.path.realpath(work / "private/staging" / subject / "input")
    later = time.time() + 5
    os.utime(source, (later, later))
    assert _dry_run(work) == {"ingest_batch": 1, "register_batch": 1, "ingest_qc": 1, "qc_tables": 1}
    # the subject's own ingest job (execution.subject_batches: 0) writes the same bytes
    batched = _folder_bytes(work / "results/ingest" / subject)
    own = snakemake(work, "--cores", "1", "--force", f"results/ingest/{subject}",
                    "--config", "execution={'subject_batches': 0}")
    assert own.returncode == 0, own.stdout[-3000:] + own.stderr[-3000:]
    assert _folder_bytes(work / "results/ingest" / subject) == batched
