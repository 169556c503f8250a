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

from pipeline_lib.core.rule_jobs import job_problems, rule_arguments

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


def toy_workflow(tmp_path: Path, rule_params: str, output: str = 'total="total.json"', job_script=None) -> Path:
    """A workflow of one rule run by the real adapter script, its job in a toy package."""
    (tmp_path / "toyjobs").mkdir()
    (tmp_path / "toyjobs" / "__init__.py").write_text(TOY_JOBS)
    (tmp_path / "numbers.txt").write_text("1 2 3.5\n")
    script = job_script or REPO / "workflow" / "scripts" / "rule_job.py"
    (tmp_path / "Snakefile").write_text(textwrap.dedent(f'''
        import sys
        sys.path[:0] = [{str(REPO / "src")!r}, {str(tmp_path)!r}]
        from pipeline_lib.core.rule_jobs import raise_rule_job_problems

        rule toy_total:
            input:
                numbers="numbers.txt",
            output:
                {output},
            log:
                "logs/toy_total.log",
            params:
                {rule_params}
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


def test_an_unknown_function_fails_the_dry_run_naming_the_rule_and_key(tmp_path):
    work = toy_workflow(tmp_path, 'job="toyjobs.totl_job",\n                factor=2,')
    result = run_snakemake(work, "-n")
    assert result.returncode != 0, result.stdout
    assert ("rule toy_total: params.job 'toyjobs.totl_job': __init__.py has no function 'totl_job'"
            in result.stdout + result.stderr), result.stdout[-2000:] + result.stderr[-2000:]


def test_a_rule_job_gets_inputs_outputs_params_and_threads_by_name(tmp_path):
    work = toy_workflow(tmp_path, 'job="toyjobs.total_job",\n                factor=2,')
    result = run_snakemake(work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((work / "total.json").read_text()) == {"total": 13.0, "threads": 1}
    assert (work / "logs" / "toy_total.log").exists()


def test_a_failing_dataset_job_fails_and_names_the_rule_in_its_reason(tmp_path):
    work = toy_workflow(tmp_path, 'job="toyjobs.failing_job",', output='"out.json"')
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
