"""Stale-only reruns after a preprocessing change: everything downstream, nothing upstream.

The other rerun cases (a model's hyperparameter, a family's module, a new model, key
order) live in test_workflow.py and share its helpers. These cases only need the
provenance Snakemake records, not real outputs, so the fixture runs the cohort's
discovery for real and then marks every other output as produced (``--touch`` over
placeholder files): Snakemake records the same params/code/input metadata as after a
real run, in seconds instead of minutes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from test_workflow import (TEST_CONFIG, copy_checkout, dry_run_jobs, model_jobs, snakemake,
                           stale_jobs, summary_table, write_config)

pytestmark = pytest.mark.integration

UPSTREAM_OF_SLICES = {"demo_cohort", "discover_inputs", "ingest", "ingest_qc", "register", "qc_tables"}


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


@pytest.fixture(scope="module")
def produced_workdir(tmp_path_factory) -> Path:
    """A copy of the checkout (as in test_workflow) whose whole DAG counts as up to date."""
    work = copy_checkout(tmp_path_factory, "reruns")
    result = snakemake(work, "--cores", "2", "discover_inputs")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    mark_all_produced(work)
    assert dry_run_jobs(work) == {}
    return work


def forced_jobs(work: Path, rule: str) -> dict[str, int]:
    """Rule -> job count when ``rule`` is forced: that rule's jobs and everything downstream."""
    result = snakemake(work, "-n", "--cores", "1", "--forcerun", rule)
    assert result.returncode == 0, result.stdout + result.stderr
    table = (result.stdout + result.stderr).split("Job stats:", 1)[1].split("\n\n", 1)[0]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", table, re.M))
    counts.pop("total", None)
    return {rule_name: int(n) for rule_name, n in counts.items()}


def subjects(work: Path) -> int:
    return sum(1 for _ in (work / "results/register").iterdir())


def models() -> list[str]:
    return sorted(yaml.safe_load(TEST_CONFIG.read_text())["models"])


def every_model_jobs() -> set[tuple[str, str]]:
    return set().union(*(model_jobs(m) for m in models()))


def test_a_slicing_setting_reruns_slices_and_everything_downstream(produced_workdir):
    work = produced_workdir
    write_config(work, lambda c: c["slicing"].update(clip_percentile=90))
    try:
        planned = dry_run_jobs(work)
        stale = stale_jobs(work)
    finally:
        write_config(work, lambda c: None)
    assert planned == forced_jobs(work, "slice_dataset")
    assert planned["slice_dataset"] == 1
    assert every_model_jobs() | {("slice_dataset", ""), ("metrics_original", "")} <= stale
    assert not UPSTREAM_OF_SLICES & {rule for rule, _ in stale}


def test_a_registration_setting_reregisters_every_subject_and_downstream(produced_workdir):
    work = produced_workdir
    write_config(work, lambda c: c["registration"].update(transform="Rigid"))
    try:
        planned = dry_run_jobs(work)
        stale = stale_jobs(work)
    finally:
        write_config(work, lambda c: None)
    assert planned == forced_jobs(work, "register")
    # the demo's 4 phantoms + 1 with a wrong voxel size + 1 corrupt file
    assert planned["register"] == subjects(work) == 6
    expected = every_model_jobs() | {("register", ""), ("qc_tables", ""), ("slice_dataset", ""),
                                     ("metrics_original", "")}
    assert expected <= stale
    assert not {"demo_cohort", "discover_inputs", "ingest"} & {rule for rule, _ in stale}


def test_rediscovering_the_same_inputs_reruns_no_ingest_or_registration(produced_workdir):
    """Discovery rebuilds the staging folder from scratch; its links carry their sources' times,
    so only subjects whose source changed would be ingested again (none here). (Snakemake also
    sees that discovery's tables are unchanged, by their checksums, so nothing at all may rerun.)"""
    work = produced_workdir
    result = snakemake(work, "--cores", "1", "--forcerun", "discover_inputs", "--", "discover_inputs")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    try:
        planned = dry_run_jobs(work)
        assert not {"ingest", "register"} & set(planned)
    finally:
        mark_all_produced(work)


def stale_outputs(work: Path) -> set[str]:
    """Every output a run would create or update."""
    return {row["output_file"] for row in summary_table(work) if row["plan"] != "no update"}


def test_adding_a_seed_runs_only_the_new_seeds_jobs(produced_workdir):
    """Seeds are a dimension of the DAG: a new seed adds one run per model and reruns no existing
    run; only the report, which shows every run, is remade. (A model with its own ``seeds``, cvae
    in the tiny config, keeps them: training.seeds is only the default.)"""
    work = produced_workdir
    write_config(work, lambda c: c.setdefault("training", {}).update(seeds=[0, 1]))
    try:
        stale = stale_outputs(work)
        planned = dry_run_jobs(work)
    finally:
        write_config(work, lambda c: None)
    per_run = {o for o in stale if "/seed" in o}
    assert per_run and all("/seed1" in o for o in per_run), sorted(per_run)
    blocks = yaml.safe_load(TEST_CONFIG.read_text())["models"]
    following = {m for m in models() if "seeds" not in blocks[m]}
    assert following and following != set(models())  # both kinds are in the tiny config
    assert {o.split("/")[2] for o in per_run if o.startswith("results/models/")} == following
    assert stale - per_run == {"results/report/index.html", "results/report/summary.tsv"}
    assert planned["train"] == len(following) and planned["report"] == 1


def test_keeping_flagged_subjects_reslices_without_reregistering(produced_workdir):
    work = produced_workdir
    write_config(work, lambda c: c["registration"].update(on_poor_fit="keep"))
    try:
        planned = dry_run_jobs(work)
    finally:
        write_config(work, lambda c: None)
    assert planned == forced_jobs(work, "slice_dataset")
    assert "register" not in planned and planned["slice_dataset"] == 1
