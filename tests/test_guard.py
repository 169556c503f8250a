"""The job guard (core/guard.py): real child processes killed, crashed, over memory and over time."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline_lib.core import guard
from pipeline_lib.core.guard import (JobLimits, first_failure, guard_job, read_failure, run_guarded,
                                     write_failed_records, write_failed_subject)
from pipeline_lib.core.qc import collect_status_table


def test_work_that_succeeds_writes_its_output_in_the_child(tmp_path):
    out = tmp_path / "out.txt"
    outcome = run_guarded(lambda: out.write_text("done"), stage="testing")
    assert outcome.ok
    assert outcome.reason == ""
    assert out.read_text() == "done"


def test_a_child_sigkilled_from_outside_is_named_and_the_parent_survives():
    outcome = run_guarded(lambda: os.kill(os.getpid(), signal.SIGKILL), stage="registration")
    assert not outcome.ok
    assert outcome.hard
    assert outcome.reason.startswith("signal 9 (SIGKILL) from outside in registration"), outcome.reason


def test_a_segfault_in_native_code_is_named():
    # a real null-pointer read in C, as a crash inside ANTs would be
    outcome = run_guarded(lambda: ctypes.string_at(0), stage="registration")
    assert outcome.hard
    assert outcome.reason == "signal 11 (SIGSEGV) in registration"


def test_a_child_over_its_memory_limit_is_stopped_by_the_guard():
    held = []

    def allocate():
        # up to 2 GB, 20 MB at a time, every page written; slower than the guard's polls (it reads
        # the tree's memory every `poll` s, so a faster allocation can overshoot on a busy machine:
        # seen 1.0 GB against 0.15 GB at 1 GB/s under load; past the guard, the cgroup limit kills)
        for _ in range(100):
            held.append(b"\x01" * 20_000_000)
            time.sleep(0.1)

    limit = 150_000_000
    outcome = run_guarded(allocate, stage="training", memory_bytes=limit, poll=0.05)
    assert outcome.hard
    assert outcome.reason.startswith("killed: out of memory at "), outcome.reason
    assert "in training" in outcome.reason, outcome.reason
    assert limit < outcome.peak_bytes < 10 * limit


def test_a_child_over_its_time_limit_is_stopped():
    started = time.monotonic()
    outcome = run_guarded(lambda: time.sleep(60), stage="training", seconds=1.0)
    assert outcome.hard
    assert outcome.reason == "time limit 1 s reached in training"
    assert time.monotonic() - started < 15


def test_a_child_ignoring_sigterm_at_its_time_limit_is_sigkilled():
    def stubborn():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)

    started = time.monotonic()
    outcome = run_guarded(stubborn, stage="training", seconds=0.5)
    assert outcome.hard
    assert "time limit" in outcome.reason
    assert time.monotonic() - started < 15


def test_a_python_error_is_reported_by_type_and_is_not_hard():
    def broken():
        raise ValueError("no such thing")

    outcome = run_guarded(broken, stage="metrics")
    assert not outcome.ok
    assert not outcome.hard
    assert outcome.reason == "ValueError in metrics (see the job's log)"


def test_the_guard_imports_neither_numpy_nor_torch():
    code = ("import sys, pipeline_lib.core.guard; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'pandas', 'torch')))")
    src = str(Path(guard.__file__).parents[2])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": src})
    assert result.stdout.strip() == "[]"


def test_limits_come_from_the_jobs_resources_and_time_only_in_a_batch_job():
    resources = {"mem_mb": 4000, "runtime": 30, "attempt": "2/3"}
    local = JobLimits.of(resources, environ={})
    assert local.memory_bytes == int(4000e6 * guard.MEMORY_FRACTION)
    assert local.seconds is None
    assert (local.attempt, local.attempts, local.last_attempt) == (2, 3, False)
    # squeue does not know job 7 here: the rule's runtime
    batch = JobLimits.of(resources, environ={"SLURM_JOB_ID": "7"})
    assert batch.seconds == 30 * 60 - guard.TIME_MARGIN_SECONDS
    # the allocation's end, where SLURM says it, wins (a group job's later member has less left)
    ending = JobLimits.of(resources, environ={"SLURM_JOB_ID": "7", "SLURM_JOB_END_TIME": str(time.time() + 600)})
    assert 600 - 60 - 5 < ending.seconds <= 600 - 60
    assert JobLimits.of({}, environ={}) == JobLimits(None, None, 1, 1)


def test_the_attempt_resource_carries_the_configured_retries(monkeypatch):
    monkeypatch.setenv(guard.RETRIES_VARIABLE, "2")
    assert guard.attempt_resource(1) == "1/3"
    monkeypatch.delenv(guard.RETRIES_VARIABLE)
    assert guard.attempt_resource(1) == "1/1"


def _job(tmp_path, attempt: str, rule="register", **wildcards):
    return SimpleNamespace(resources={"attempt": attempt}, rule=rule, wildcards=wildcards or {"subject": "s1"})


def test_a_hard_death_before_the_last_attempt_fails_the_job_so_snakemake_retries(tmp_path):
    written = []
    with pytest.raises(SystemExit):
        guard_job(_job(tmp_path, "1/3"), lambda: os.kill(os.getpid(), signal.SIGKILL), stage="registration",
                  write_failure=written.append)
    assert written == []


def test_a_hard_death_on_the_last_attempt_is_recorded_and_the_job_succeeds(tmp_path):
    out = tmp_path / "register" / "s1"
    out.mkdir(parents=True)
    (out / "partial.nii.gz").write_text("half")  # what a killed attempt left behind
    outcome = guard_job(_job(tmp_path, "3/3"), lambda: os.kill(os.getpid(), signal.SIGSEGV),
                        stage="registration",
                        write_failure=lambda reason: write_failed_subject(out, "s1", "register", reason, "NIfTI file"))
    assert outcome.hard
    assert sorted(p.name for p in out.iterdir()) == ["status.json"]
    table = collect_status_table([out])
    assert table.loc[0, "status"] == "failed"
    assert table.loc[0, "reason"] == "signal 11 (SIGSEGV) in registration"


def test_a_python_error_on_the_last_attempt_fails_the_job_unless_errors_are_recorded(tmp_path):
    def broken():
        raise RuntimeError("bug")

    with pytest.raises(SystemExit):
        guard_job(_job(tmp_path, "1/1"), broken, stage="registration", write_failure=lambda r: None)
    written = []
    guard_job(_job(tmp_path, "1/1", rule="train", model="vae", seed="0"), broken, stage="training",
              write_failure=written.append, record_errors=True)
    assert written == ["RuntimeError in training (see the job's log)"]


def test_the_test_hook_kills_only_the_matching_job(monkeypatch, tmp_path):
    monkeypatch.setenv(guard.TEST_KILL_VARIABLE, "train:model=dcgan,*@kill;register:subject=s9@segfault")
    ran = tmp_path / "ran"
    written = []
    guard_job(_job(tmp_path, "1/1", rule="train", model="dcgan", seed="0"), lambda: ran.write_text("x"),
              stage="training", write_failure=written.append)
    assert not ran.exists()
    assert written[0].startswith("signal 9 (SIGKILL)")
    guard_job(_job(tmp_path, "1/1", rule="train", model="vae", seed="0"), lambda: ran.write_text("x"),
              stage="training", write_failure=written.append)
    assert ran.exists()
    assert len(written) == 1
    guard_job(_job(tmp_path, "1/1", subject="s9"), lambda: None, stage="registration", write_failure=written.append)
    assert written[1] == "signal 11 (SIGSEGV) in registration"


def test_failed_records_replace_every_output_and_are_recognised(tmp_path):
    real = tmp_path / "real.npy"
    np.save(real, np.zeros(3))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"status": "failed", "stage": "x"}, indent=2, sort_keys=True))  # a real JSON
    outputs = [tmp_path / "run" / "samples.npy", tmp_path / "run" / "grid.png"]
    record = guard.failure_record("train", "signal 9 (SIGKILL) from outside in training", run="vae/seed0")
    write_failed_records(outputs, record)
    assert [read_failure(p) for p in outputs] == [record, record]
    assert read_failure(real) is None
    assert read_failure(metrics) is None
    assert read_failure(tmp_path) is None
    assert first_failure([real, outputs[1]]) == record
    assert first_failure([real]) is None
    assert not list((tmp_path / "run").glob(".*tmp"))


def _dataset_job(tmp_path, attempt: str, rule: str, inputs: list, outputs: list, dataset="t1"):
    return SimpleNamespace(resources={"attempt": attempt}, rule=rule, wildcards={"dataset": dataset},
                           input=[str(p) for p in inputs], output=[str(p) for p in outputs])


def test_a_dataset_job_killed_on_its_last_attempt_fills_every_output_with_a_record_naming_the_dataset(tmp_path):
    table = tmp_path / "subjects.tsv"
    table.write_text("subject\n")
    outputs = [tmp_path / "slices" / "images.npy", tmp_path / "slices" / "slices.tsv"]
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "001.png").write_text("half")  # what a killed attempt left in an output folder
    job = _dataset_job(tmp_path, "2/2", "slice_dataset", [table], [*outputs, kit])
    guard.guard_dataset_job(job, lambda: os.kill(os.getpid(), signal.SIGKILL), stage="slicing", folders=[str(kit)])
    record = read_failure(outputs[0])
    assert record["stage"] == "slice_dataset"
    assert record["dataset"] == "t1"
    assert record["reason"].startswith("signal 9 (SIGKILL) from outside in slicing")
    assert read_failure(outputs[1]) == record
    assert sorted(p.name for p in kit.iterdir()) == ["failed.json"]
    assert read_failure(kit) == record


def test_a_dataset_job_killed_before_its_last_attempt_fails_so_snakemake_retries(tmp_path):
    out = tmp_path / "network.json"
    with pytest.raises(SystemExit):
        guard.guard_dataset_job(_dataset_job(tmp_path, "1/2", "domain_network", [], [out]),
                                lambda: os.kill(os.getpid(), signal.SIGKILL), stage="the domain network")
    assert not out.exists()


def test_jobs_after_a_failed_dataset_pass_its_record_on_without_working(tmp_path):
    images = tmp_path / "images.npy"
    record = guard.failure_record("slice_dataset", "signal 9 (SIGKILL) from outside in slicing", dataset="t1")
    write_failed_records([images], record)
    ran = tmp_path / "ran"
    features = tmp_path / "train.npz"
    guard.guard_dataset_job(_dataset_job(tmp_path, "1/2", "real_features", [images], [features]),
                            lambda: ran.write_text("x"), stage="Inception features")
    assert read_failure(features) == record
    # a model of the dataset: training passes the dataset's record on, naming the dataset
    weights = tmp_path / "weights.pt"
    job = SimpleNamespace(resources={"attempt": "1/2"}, rule="train", wildcards=SimpleNamespace(model="vae", seed="0"),
                          input=[str(images)], output=[str(weights)])
    guard.guard_run_job(job, lambda: ran.write_text("x"), stage="training")
    assert read_failure(weights) == record
    assert not ran.exists()


def test_a_reader_kit_fails_only_with_its_dataset_not_with_a_failed_run(tmp_path):
    images, samples = tmp_path / "images.npy", tmp_path / "samples.npy"
    np.save(images, np.zeros((2, 4, 4), dtype=np.float32))
    write_failed_records([samples], guard.failure_record("train", "time limit 60 min", run="vae/seed0"))
    summary = tmp_path / "kit_summary.json"
    job = _dataset_job(tmp_path, "1/1", "reader_kit", [images, samples], [summary])
    guard.guard_dataset_job(job, lambda: summary.write_text("{}"), stage="the reader-study kit", upstream=[images])
    assert summary.read_text() == "{}"
