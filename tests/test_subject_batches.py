"""Subjects in batches (core/subject_batches.py and core/guard.guard_subject_batch): which batch a
subject is in, the manifests later rules read, and one subject's death costing only that subject."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.guard import guard_subject_batch
from pipeline_lib.core.qc import collect_status_table, outputs_with_status
from pipeline_lib.core.subject_batches import (assign_batches, batch_of, read_manifest, subject_folders,
                                               write_manifest)

SUBJECTS = [f"sub-{i:010x}" for i in range(0, 40_000, 37)]


def test_a_subjects_batch_depends_on_its_pseudonym_and_the_batch_count_only():
    batches = assign_batches(SUBJECTS, 20)
    assert sorted(s for members in batches.values() for s in members) == sorted(SUBJECTS)
    # adding subjects moves none of the others: only the batches that get a new subject change
    grown = assign_batches(SUBJECTS + ["sub-ffffffff01", "sub-ffffffff02"], 20)
    changed = [batch for batch in grown if grown[batch] != batches.get(batch)]
    assert 1 <= len(changed) <= 2
    assert all(set(batches[b]) <= set(grown[b]) for b in batches)
    # names sort as numbers; sizes scatter around N / B (binomial), none empty at this size
    assert list(batches) == sorted(batches)
    assert set(batches) <= {f"b{i:02d}" for i in range(20)}
    sizes = [len(members) for members in batches.values()]
    assert len(SUBJECTS) / 20 * 0.6 < min(sizes) <= max(sizes) < len(SUBJECTS) / 20 * 1.4
    assert batch_of("sub-0000000001", 1) == "b0"
    with pytest.raises(InputError, match="subject_batches"):
        batch_of("sub-0000000001", 0)


def _subject_folder(root: Path, subject: str, status: str) -> str:
    folder = root / "results/register" / subject
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"subject": subject, "status": status, "stage": "register",
                                                    "kind": "", "reason": "", "warning": ""}))
    return str(folder)


def test_readers_get_the_manifests_folders_in_the_order_of_per_subject_inputs(tmp_path):
    folders = {s: _subject_folder(tmp_path, s, "ok" if i % 3 else "failed") for i, s in enumerate(SUBJECTS[:9])}
    manifests = []
    for batch, members in assign_batches(folders, 3).items():
        manifests.append(tmp_path / f"{batch}.subjects.tsv")
        write_manifest(manifests[-1], [{"subject": s, "folder": folders[s], "status": "x"} for s in members])
    per_subject = [folders[s] for s in sorted(folders)]
    assert subject_folders(manifests) == per_subject
    assert subject_folders(per_subject) == per_subject  # without batches: untouched
    assert collect_status_table(manifests).equals(collect_status_table(per_subject))
    assert outputs_with_status(manifests, "qc.json", ("ok",)) == outputs_with_status(per_subject, "qc.json", ("ok",))
    (tmp_path / "bad.subjects.tsv").write_text("subject\n")
    with pytest.raises(InputError, match="bad.subjects.tsv: not a subject batch manifest"):
        read_manifest(tmp_path / "bad.subjects.tsv")


def _batch_job(attempt: str):
    return SimpleNamespace(resources={"attempt": attempt, "mem_mb": 2000}, rule="register_batch",
                           wildcards={"batch": "b0"})


def _work(root: Path, dying: str, how=signal.SIGKILL):
    def work(subject):
        if subject == dying:
            os.kill(os.getpid(), how)
        _subject_folder(root, subject, "ok")

    return work


def test_one_subject_killed_on_the_last_attempt_is_its_failed_row_and_the_batch_completes(tmp_path):
    subjects = SUBJECTS[:3]
    stale = tmp_path / "results/register" / subjects[2]
    stale.mkdir(parents=True)
    (stale / "registered.nii.gz").write_text("from an earlier run")
    rows = guard_subject_batch(_batch_job("2/2"), subjects, _work(tmp_path, subjects[1], signal.SIGSEGV),
                               stage="registration", out_dir=lambda s: str(tmp_path / "results/register" / s),
                               kind=lambda s: "NIfTI file")
    assert [row["status"] for row in rows] == ["ok", "failed", "ok"]
    table = collect_status_table([row["folder"] for row in rows]).set_index("subject")
    # the record its own register job would have written
    assert table.loc[subjects[1], "reason"] == "signal 11 (SIGSEGV) in registration"
    assert table.loc[subjects[1], "stage"] == "register"
    assert table.loc[subjects[1], "kind"] == "NIfTI file"
    assert not (stale / "registered.nii.gz").exists()


def test_before_the_last_attempt_the_batch_fails_after_its_other_subjects(tmp_path, capsys):
    subjects = SUBJECTS[:3]
    with pytest.raises(SystemExit):
        guard_subject_batch(_batch_job("1/2"), subjects, _work(tmp_path, subjects[0]), stage="registration",
                            out_dir=lambda s: str(tmp_path / "results/register" / s))
    assert [(tmp_path / "results/register" / s / "status.json").exists() for s in subjects] == [False, True, True]
    assert "1 of 3 subject(s) of this batch did not finish; Snakemake retries the batch" in capsys.readouterr().err


def test_the_test_hook_names_the_subject_as_its_own_job_would(monkeypatch, tmp_path):
    subjects = SUBJECTS[:2]
    monkeypatch.setenv("PIPELINE_TEST_KILL_JOBS", f"register:subject={subjects[1]}@kill")
    rows = guard_subject_batch(_batch_job("1/1"), subjects, _work(tmp_path, dying=""), stage="registration",
                               out_dir=lambda s: str(tmp_path / "results/register" / s))
    assert [row["status"] for row in rows] == ["ok", "failed"]


def test_in_a_slurm_job_a_hanging_subject_is_stopped_at_its_share_of_the_runtime(monkeypatch, tmp_path):
    import time

    subjects = SUBJECTS[:3]
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(time.time() + 3600))

    def work(subject):
        if subject == subjects[0]:
            time.sleep(120)
        _subject_folder(tmp_path, subject, "ok")

    job = SimpleNamespace(resources={"attempt": "1/1", "mem_mb": 2000, "runtime": 0.3}, rule="register_batch",
                          wildcards={"batch": "b0"})
    started = time.monotonic()
    rows = guard_subject_batch(job, subjects, work, stage="registration",
                               out_dir=lambda s: str(tmp_path / "results/register" / s))
    assert time.monotonic() - started < 60
    assert [row["status"] for row in rows] == ["failed", "ok", "ok"]
    reason = collect_status_table([rows[0]["folder"]]).loc[0, "reason"]
    assert reason == "time limit 6 s reached in registration"
