"""A job's real work in a child process that cannot take the job down without a trace.

A job killed from outside (the cluster's cgroup out-of-memory killer, its time limit, a lost node)
or by a crash in a native library (a segfault in ANTs) writes nothing: Snakemake retries it and,
after the last attempt, every rule downstream (QC tables, slicing, the report) waits for it
forever. :func:`run_guarded` forks a child for the work and watches it from a parent that stays
tiny (standard library only; no numpy, no torch), so that

* the child's memory (PSS of its process tree, read from ``/proc``) stays below a fraction of the
  job's request: the guard kills it first and knows why ("killed: out of memory at 3.9 GB");
* its time stays below the job's limit (minus a margin to write the record);
* a death by signal is named ("signal 11 (SIGSEGV) in registration"); a SIGKILL that the guard did
  not send is checked against the cgroup's ``oom_kill`` count.

:func:`guard_job` adapts it to a Snakemake job: an attempt that is not the last fails (Snakemake
retries it, with more time); the last attempt records the failure in the job's declared outputs
(``write_failure``) and succeeds, so the cohort and the report go on without that subject, run
or dataset (:func:`guard_subject_job`, :func:`guard_run_job`, :func:`guard_dataset_job`).

The attempt travels as the resource ``attempt`` ("2/3", :func:`attempt_resource`): a cluster job
runs a Snakemake of its own started with ``--retries 0``, so the configured retries reach it in the
environment (:data:`RETRIES_VARIABLE`, set by the main process; sbatch exports the environment).

Test hook (inert unless set): :data:`TEST_KILL_VARIABLE` holds ``;``-separated patterns
``<job label>@<action>`` (fnmatch; action ``kill`` or ``segfault``); a child whose job label
(``rule:wildcard=value,...``) matches kills itself that way before working.
"""

from __future__ import annotations

import ctypes
import fnmatch
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

RETRIES_VARIABLE = "PIPELINE_JOB_RETRIES"
TEST_KILL_VARIABLE = "PIPELINE_TEST_KILL_JOBS"
#: The child is stopped at this fraction of the job's memory request: the rest is the parent's,
#: Snakemake's own process's and the page tables'.
MEMORY_FRACTION = 0.95
#: Seconds kept free before the job's time limit: stopping the child and writing the record.
TIME_MARGIN_SECONDS = 120
#: Seconds a child stopped at its time limit gets between SIGTERM and SIGKILL.
TERM_GRACE_SECONDS = 5
POLL_SECONDS = 0.2
#: The child's ``oom_score_adj``: where the system's OOM killer must choose, it takes the child.
CHILD_OOM_SCORE_ADJ = 500
_PR_SET_PDEATHSIG = 1
GB = 1e9


@dataclass(frozen=True)
class Outcome:
    """How the child ended: ``ok``; else ``reason`` in words, and ``hard`` when it could not
    report itself (a signal, the guard's memory or time limit) rather than raising an error."""

    ok: bool
    reason: str = ""
    hard: bool = False
    peak_bytes: int = 0


def run_guarded(work: Callable[[], None], *, stage: str, memory_bytes: int | None = None,
                seconds: float | None = None, job_label: str = "", poll: float = POLL_SECONDS) -> Outcome:
    """Run ``work()`` in a forked child; stop it at ``memory_bytes`` (PSS of its process tree) or
    after ``seconds``; say how it ended. ``stage`` names the work in reasons ("registration")."""
    errors_read, errors_write = os.pipe()
    oom_kills_before = _cgroup_oom_kills()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os.close(errors_read)
        _run_child(work, job_label, errors_write)
    os.close(errors_write)
    forward = _forward_termination(pid)
    started = time.monotonic()
    peak = 0
    stopped_for = ""
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            tree = _process_tree(pid)
            used = sum(_proportional_memory(p) for p in tree)
            peak = max(peak, used)
            if memory_bytes is not None and used > memory_bytes:
                stopped_for = (f"killed: out of memory at {used / GB:.1f} GB (the guard's limit "
                               f"{memory_bytes / GB:.1f} GB) in {stage}")
                _kill_tree(tree, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            if seconds is not None and time.monotonic() - started > seconds:
                stopped_for = f"time limit {_duration(seconds)} reached in {stage}"
                _kill_tree(tree, signal.SIGTERM)
                status = _reap_within(pid, TERM_GRACE_SECONDS)
                break
            time.sleep(poll)
    finally:
        for signum, handler in forward.items():
            signal.signal(signum, handler)
    error = os.read(errors_read, 4096).decode(errors="replace").strip()
    os.close(errors_read)
    if stopped_for:
        return Outcome(ok=False, reason=stopped_for, hard=True, peak_bytes=peak)
    if os.WIFSIGNALED(status):
        return Outcome(ok=False, reason=_signal_reason(os.WTERMSIG(status), stage, peak, oom_kills_before),
                       hard=True, peak_bytes=peak)
    code = os.WEXITSTATUS(status)
    if code == 0:
        return Outcome(ok=True, peak_bytes=peak)
    return Outcome(ok=False, reason=f"{error or f'exit code {code}'} in {stage} (see the job's log)", peak_bytes=peak)


def _run_child(work: Callable[[], None], job_label: str, errors_write: int) -> None:  # pragma: no cover
    code = 0
    try:
        _die_with_parent()
        _prefer_as_oom_victim()
        _test_hook(job_label)
        work()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # the child must never return into the parent's code
        traceback.print_exc()
        os.write(errors_write, type(exc).__name__.encode())
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _die_with_parent() -> None:
    """A parent killed from outside takes its child along (Linux prctl; ignored elsewhere)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _prefer_as_oom_victim() -> None:
    try:
        Path("/proc/self/oom_score_adj").write_text(str(CHILD_OOM_SCORE_ADJ))
    except OSError:
        pass


def _test_hook(job_label: str) -> None:
    """Tests only (inert unless :data:`TEST_KILL_VARIABLE` is set): die as a real job would."""
    for entry in filter(None, os.environ.get(TEST_KILL_VARIABLE, "").split(";")):
        pattern, _, action = entry.strip().rpartition("@")
        if job_label and fnmatch.fnmatchcase(job_label, pattern):
            sys.stderr.flush()
            os.kill(os.getpid(), {"kill": signal.SIGKILL, "segfault": signal.SIGSEGV}[action])


def _forward_termination(pid: int) -> dict:
    """While the child runs, a SIGTERM or SIGINT of the parent (Ctrl-C, scancel) goes to the child."""
    def forward(signum, frame):
        _kill_tree(_process_tree(pid), signal.SIGKILL)
        os.waitpid(pid, 0)
        raise SystemExit(128 + signum)

    return {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}


def _reap_within(pid: int, seconds: float) -> int:
    """The child's wait status once it has ended, SIGKILLed (with its tree) after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.1)
    _kill_tree(_process_tree(pid), signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def _signal_reason(signum: int, stage: str, peak: int, oom_kills_before: int | None) -> str:
    name = _signal_name(signum)
    seen = f"; peak memory seen {peak / GB:.1f} GB" if peak >= 0.05 * GB else ""
    if signum == signal.SIGKILL:
        after = _cgroup_oom_kills()
        if oom_kills_before is not None and after is not None and after > oom_kills_before:
            return f"killed: out of memory (the job's memory limit{seen}) in {stage}"
        return (f"signal {signum} ({name}) from outside in {stage} (the system's out-of-memory killer, "
                f"a scheduler or an operator{seen})")
    return f"signal {signum} ({name}) in {stage}"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "unknown signal"


def _duration(seconds: float) -> str:
    return f"{round(seconds / 60)} min" if seconds >= 120 else f"{round(seconds)} s"


# ------------------------------------------------------------------ /proc


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (children first found through /proc/<pid>/task/*/children)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(_children(current))
    return tree


def _children(pid: int) -> list[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return found


def _proportional_memory(pid: int) -> int:
    """Bytes of ``pid``'s proportional set size (shared pages split among their users, so forked
    workers are not counted twice); its resident set size where smaps_rollup is unreadable."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return 0


def _kill_tree(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _cgroup_oom_kills() -> int | None:
    """The ``oom_kill`` count of this process's cgroup (v2), or None where there is none."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                events = Path("/sys/fs/cgroup") / line[3:].lstrip("/") / "memory.events"
                for entry in events.read_text().splitlines():
                    if entry.startswith("oom_kill "):
                        return int(entry.split()[1])
    except (OSError, ValueError):
        return None
    return None


# ------------------------------------------------------------------ Snakemake jobs


def attempt_resource(attempt: int) -> str:
    """The resource ``attempt`` of a guarded rule: "<attempt>/<attempts>" (see the module doc)."""
    return f"{attempt}/{int(os.environ.get(RETRIES_VARIABLE, '0') or 0) + 1}"


def export_retries(retries: int) -> None:
    """In Snakemake's main process: the configured retries, for jobs that run a Snakemake of their own."""
    os.environ[RETRIES_VARIABLE] = str(int(retries))


@dataclass(frozen=True)
class JobLimits:
    """What a Snakemake job may use: memory from ``mem_mb``; time only in a SLURM job, where the
    scheduler kills at the limit (a workstation job may take as long as it needs): the allocation's
    end, else ``runtime`` (minutes); its attempt ("2/3") from the resource ``attempt``."""

    memory_bytes: int | None
    seconds: float | None
    attempt: int
    attempts: int

    @property
    def last_attempt(self) -> bool:
        return self.attempt >= self.attempts

    @classmethod
    def of(cls, resources, environ=None) -> "JobLimits":
        environ = os.environ if environ is None else environ
        mem_mb = _resource(resources, "mem_mb")
        runtime = _resource(resources, "runtime")
        seconds = None
        if environ.get("SLURM_JOB_ID"):
            # the allocation's own end counts from the job's start (Snakemake's start-up, a group's
            # earlier members); the rule's runtime where the scheduler does not say
            left = _slurm_seconds_left(environ)
            limit = left if left is not None else float(runtime) * 60 if runtime else None
            if limit is not None:
                seconds = limit - min(TIME_MARGIN_SECONDS, 0.1 * limit)
        attempt, _, attempts = str(_resource(resources, "attempt") or "1/1").partition("/")
        return cls(memory_bytes=int(float(mem_mb) * 1e6 * MEMORY_FRACTION) if mem_mb else None,
                   seconds=seconds, attempt=int(attempt), attempts=int(attempts or attempt))


def _slurm_seconds_left(environ) -> float | None:
    """Seconds until this SLURM job's time limit: SLURM_JOB_END_TIME (Slurm 23.02+), else squeue's
    end time; None where neither tells (no limit, squeue unavailable)."""
    import subprocess
    from datetime import datetime

    end = environ.get("SLURM_JOB_END_TIME")
    try:
        if end:
            return float(end) - time.time()
        result = subprocess.run(["squeue", "-h", "-j", environ["SLURM_JOB_ID"], "-o", "%e"],
                                capture_output=True, text=True, timeout=30)
        return datetime.fromisoformat(result.stdout.strip()).timestamp() - time.time()
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _resource(resources, name: str):
    try:
        return resources.get(name) if hasattr(resources, "get") else getattr(resources, name, None)
    except (AttributeError, KeyError):
        return None


def job_label(rule: str, wildcards) -> str:
    """``rule:name=value,...``: what the test hook's patterns match."""
    items = wildcards.items() if hasattr(wildcards, "items") else dict(wildcards).items()
    return f"{rule}:" + ",".join(f"{k}={v}" for k, v in items)


def guard_job(snakemake, work: Callable[[], None], *, stage: str,
              write_failure: Callable[[str], None], record_errors: bool = False) -> Outcome:
    """Run a Snakemake job's ``work`` under :func:`run_guarded` within the job's limits.

    Success returns. A hard death (signal, memory, time) fails the job, except on the last attempt,
    where ``write_failure(reason)`` records it in the declared outputs and the job succeeds; with
    ``record_errors`` so does a Python error (per-run work: one model's bug must not hold up the
    report of the others). Otherwise an error fails the job as it did unguarded."""
    limits = JobLimits.of(snakemake.resources)
    outcome = run_guarded(work, stage=stage, memory_bytes=limits.memory_bytes, seconds=limits.seconds,
                          job_label=job_label(snakemake.rule, snakemake.wildcards))
    if outcome.ok:
        return outcome
    what = f"attempt {limits.attempt} of {limits.attempts}: {outcome.reason}"
    if limits.last_attempt and (outcome.hard or record_errors):
        print(f"guard: {what}; recorded as failed", file=sys.stderr, flush=True)
        write_failure(outcome.reason)
        return outcome
    print(f"guard: {what}" + ("; Snakemake retries the job" if not limits.last_attempt else ""),
          file=sys.stderr, flush=True)
    raise SystemExit(1)


# ------------------------------------------------------------------ failed records

FAILED = "failed"
_RECORD_PREFIX = b'{"status": "failed", "stage": '


def failure_record(stage: str, reason: str, **about: str) -> dict:
    return {"status": FAILED, "stage": stage, "reason": reason, **about}


def write_failed_records(paths, record: dict, folders=()) -> None:
    """Every declared output file of a failed job holds ``record`` (one JSON line, whatever the
    file's extension), written atomically; :func:`read_failure` recognises it. A declared output
    folder among ``folders`` (Snakemake checks that it is one) holds the record as ``failed.json``."""
    text = json.dumps(record) + "\n"
    folders = {str(folder) for folder in folders}
    for path in map(Path, paths):
        if str(path) in folders:
            _remove(path)
            path.mkdir(parents=True)
            _write_atomically(path / "failed.json", text)
        else:
            _write_atomically(path, text)


def read_failure(path) -> dict | None:
    """The failed record in ``path`` (a failed folder's ``failed.json``), or None for a real output."""
    path = Path(path)
    if path.is_dir():
        path = path / "failed.json"
    try:
        with open(path, "rb") as handle:
            if handle.read(len(_RECORD_PREFIX)) != _RECORD_PREFIX:
                return None
    except (IsADirectoryError, FileNotFoundError):
        return None
    return json.loads(path.read_text())


def first_failure(paths) -> dict | None:
    """The failed record among ``paths`` (a failed upstream job), or None."""
    for path in paths:
        record = read_failure(path)
        if record is not None:
            return record
    return None


def write_failed_subject(out_dir, subject: str, stage: str, reason: str, kind: str = "") -> None:
    """A per-subject stage's output folder holding only ``status.json`` with status ``failed``
    (core/qc.py's protocol), replacing whatever a killed attempt left there."""
    out_dir = Path(out_dir)
    status = {"subject": subject, "status": FAILED, "stage": stage, "kind": kind, "reason": reason, "warning": ""}
    staging = out_dir.with_name(f".{out_dir.name}.failed.tmp")
    _remove(staging)
    staging.mkdir(parents=True)
    (staging / "status.json").write_text(json.dumps(status, indent=2, sort_keys=True) + "\n")
    _remove(out_dir)
    os.replace(staging, out_dir)


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        _remove(path)
    staging = path.with_name(f".{path.name}.failed.tmp")
    staging.write_text(text)
    os.replace(staging, path)


def guard_subject_job(snakemake, work: Callable[[], None], *, stage: str, kind: str = "") -> Outcome:
    """A per-subject job (one output folder, wildcard ``subject``): a hard death on the last attempt
    leaves the folder with a ``failed`` status.json (stage ``snakemake.rule``), so QC tables list
    the subject with its reason and slicing leaves it out."""
    out_dir, subject = snakemake.output[0], snakemake.wildcards.subject
    return guard_job(snakemake, work, stage=stage, write_failure=lambda reason: write_failed_subject(
        out_dir, subject, snakemake.rule, reason, kind))


def status_kind(stage_dir) -> str:
    """The input kind recorded in a per-subject stage's status.json ("" without one)."""
    try:
        return json.loads((Path(stage_dir) / "status.json").read_text()).get("kind", "")
    except (OSError, ValueError):
        return ""


def guard_run_job(snakemake, work: Callable[[], None], *, stage: str) -> Outcome | None:
    """A per-run job (wildcards ``model``, ``seed``): every declared output becomes a failed record
    when an input is one (a failed upstream job: the work is not started) or when this job fails on
    its last attempt; the report lists the run as failed and reports the others."""
    outputs = list(snakemake.output)
    upstream = first_failure(snakemake.input)
    if upstream is not None:
        print(f"guard: {upstream['stage']} failed for this run ({upstream['reason']}); recorded as failed",
              file=sys.stderr, flush=True)
        write_failed_records(outputs, upstream)
        return None
    run = f"{snakemake.wildcards.model}/seed{snakemake.wildcards.seed}"
    return guard_job(snakemake, work, stage=stage, record_errors=True, write_failure=lambda reason: write_failed_records(
        outputs, failure_record(snakemake.rule, reason, run=run)))


def guard_dataset_job(snakemake, work: Callable[[], None], *, stage: str, upstream=None,
                      folders=()) -> Outcome | None:
    """A per-dataset job (wildcard ``dataset`` or ``volume_dataset``: slicing, real features, the
    domain network, the reference rows, the reader kit): like :func:`guard_run_job`, every declared
    output becomes a failed record when one of ``upstream`` (default: every input) is one or when
    the job dies hard on its last attempt. Every model run of the dataset then passes the record on
    (it names the dataset), and the report lists those runs as failed and reports the other datasets.
    A Python error still fails the job: it is a bad input or setting to fix, not a dying node."""
    outputs = list(snakemake.output)
    failed = first_failure(snakemake.input if upstream is None else upstream)
    if failed is not None:
        print(f"guard: {failed['stage']} failed for this dataset ({failed['reason']}); recorded as failed",
              file=sys.stderr, flush=True)
        write_failed_records(outputs, failed, folders)
        return None
    wildcards = dict(snakemake.wildcards.items())
    dataset = wildcards.get("dataset", wildcards.get("volume_dataset", ""))
    return guard_job(snakemake, work, stage=stage, write_failure=lambda reason: write_failed_records(
        outputs, failure_record(snakemake.rule, reason, dataset=dataset), folders))


def guard_subject_batch(snakemake, subjects: list[str], work: Callable[[str], None], *, stage: str,
                        out_dir: Callable[[str], str], kind: Callable[[str], str] = lambda subject: "") -> list[dict]:
    """A batch job's subjects (core/subject_batches), each under its own guard as
    :func:`guard_subject_job` runs one: ``work(subject)`` writes ``out_dir(subject)``, the folder the
    subject's own job (rule ``snakemake.rule`` without ``_batch``) writes, with the same content and
    the same failed record. One subject's death costs that subject only: the batch's other subjects
    are worked on. On the last attempt a hard death is the subject's failed row; before it, and for
    a Python error, the batch job fails once every subject has had its turn (Snakemake retries the
    batch, with the next attempt's requests). Each subject may use the job's memory (they run one
    after another) and, in a SLURM job, its share of the rule's runtime (the sum of its subjects'
    limits), never past the allocation's end. Returns the manifest's rows: subject, folder, status."""
    rule = snakemake.rule.removesuffix("_batch")
    limits = JobLimits.of(snakemake.resources)
    started = time.monotonic()
    # a subject's share of the rule's runtime (a group's later member must keep its own time)
    runtime = _resource(snakemake.resources, "runtime")
    share = None
    if limits.seconds is not None and subjects:
        share = float(runtime) * 60 / len(subjects) if runtime else limits.seconds / len(subjects)
    rows, unresolved = [], []
    for subject in subjects:
        folder = out_dir(subject)
        _remove(Path(folder))  # what an earlier run or a killed attempt left: the job's own output
        seconds = None if share is None else min(share, limits.seconds - (time.monotonic() - started))
        outcome = run_guarded(lambda: work(subject), stage=stage, memory_bytes=limits.memory_bytes,
                              seconds=seconds, job_label=job_label(rule, {"subject": subject}))
        what = f"{subject}: attempt {limits.attempt} of {limits.attempts}: {outcome.reason}"
        if not outcome.ok and limits.last_attempt and outcome.hard:
            print(f"guard: {what}; recorded as failed", file=sys.stderr, flush=True)
            write_failed_subject(folder, subject, rule, outcome.reason, kind(subject))
        elif not outcome.ok:
            print(f"guard: {what}", file=sys.stderr, flush=True)
            unresolved.append(subject)
            continue
        status = json.loads((Path(folder) / "status.json").read_text()).get("status", "")
        rows.append({"subject": subject, "folder": folder, "status": status})
    if unresolved:
        print(f"guard: {len(unresolved)} of {len(subjects)} subject(s) of this batch did not finish"
              + ("; Snakemake retries the batch" if not limits.last_attempt else ""), file=sys.stderr, flush=True)
        raise SystemExit(1)
    return rows
