"""The one adapter of rules that name a library function (core/rule_jobs.py, scripts/rule_job.py):
its DAG-time check names the rule and key, and a real Snakemake job passes inputs, outputs, params
and threads by name under the guard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline_lib.core.rule_jobs import job_code_files, job_problems, rule_arguments, rule_job

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

TOY_JOBS = '''
import json
from pathlib import Path


def total_job(numbers: Path, *, out_total: Path, factor: int, threads: int | None = None) -> None:
    values = [float(v) for v in numbers.read_text().split()]
    out_total.write_text(json.dumps({"total": factor * sum(values), "threads": threads}))


def failing_job(numbers: Path, *, out: Path) -> None:
    raise ValueError("the toy job refuses")
'''


def toy_workflow(tmp_path: Path, job: str, more_params: str = "", output: str = 'total="total.json"') -> Path:
    """A workflow of one rule run by the real adapter script, its job in a toy package."""
    (tmp_path / "toyjobs").mkdir()
    (tmp_path / "toyjobs" / "__init__.py").write_text(TOY_JOBS)
    (tmp_path / "numbers.txt").write_text("1 2 3.5\n")
    script = REPO / "workflow" / "scripts" / "rule_job.py"
    (tmp_path / "Snakefile").write_text(textwrap.dedent(f'''
        import sys
        sys.path[:0] = [{str(REPO / "src")!r}, {str(tmp_path)!r}]
        from pipeline_lib.core.rule_jobs import raise_rule_job_problems, rule_job

        rule toy_total:
            input:
                numbers="numbers.txt",
            output:
                {output},
            log:
                "logs/toy_total.log",
            params:
                **rule_job({job!r}),{more_params}
            threads: 1
            script:
                {str(script)!r}

        raise_rule_job_problems(workflow.rules)
        '''))
    return tmp_path


def run_snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(work)]),
           "PATH": f"{SNAKEMAKE.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(SNAKEMAKE), "-s", str(work / "Snakefile"), "-d", str(work), "--cores", "1", *args],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.integration  # runs Snakemake
def test_an_unknown_function_fails_the_dry_run_naming_the_rule_and_key(tmp_path):
    work = toy_workflow(tmp_path, "toyjobs.totl_job", " factor=2,")
    result = run_snakemake(work, "-n")
    assert result.returncode != 0, result.stdout
    assert ("rule toy_total: params.job 'toyjobs.totl_job': __init__.py has no function 'totl_job'"
            in result.stdout + result.stderr), result.stdout[-2000:] + result.stderr[-2000:]


@pytest.mark.integration  # runs Snakemake
def test_a_rule_job_gets_inputs_outputs_params_and_threads_by_name(tmp_path):
    work = toy_workflow(tmp_path, "toyjobs.total_job", " factor=2,")
    result = run_snakemake(work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((work / "total.json").read_text()) == {"total": 13.0, "threads": 1}
    assert (work / "logs" / "toy_total.log").exists()


@pytest.mark.integration  # runs Snakemake
def test_a_failing_dataset_job_fails_and_names_the_rule_in_its_reason(tmp_path):
    work = toy_workflow(tmp_path, "toyjobs.failing_job", output='"out.json"')
    result = run_snakemake(work)
    assert result.returncode != 0
    log = (work / "logs" / "toy_total.log").read_text()
    assert "the toy job refuses" in log, log
    assert "in toy_total" in log, log
    assert not (work / "out.json").exists()


def problems_of(job: str, inputs=("numbers",), outputs=("total",), n_outputs=1, params=("job", "factor")):
    provided, shape = rule_arguments(inputs, outputs, n_outputs, params)
    return shape + job_problems("toy_total", job, provided)


def test_the_check_reads_the_real_library_functions_without_importing_them():
    provided, shape = rule_arguments(["samples", "images", "table", "network"], ["audit", "gallery"], 2,
                                     ["job", "settings"])
    assert shape == []
    assert job_problems("memorization_audit", "pipeline_lib.evaluation.memorization.memorization_job",
                        provided) == []


def test_the_check_names_each_argument_the_function_and_the_rule_disagree_on():
    job = "pipeline_lib.evaluation.memorization.memorization_job"
    problems = problems_of(job, inputs=["samples", "images", "table", "netwrk"], outputs=["audit", "gallery"],
                           n_outputs=2, params=["job", "settings", "extra"])
    assert problems == [
        f"rule toy_total: params.job '{job}': the function has no parameter 'netwrk' (the rule's input.netwrk "
        "or params.netwrk)",
        f"rule toy_total: params.job '{job}': the function has no parameter 'extra' (the rule's input.extra "
        "or params.extra)",
        f"rule toy_total: params.job '{job}': the rule gives no 'network' (expected as input.network or "
        "params.network)",
    ]


def test_the_check_refuses_a_missing_module_a_non_string_and_mixed_outputs():
    assert problems_of("pipeline_lib.evaluation.nowhere.some_job") == [
        "rule toy_total: params.job 'pipeline_lib.evaluation.nowhere.some_job': no Python module "
        "'pipeline_lib.evaluation.nowhere'"]
    assert problems_of(42)[0].startswith("rule toy_total: params.job must be a dotted function name")
    assert "name every output" in problems_of("toyjobs.total_job", outputs=["total"], n_outputs=2)[0]


@pytest.mark.integration  # runs Snakemake
def test_a_job_named_without_its_code_digest_fails_the_dry_run(tmp_path):
    work = toy_workflow(tmp_path, "toyjobs.total_job", " factor=2,")
    snakefile = work / "Snakefile"
    snakefile.write_text(snakefile.read_text().replace("**rule_job('toyjobs.total_job'),", "job='toyjobs.total_job',"))
    result = run_snakemake(work, "-n")
    assert result.returncode != 0, result.stdout
    assert ("rule toy_total: params.job without params.job_code: write **rule_job('toyjobs.total_job') in the "
            "rule's params, so that the rule reruns when its code changes" in result.stdout + result.stderr), (
        result.stdout[-2000:] + result.stderr[-2000:])


STAGE_MODULES = {
    "metric.py": "from toylib.stage.shared import helper\n\ndef metric_job(*, out):\n    pass\n",
    "shared.py": "def helper():\n    from toylib.stage import deeper\n",
    "deeper.py": "from toylib.core import io\n",
    "other.py": "def other_job(*, out):\n    pass\n",
}


def test_the_code_digest_follows_the_stage_modules_a_job_imports_and_nothing_else(tmp_path, monkeypatch):
    stage = tmp_path / "toylib" / "stage"
    (tmp_path / "toylib" / "core").mkdir(parents=True)
    stage.mkdir()
    for init in (tmp_path / "toylib", tmp_path / "toylib" / "core", stage):
        (init / "__init__.py").write_text("")
    (tmp_path / "toylib" / "core" / "io.py").write_text("")
    for name, text in STAGE_MODULES.items():
        (stage / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    job = "toylib.stage.metric.metric_job"
    assert [p.name for p in job_code_files(job)] == ["deeper.py", "metric.py", "shared.py"]
    before = rule_job(job)
    assert before["job"] == job
    (stage / "other.py").write_text("# edited\n")
    (tmp_path / "toylib" / "core" / "io.py").write_text("# edited\n")
    assert rule_job(job) == before, "an unrelated or a shared (core) module changed the digest"
    (stage / "deeper.py").write_text("from toylib.core import io  # edited\n")
    assert rule_job(job)["job_code"] != before["job_code"]
    assert rule_job("toylib.stage.nowhere.some_job")["job_code"] == ""


def test_every_evaluation_rule_digests_its_own_module():
    files = {job: [p.name for p in job_code_files(f"pipeline_lib.evaluation.{job}")]
             for job in ("intensity.intensity_job", "memorization.memorization_job", "diversity.original_diversity_job")}
    assert files["intensity.intensity_job"] == ["intensity.py"]
    assert "domain_features.py" in files["memorization.memorization_job"], files
    assert "memorization.py" not in files["diversity.original_diversity_job"], files
