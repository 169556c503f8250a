"""Dry run of the whole workflow for a 2,029-subject cohort (Ungría Hirte et al.'s size).

    python bench/dag_2029.py [--subjects 2029] [--out bench/results/dag_2029.json] [--keep DIR]
                             [--reuse DIR] [--source CHECKOUT] [--floor] [--subject-batches B]

In a scratch copy of the checkout (Snakefile, workflow/, src/, envs/ and the
repository's config.yaml, its input pointed at the cohort below) this

1. builds a cohort of placeholder inputs: per subject an empty NIfTI file or a
   DICOM series folder holding one empty file (alternating, as in a mixed PACS
   export), plus a sample sheet with a scanner label;
2. runs the discovery checkpoint for real (pseudonyms, linkage table);
3. times ``snakemake -n all``: building and printing the DAG of every job that a
   first run would execute (per subject ingest and register, then slicing, every
   configured model and the report).

Wall time and peak resident memory of each step are those of the snakemake
process and its children (``os.wait4``), so the numbers are what a user sees on a
login node. The dry run is one single-threaded process, so on a shared machine its
CPU time (user + system, also recorded, with the load average before and after)
is the steadier number: wall time grows with the other users' load. Targets: dry
run within 30 s and 2 GB on 2 cores.

``--keep DIR`` keeps the cohort and checkout; ``--reuse DIR`` times the dry run
again in such a folder (after copying the workflow in afresh), so that two versions
of the code are compared on one cohort: ``--source CHECKOUT`` copies the workflow
from another checkout (e.g. ``--source /path/to/main`` for the code before a change).

``--subject-batches B`` sets ``execution.subject_batches: B`` in the checkout's config: ingest and
register as B batch jobs each instead of one job per subject (core/subject_batches.py).

``--floor`` also times Snakemake's own share: a Snakefile of the same shape (the
discovery checkpoint's subject table, per subject an ingest and a register job in a
group, the cohort tables, one job after them) whose rules have no input functions,
params, resources, messages, conda environments or scripts, on the same cohort.
The difference per job is what the workflow's rule declarations cost.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pipeline_lib.core.io import write_json
from pipeline_lib.core.subject_batches import assign_batches

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
TARGET_WALL_S = 30.0
TARGET_PEAK_MB = 2048.0


def make_cohort(root: Path, n_subjects: int) -> Path:
    """Placeholder inputs for ``n_subjects`` subjects and a sample sheet naming them; the sheet's path."""
    rows = ["subject\tpath\tscanner"]
    for i in range(n_subjects):
        key = f"P{i:05d}"
        if i % 2:
            series = root / key / "t1_series"
            series.mkdir(parents=True)
            (series / "IM0001.dcm").touch()
            path = series
        else:
            path = root / key / f"{key}_T1w.nii.gz"
            path.parent.mkdir(parents=True)
            path.touch()
        rows.append(f"{key}\t{path.relative_to(root)}\tscanner-{'AB'[i % 3 == 0]}")
    sheet = root / "samples.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    return sheet


def copy_workflow(work: Path, source: Path = REPO) -> None:
    """The Snakefile, workflow/, src/ and envs/ of ``source`` into ``work`` (replacing them)."""
    shutil.copy(source / "Snakefile", work)
    for folder in ("workflow", "src", "envs"):
        shutil.rmtree(work / folder, ignore_errors=True)
        shutil.copytree(source / folder, work / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))


def make_checkout(work: Path, sheet: Path, source: Path = REPO, subject_batches: int = 0) -> None:
    """A copy of the workflow whose config points at the placeholder cohort."""
    copy_workflow(work, source)
    config = yaml.safe_load((source / "config.yaml").read_text())
    config.setdefault("input", {})["source"] = str(sheet)
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    set_subject_batches(work, subject_batches)


def set_subject_batches(work: Path, subject_batches: int) -> None:
    """``execution.subject_batches`` in the checkout's config (0: one job per subject)."""
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["execution"] = {"subject_batches": subject_batches}
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def measured(cmd: list[str], cwd: Path) -> dict:
    """Run ``cmd``; its wall time, CPU time, peak RSS (MB, largest process of the tree), the
    1-minute load average before and after, and its output."""
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}{os.pathsep}{os.environ['PATH']}"}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-4000:]}")
    # Linux reports ru_maxrss in KiB.
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "output": text}


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Rule -> number of jobs, from the dry run's job stats table."""
    table = dry_run_output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}


FLOOR_SNAKEFILE = """
# Snakemake's own cost for the workflow's DAG shape (bench/dag_2029.py --floor): no input
# functions beyond the subject list, no params, resources, messages, conda or scripts. As in the
# workflow, a cohort table takes a checkpoint output as input, so that a completed checkpoint
# re-evaluates its dependants and post-processes the DAG again.
import os

checkpoint discover_inputs:
    input: "{subjects_table}"
    output: subjects="results/inputs/subjects.tsv"
    shell: "cp {{input}} {{output}}"

def subjects(wildcards):
    with open(checkpoints.discover_inputs.get().output.subjects) as table:
        return [line.split("\\t", 1)[0] for line in table.read().splitlines()[1:]]

rule ingest:
    output: directory("results/ingest/{{subject}}")
    shell: "mkdir {{output}}"

rule register:
    input: "results/ingest/{{subject}}"
    output: directory("results/register/{{subject}}")
    shell: "mkdir {{output}}"

rule ingest_qc:
    input:
        ingest=lambda w: expand("results/ingest/{{subject}}", subject=subjects(w)),
        table=rules.discover_inputs.output.subjects,
    output: "results/qc/ingest.tsv"
    shell: "touch {{output}}"

rule qc_tables:
    input: lambda w: expand("results/register/{{subject}}", subject=subjects(w))
    output: "results/qc/registration.tsv"
    shell: "touch {{output}}"

rule all:
    default_target: True
    input: "results/qc/ingest.tsv", "results/qc/registration.tsv"
    output: "results/report.txt"
    shell: "touch {{output}}"
"""


def floor(scratch: Path, subjects_table: Path) -> dict:
    """Discovery and dry run of FLOOR_SNAKEFILE in ``scratch``/floor over the discovered subjects."""
    work = scratch / "floor"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    (work / "Snakefile").write_text(FLOOR_SNAKEFILE.format(subjects_table=subjects_table.resolve()))
    snakemake = [str(SNAKEMAKE), "--cores", "2"]
    measured([*snakemake, "discover_inputs"], work)
    dry_run = measured([*snakemake, "-n"], work)
    return {"jobs": job_counts(dry_run["output"]), "dry_run": {k: v for k, v in dry_run.items() if k != "output"}}


def dry_run_result(n_subjects: int, work: Path, subject_batches: int = 0) -> dict:
    """Time ``snakemake -n all`` in a checkout whose discovery has run."""
    dry_run = measured([str(SNAKEMAKE), "--cores", "2", "-n", "all"], work)
    jobs = job_counts(dry_run["output"])
    per_subject = ("ingest", "register")
    expected = n_subjects
    if subject_batches:
        subjects = (work / "results/inputs/subjects.tsv").read_text().splitlines()[1:]
        expected = len(assign_batches([row.split("\t", 1)[0] for row in subjects], subject_batches))
        per_subject = ("ingest_batch", "register_batch")
    if any(jobs.get(rule) != expected for rule in per_subject):
        raise RuntimeError(f"expected {expected} {' and '.join(per_subject)} jobs, got {jobs}")
    return {"jobs": jobs, "dry_run": {k: v for k, v in dry_run.items() if k != "output"}}


def run(n_subjects: int, scratch: Path, source: Path, reuse: bool, with_floor: bool, subject_batches: int = 0) -> dict:
    """Build the cohort and checkout under ``scratch`` (or, with ``reuse``, copy ``source``'s
    workflow into the one there), run discovery and the dry run."""
    cohort, work = scratch / "cohort", scratch / "checkout"
    started = time.perf_counter()
    result: dict = {"n_subjects": n_subjects, "source": "this checkout" if source == REPO else str(source),
                    "subject_batches": subject_batches}
    if reuse:
        copy_workflow(work, source)
        set_subject_batches(work, subject_batches)
        n_subjects = len((work / "results/inputs/subjects.tsv").read_text().splitlines()) - 1
        result["n_subjects"] = n_subjects
    else:
        cohort.mkdir()
        work.mkdir()
        sheet = make_cohort(cohort, n_subjects)
        make_checkout(work, sheet, source, subject_batches)
        result["setup_s"] = round(time.perf_counter() - started, 2)
        discovery = measured([str(SNAKEMAKE), "--cores", "2", "discover_inputs"], work)
        result["discovery"] = {k: v for k, v in discovery.items() if k != "output"}
    result.update(dry_run_result(n_subjects, work, subject_batches))
    dry = result["dry_run"]
    result["targets"] = {"wall_s": TARGET_WALL_S, "peak_rss_mb": TARGET_PEAK_MB}
    result["within_targets"] = dry["wall_s"] <= TARGET_WALL_S and dry["peak_rss_mb"] <= TARGET_PEAK_MB
    result["cpu_ms_per_job"] = round(1000 * dry["cpu_s"] / result["jobs"]["total"], 2)
    if with_floor:
        result["floor"] = floor(scratch, work / "results/inputs/subjects.tsv")
        floor_dry = result["floor"]["dry_run"]
        result["floor"]["cpu_ms_per_job"] = round(1000 * floor_dry["cpu_s"] / result["floor"]["jobs"]["total"], 2)
    result["machine"] = {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                         "python": platform.python_version(), "platform": platform.platform()}
    result["snakemake"] = subprocess.run([str(SNAKEMAKE), "--version"], capture_output=True,
                                         text=True).stdout.strip()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=2029)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/dag_2029.json")
    parser.add_argument("--keep", type=Path, help="build in this (new) folder and keep it")
    parser.add_argument("--reuse", type=Path, help="time the dry run again in a folder made with --keep "
                                                   "(--subjects is then read from it)")
    parser.add_argument("--source", type=Path, default=REPO,
                        help="checkout whose workflow is timed (default: this one)")
    parser.add_argument("--floor", action="store_true",
                        help="also time Snakemake alone on a Snakefile of the same shape")
    parser.add_argument("--subject-batches", type=int, default=0,
                        help="execution.subject_batches: ingest and register as this many batch jobs (0: per subject)")
    args = parser.parse_args()
    source = args.source.resolve()
    options = dict(with_floor=args.floor, subject_batches=args.subject_batches)
    if args.reuse:
        result = run(args.subjects, args.reuse, source, reuse=True, **options)
    elif args.keep:
        args.keep.mkdir(parents=True)
        result = run(args.subjects, args.keep, source, reuse=False, **options)
    else:
        with tempfile.TemporaryDirectory(prefix="dag_bench_") as scratch:
            result = run(args.subjects, Path(scratch), source, reuse=False, **options)
    write_json(args.out, result)
    dry = result["dry_run"]
    line = (f"{result['n_subjects']} subjects, {result['jobs'].get('total')} jobs: dry run {dry['wall_s']} s "
            f"({dry['cpu_s']} s CPU, {result['cpu_ms_per_job']} ms a job, load {dry['load_average_1min']}), "
            f"peak {dry['peak_rss_mb']} MB (targets {TARGET_WALL_S:.0f} s, {TARGET_PEAK_MB:.0f} MB)")
    if "floor" in result:
        line += f"; Snakemake alone: {result['floor']['dry_run']['cpu_s']} s CPU, {result['floor']['cpu_ms_per_job']} ms a job"
    print(f"{line} -> {args.out}")


if __name__ == "__main__":
    main()
