"""The whole workflow, end to end, on a tiny configuration in a scratch directory.

One real run (demo cohort -> dcm2niix -> ANTs -> slices -> VAE -> samples ->
metrics -> report) is shared by the tests below; each then checks one promise
of the pipeline: finite report numbers, QC rows for bad input, no PHI in any
output or log, nothing to do on a second call, and stale-only reruns.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
TEST_CONFIG = Path(__file__).parent / "data" / "config.integration.yaml"

pytestmark = pytest.mark.integration


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
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
    for folder in ("workflow", "src", "envs", "profiles"):
        shutil.copytree(REPO / folder, work / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(TEST_CONFIG, work / "config.yaml")
    return work


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = copy_checkout(tmp_path_factory, "workflow")
    # A generous cap (the run takes 5-10 min on 2 quiet cores; shared machines are slower): a timeout is
    # a hang detector here, not a speed target (those live in bench/).
    result = snakemake(work, "--cores", "2", "all", timeout=1800)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return work


def write_config(work: Path, change) -> None:
    config = yaml.safe_load(TEST_CONFIG.read_text())
    change(config)
    (work / "config.yaml").write_text(yaml.safe_dump(config))


def test_report_table_has_finite_numbers_for_every_row(workdir):
    html = (workdir / "results/report/index.html").read_text()
    table = re.search(r'<table[^>]*id="table1".*?</table>', html, re.S).group(0)
    rows = re.findall(r'<tr[^>]*data-model="([^"]+)"(.*?)</tr>', table, re.S)
    assert [name for name, _ in rows] == ["Original", "cvae", "dcgan", "vae"]
    for name, row in rows:
        values = [float(v) for v in re.findall(r'data-value="([^"]+)"', row)]
        assert len(values) == 4, (name, values)
        assert all(v == v and abs(v) != float("inf") for v in values), (name, values)
    assert 'id="synthetic-banner"' in html and "synthetic phantoms" in html


def test_corrupt_demo_file_is_reported_and_the_rest_goes_on(workdir):
    qc = pd.read_csv(workdir / "results/qc/ingest.tsv", sep="\t", keep_default_na=False)
    failed = qc[qc["status"] == "failed"]
    assert len(failed) == 1
    assert failed["file"].iloc[0].endswith("demo-05.nii.gz")
    assert failed["reason"].iloc[0]
    registered = pd.read_csv(workdir / "results/qc/registration.tsv", sep="\t", keep_default_na=False)
    assert (registered["status"] == "ok").sum() == 4
    slices = pd.read_csv(workdir / "results/slices/slices.tsv", sep="\t")
    assert slices["subject"].nunique() == 4
    assert set(slices["split"]) == {"train", "test"}


def _readable_text(path: Path) -> str:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("latin-1")


def test_no_planted_phi_in_results_or_logs(workdir):
    planted = json.loads((workdir / "resources/demo/planted_phi.json").read_text())["strings"]
    assert len(planted) >= 6
    searched = 0
    for root in ("results", "logs", ".snakemake/log", "private"):
        for path in (workdir / root).rglob("*"):
            if path.is_file():
                text = _readable_text(path)
                searched += 1
                for secret in planted:
                    assert secret not in text, f"{secret!r} leaked into {path}"
    assert searched > 20


def test_second_call_has_nothing_to_do(workdir):
    assert dry_run_jobs(workdir) == {}


def stale_jobs(workdir: Path) -> set[tuple[str, str]]:
    """(rule, model) of every output a run would update; model is '' for other rules."""
    models = set(yaml.safe_load((workdir / "config.yaml").read_text())["models"])
    result = snakemake(workdir, "--summary", "--cores", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
    header, rows = rows[0], rows[1:]
    output, rule, plan = header.index("output_file"), header.index("rule"), header.index("plan")
    jobs = set()
    for row in rows:
        if row[plan] != "no update":
            # A model's outputs carry its name as a folder or as the file name's stem.
            parts = re.split(r"[/.]", row[output])
            jobs.add((row[rule], next((p for p in parts if p in models), "")))
    return jobs


#: Rules with one job per model (everything from training to that model's evaluation).
PER_MODEL_RULES = ("train", "sample", "metrics_model", "model_features", "distribution_metrics",
                   "domain_metrics", "memorization_audit", "conditioning_accuracy", "augmentation_utility",
                   "diversity_metrics")


def model_jobs(model: str) -> set[tuple[str, str]]:
    """A model's own jobs, plus what aggregates every model: the reader kit (its images
    change, so it gets a new kit id) and the report."""
    return {(rule, model) for rule in PER_MODEL_RULES} | {
        ("report", ""), ("reader_kit", ""), ("reader_scores", "")}


def test_changing_one_models_lr_reruns_only_that_model(workdir):
    write_config(workdir, lambda c: c["models"]["vae"].update(lr=5e-4))
    try:
        assert stale_jobs(workdir) == model_jobs("vae")
    finally:
        write_config(workdir, lambda c: None)
    assert dry_run_jobs(workdir) == {}


def test_reordering_config_keys_reruns_nothing(workdir):
    text = yaml.safe_dump(yaml.safe_load(TEST_CONFIG.read_text()), sort_keys=False)
    reordered = yaml.safe_load(text)
    reordered["registration"] = dict(reversed(list(reordered["registration"].items())))
    (workdir / "config.yaml").write_text(yaml.safe_dump(reordered, sort_keys=False))
    try:
        assert dry_run_jobs(workdir) == {}
    finally:
        write_config(workdir, lambda c: None)


def test_editing_a_family_module_reruns_only_that_familys_models(workdir):
    module = workdir / "src/pipeline_lib/models/families/dcgan.py"
    original = module.read_text()
    module.write_text(original + "\n# edited\n")
    try:
        assert stale_jobs(workdir) == model_jobs("dcgan")
    finally:
        module.write_text(original)


def test_adding_a_model_runs_only_the_new_models_jobs(workdir):
    write_config(workdir, lambda c: c["models"].update(vae_wide={**c["models"]["vae"], "width": 16}))
    try:
        assert stale_jobs(workdir) == model_jobs("vae_wide")
    finally:
        write_config(workdir, lambda c: None)


def test_lint_is_clean(workdir):
    result = snakemake(workdir, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_reader_kit_ships_without_its_answer_key(workdir):
    kit = workdir / "results/reader_study/kit"
    key = pd.read_csv(workdir / "results/reader_study/answer_key.tsv", sep="\t")
    assert len(key) == 6 + 3 * 3  # n_real + n_per_model for each of the three models
    shipped = {p.name for p in kit.rglob("*")}
    assert set(key["image"]) <= shipped
    assert not any("answer" in name or name.endswith(".tsv") for name in shipped)


def test_dropped_in_reader_responses_reach_the_report(workdir):
    """Two scripted readers: A always right, B calls everything real -> known kappa and tables."""
    key = pd.read_csv(workdir / "results/reader_study/answer_key.tsv", sep="\t", dtype=str)
    responses = workdir / "reader_responses"
    responses.mkdir(exist_ok=True)
    readers = {"A": key["truth"].tolist(), "B": ["real"] * len(key)}
    for reader, answers in readers.items():
        pd.DataFrame({
            "kit_id": key["kit_id"], "reader_id": reader, "order_index": range(1, len(key) + 1),
            "image": key["image"], "answer": answers, "confidence": 3, "response_ms": 1500,
            "timed_out": 0,
        }).to_csv(responses / f"reader-{reader}.csv", index=False)
    try:
        result = snakemake(workdir, "--cores", "2", "all")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        scores = json.loads((workdir / "results/reader_study/scores.json").read_text())
        # A agrees with the truth, B answers one category only: Cohen's kappa is 0.
        assert json.dumps(scores).count("kappa") > 0
        html = (workdir / "results/report/index.html").read_text()
        assert "no reader responses yet" not in html
        assert "kappa" in html.lower()
        n_real = int((key["truth"] == "real").sum())
        readers_table = pd.read_csv(workdir / "results/reader_study/tables/readers.tsv", sep="\t")
        row_a = readers_table[readers_table["reader_id"] == "A"].iloc[0]
        row_b = readers_table[readers_table["reader_id"] == "B"].iloc[0]
        assert (row_a["TP"], row_a["FN"], row_a["FP"], row_a["TN"]) == (n_real, 0, 0, len(key) - n_real)
        assert (row_b["TP"], row_b["FN"], row_b["FP"], row_b["TN"]) == (n_real, 0, len(key) - n_real, 0)
        assert row_a["accuracy"] == pytest.approx(1.0)
    finally:
        shutil.rmtree(responses)


GOLDEN_METRICS = Path(__file__).parent / "data" / "golden_metrics"


def _close(actual, expected, rel: float, where: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), where
        for key in expected:
            _close(actual[key], expected[key], rel, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            _close(a, e, rel, f"{where}[{i}]")
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert actual == pytest.approx(expected, rel=rel, abs=1e-12, nan_ok=True), where
    else:
        assert actual == expected, where


def test_metrics_equal_the_recorded_run(workdir):
    """The metric files of the tiny config equal a recorded run's (tests/data/golden_metrics/).

    A refactor must leave them as they are. Pixel metrics (Table 1) are exact to 1e-9; the
    Inception- and CNN-feature metrics get 1e-4, because feature extraction reorders float sums
    with the thread count (seen: FID 380.58792 vs 380.58790 in a SLURM run of the same config).
    A deliberate change of results regenerates the files: copy results/metrics/*.json of this
    test's run (pytest --basetemp=/tmp/golden tests/test_workflow.py -k recorded) and say why
    in the commit.
    """
    produced = sorted(p.name for p in (workdir / "results/metrics").glob("*.json"))
    assert produced == sorted(p.name for p in GOLDEN_METRICS.glob("*.json"))
    for name in produced:
        actual = json.loads((workdir / "results/metrics" / name).read_text())
        expected = json.loads((GOLDEN_METRICS / name).read_text())
        rel = 1e-9 if name.count(".") == 1 else 1e-4
        _close(actual, expected, rel, name)
