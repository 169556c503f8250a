"""Running the Snakemake workflow from tests: a scratch copy of the checkout, runs and dry runs,
and what Snakemake says it would (re)run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
TEST_CONFIG = REPO / "tests" / "data" / "config.integration.yaml"


def snakemake(workdir: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "-s", str(workdir / "Snakefile"), "--directory", str(workdir), *args]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def dry_run_jobs(workdir: Path) -> dict[str, int]:
    """Rule -> job count of what a dry run would execute."""
    result = snakemake(workdir, "-n", "--cores", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    return job_counts(text)


def job_counts(text: str) -> dict[str, int]:
    """Rule -> job count from the "Job stats" table of Snakemake's output."""
    table = text.split("Job stats:", 1)[1]
    jobs = {}
    for line in table.splitlines():
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if match and match.group(1) != "total":
            jobs[match.group(1)] = int(match.group(2))
    return jobs


def copy_checkout(tmp_path_factory, name: str) -> Path:
    """A copy of the workflow and its library with the test config, so tests may edit source files."""
    work = tmp_path_factory.mktemp(name) / "checkout"
    work.mkdir()
    shutil.copy(REPO / "Snakefile", work)
    for folder in ("workflow", "src", "envs", "profiles", "presets"):
        shutil.copytree(REPO / folder, work / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(TEST_CONFIG, work / "config.yaml")
    return work


def discovered_checkout(folder: Path, config: dict, subjects: int) -> Path:
    """A copy of the workflow (no site.yaml) under ``folder`` with ``config`` and a discovery table of
    ``subjects`` NIfTI subjects, as bench/job_requests.py plans it without any image."""
    work = folder / "checkout"
    work.mkdir()
    shutil.copy(REPO / "Snakefile", work)
    for folder_name in ("workflow", "src", "envs", "profiles"):
        shutil.copytree(REPO / folder_name, work / folder_name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "site.yaml"))
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    table = work / "results/inputs/subjects.tsv"
    table.parent.mkdir(parents=True)
    table.write_text("subject\tformat\tkind\n" + "".join(f"sub-{i:010x}\tnifti\tfile\n" for i in range(subjects)))
    return work


def small_evaluation(config: dict) -> None:
    """Sampling, metrics, evaluation and reader-kit sizes small enough for a 16 px test workflow."""
    config["sampling"] = {"n": 24, "n_reconstruct": 16}
    config["metrics"] = {"n_original": 16}
    config["evaluation"] = {"fid": {"repeats": 2, "max_real": 32}, "kid": {"n_subsets": 2, "subset_size": 16},
                            "prdc": {"nearest_k": 3}, "domain": {"steps": 10, "nearest_k": 3},
                            "utility": {"seeds": 1, "steps": 10, "n_synthetic": 16},
                            "diversity": {"n_pairs": 20, "n_reference": 16}, "memorization": {"gallery_k": 2}}
    config["reader_study"] = {"n_real": 4, "n_per_model": 2, "display_size": 64}


def write_config(work: Path, change) -> None:
    """The test config with `change(config)` applied, as the checkout's config.yaml."""
    config = yaml.safe_load(TEST_CONFIG.read_text())
    change(config)
    (work / "config.yaml").write_text(yaml.safe_dump(config))


def summary_table(workdir: Path) -> list[dict[str, str]]:
    """`snakemake --summary`: one record per output (output_file, rule, status, plan, ...)."""
    result = snakemake(workdir, "--summary", "--cores", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    return [dict(zip(rows[0], row)) for row in rows[1:]]


def dag_jobs(workdir: Path, stale_only: bool = False) -> set[tuple[str, str]]:
    """(rule, model) of every output of the DAG (``stale_only``: that a run would update); model is
    '' for rules that are not per model."""
    models = set(yaml.safe_load((workdir / "config.yaml").read_text())["models"])
    jobs = set()
    for row in summary_table(workdir):
        if not stale_only or row["plan"] != "no update":
            # A model's outputs carry its name as a folder or as the file name's stem.
            parts = re.split(r"[/.]", row["output_file"])
            jobs.add((row["rule"], next((p for p in parts if p in models), "")))
    return jobs


def stale_jobs(workdir: Path) -> set[tuple[str, str]]:
    return dag_jobs(workdir, stale_only=True)


def model_jobs(workdir: Path, model: str) -> set[tuple[str, str]]:
    """A model's own jobs in the DAG of ``workdir``'s config (every job whose outputs carry its name:
    training, sampling and each per-run metric, so a new metric rule needs no entry here), plus what
    aggregates every model: the reader kit (its images change, so it gets a new kit id) and the report."""
    own = {(rule, name) for rule, name in dag_jobs(workdir) if name == model}
    assert ("train", model) in own and len(own) > 2, f"no per-run jobs of {model} in the DAG: {sorted(own)}"
    return own | {("report", ""), ("reader_kit", ""), ("reader_scores", "")}


def missing_outputs(work: Path) -> list[str]:
    """Outputs of the full DAG that do not exist yet, from ``snakemake --summary``."""
    return [row["output_file"] for row in summary_table(work) if row["status"] == "missing"]


def mark_all_produced(work: Path) -> None:
    """Placeholders for every missing output, then ``--touch --forceall`` to record provenance.

    Outputs without a file extension are this workflow's ``directory()`` outputs
    (per-subject ingest/register folders, the reader kit).
    """
    for name in missing_outputs(work):
        path = work / name
        if Path(name).suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)
    # --forceall: without it, jobs whose placeholders happen to be newer than their
    # inputs are skipped and get no provenance record.
    result = snakemake(work, "--touch", "--forceall", "--cores", "1", "all")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
