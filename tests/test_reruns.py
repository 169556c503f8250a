"""Rerun scopes: what a change to the config, a family's code or a preprocessing setting reruns,
and that ``snakemake --lint`` is clean.

These need only the provenance Snakemake records, not real outputs, so the fixture runs the
cohort's discovery for real and then marks every other output as produced (``--touch`` over
placeholder files): Snakemake records the same params/code/input metadata as after a real run,
in seconds instead of the ten minutes of test_workflow.py's run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from helpers.workflow import (TEST_CONFIG, copy_checkout, dag_jobs, dry_run_jobs, mark_all_produced, model_jobs,
                              snakemake, stale_jobs, summary_table, write_config)

pytestmark = pytest.mark.integration

UPSTREAM_OF_SLICES = {"demo_cohort", "discover_inputs", "ingest", "ingest_qc", "register", "qc_tables"}


@pytest.fixture(scope="module")
def produced_workdir(tmp_path_factory) -> Path:
    """A copy of the checkout (as in test_workflow) whose whole DAG counts as up to date."""
    work = copy_checkout(tmp_path_factory, "reruns")
    result = snakemake(work, "--cores", "2", "discover_inputs")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    mark_all_produced(work)
    assert dry_run_jobs(work) == {}
    return work


def test_changing_one_models_lr_reruns_only_that_model(produced_workdir):
    write_config(produced_workdir, lambda c: c["models"]["vae"].update(lr=5e-4))
    try:
        assert stale_jobs(produced_workdir) == model_jobs(produced_workdir, "vae")
    finally:
        write_config(produced_workdir, lambda c: None)
    assert dry_run_jobs(produced_workdir) == {}


def test_reordering_config_keys_reruns_nothing(produced_workdir):
    text = yaml.safe_dump(yaml.safe_load(TEST_CONFIG.read_text()), sort_keys=False)
    reordered = yaml.safe_load(text)
    reordered["registration"] = dict(reversed(list(reordered["registration"].items())))
    (produced_workdir / "config.yaml").write_text(yaml.safe_dump(reordered, sort_keys=False))
    try:
        assert dry_run_jobs(produced_workdir) == {}
    finally:
        write_config(produced_workdir, lambda c: None)


def test_editing_a_family_module_reruns_only_that_familys_models(produced_workdir):
    module = produced_workdir / "src/pipeline_lib/models/families/dcgan.py"
    original = module.read_text()
    module.write_text(original + "\n# edited\n")
    try:
        assert stale_jobs(produced_workdir) == model_jobs(produced_workdir, "dcgan")
    finally:
        module.write_text(original)


def test_editing_a_metric_module_reruns_only_the_rules_that_run_its_code(produced_workdir):
    """A rule on the shared adapter (scripts/rule_job.py) carries its function's code digest in its
    params: editing evaluation/intensity.py reruns intensity_statistics for every run (and the
    report that shows it), not the other evaluation rules that share the adapter."""
    module = produced_workdir / "src/pipeline_lib/evaluation/intensity.py"
    original = module.read_text()
    module.write_text(original + "\n# edited\n")
    try:
        stale = stale_jobs(produced_workdir)
    finally:
        module.write_text(original)
    assert {rule for rule, _ in stale} == {"intensity_statistics", "report"}, sorted(stale)
    assert {model for rule, model in stale if rule == "intensity_statistics"} == set(models())


def test_adding_a_model_runs_only_the_new_models_jobs(produced_workdir):
    write_config(produced_workdir, lambda c: c["models"].update(vae_wide={**c["models"]["vae"], "width": 16}))
    try:
        assert stale_jobs(produced_workdir) == model_jobs(produced_workdir, "vae_wide")
    finally:
        write_config(produced_workdir, lambda c: None)


def test_lint_is_clean(produced_workdir):
    result = snakemake(produced_workdir, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr


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


def every_model_jobs(work: Path) -> set[tuple[str, str]]:
    every = {(rule, model) for rule, model in dag_jobs(work) if model}
    assert {model for _, model in every} == set(models())
    return every | model_jobs(work, models()[0])


def planned_and_stale(work: Path, change) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """What a dry run would run, and the stale (rule, model) pairs, with `change` applied to the
    test config; the config is restored afterwards."""
    write_config(work, change)
    try:
        return dry_run_jobs(work), stale_jobs(work)
    finally:
        write_config(work, lambda c: None)


def test_a_slicing_setting_reruns_slices_and_everything_downstream(produced_workdir):
    work = produced_workdir
    planned, stale = planned_and_stale(work, lambda c: c["slicing"].update(clip_percentile=90))
    assert planned == forced_jobs(work, "slice_dataset")
    assert planned["slice_dataset"] == 1
    assert every_model_jobs(work) | {("slice_dataset", ""), ("metrics_original", "")} <= stale
    assert not UPSTREAM_OF_SLICES & {rule for rule, _ in stale}


def test_a_registration_setting_reregisters_every_subject_and_downstream(produced_workdir):
    work = produced_workdir
    planned, stale = planned_and_stale(work, lambda c: c["registration"].update(transform="Rigid"))
    assert planned == forced_jobs(work, "register")
    # the demo's 4 phantoms + 1 with a wrong voxel size + 1 corrupt file
    assert planned["register"] == subjects(work) == 6
    expected = every_model_jobs(work) | {("register", ""), ("qc_tables", ""), ("slice_dataset", ""),
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
    assert per_run, sorted(per_run)
    assert all("/seed1" in o for o in per_run), sorted(per_run)
    blocks = yaml.safe_load(TEST_CONFIG.read_text())["models"]
    following = {m for m in models() if "seeds" not in blocks[m]}
    assert following
    assert following != set(models())  # both kinds are in the tiny config
    assert {o.split("/")[2] for o in per_run if o.startswith("results/models/")} == following
    assert stale - per_run == {"results/report/index.html", "results/report/summary.tsv"}
    assert planned["train"] == len(following)
    assert planned["report"] == 1


def test_keeping_flagged_subjects_reslices_without_reregistering(produced_workdir):
    work = produced_workdir
    planned, _ = planned_and_stale(work, lambda c: c["registration"].update(on_poor_fit="keep"))
    assert planned == forced_jobs(work, "slice_dataset")
    assert "register" not in planned
    assert planned["slice_dataset"] == 1
