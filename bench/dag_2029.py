"""Dry run of the whole workflow for a 2,029-subject cohort (Ungría Hirte et al.'s size).

    python bench/dag_2029.py [--subjects 2029] [--out bench/results/dag_2029.json] [--keep DIR]

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
login node. Targets: dry run within 30 s and 2 GB on 2 cores.
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


def make_checkout(work: Path, sheet: Path) -> None:
    """A copy of the workflow whose config points at the placeholder cohort."""
    shutil.copy(REPO / "Snakefile", work)
    for folder in ("workflow", "src", "envs"):
        shutil.copytree(REPO / folder, work / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.setdefault("input", {})["source"] = str(sheet)
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def measured(cmd: list[str], cwd: Path) -> dict:
    """Run ``cmd``; its wall time, peak RSS (MB, largest process of the tree) and output."""
    env = {**os.environ, "PATH": f"{SNAKEMAKE.parent}{os.pathsep}{os.environ['PATH']}"}
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
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "output": text}


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Rule -> number of jobs, from the dry run's job stats table."""
    table = dry_run_output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}


def run(n_subjects: int, scratch: Path) -> dict:
    """Build the cohort and checkout under ``scratch``, run discovery and the dry run."""
    cohort, work = scratch / "cohort", scratch / "checkout"
    cohort.mkdir()
    work.mkdir()
    started = time.perf_counter()
    sheet = make_cohort(cohort, n_subjects)
    make_checkout(work, sheet)
    setup_s = time.perf_counter() - started
    snakemake = [str(SNAKEMAKE), "--cores", "2"]
    discovery = measured([*snakemake, "discover_inputs"], work)
    dry_run = measured([*snakemake, "-n", "all"], work)
    jobs = job_counts(dry_run["output"])
    if jobs.get("ingest") != n_subjects or jobs.get("register") != n_subjects:
        raise RuntimeError(f"expected {n_subjects} ingest and register jobs, got {jobs}")
    return {
        "n_subjects": n_subjects,
        "jobs": jobs,
        "setup_s": round(setup_s, 2),
        "discovery": {k: v for k, v in discovery.items() if k != "output"},
        "dry_run": {k: v for k, v in dry_run.items() if k != "output"},
        "targets": {"wall_s": TARGET_WALL_S, "peak_rss_mb": TARGET_PEAK_MB},
        "within_targets": dry_run["wall_s"] <= TARGET_WALL_S and dry_run["peak_rss_mb"] <= TARGET_PEAK_MB,
        "machine": {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "platform": platform.platform()},
        "snakemake": subprocess.run([str(SNAKEMAKE), "--version"], capture_output=True,
                                    text=True).stdout.strip(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=2029)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/dag_2029.json")
    parser.add_argument("--keep", type=Path, help="build in this (new) folder and keep it")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True)
        result = run(args.subjects, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="dag_bench_") as scratch:
            result = run(args.subjects, Path(scratch))
    write_json(args.out, result)
    dry = result["dry_run"]
    print(f"{args.subjects} subjects, {result['jobs'].get('total')} jobs: dry run {dry['wall_s']} s, "
          f"peak {dry['peak_rss_mb']} MB (targets {TARGET_WALL_S:.0f} s, {TARGET_PEAK_MB:.0f} MB); "
          f"discovery {result['discovery']['wall_s']} s -> {args.out}")


if __name__ == "__main__":
    main()
