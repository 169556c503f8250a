"""The whole workflow through ``--profile profiles/slurm`` on a real single-node SLURM cluster.

tests/slurm/ installs (if missing) and starts munge, MariaDB, slurmdbd, slurmctld and
slurmd with two fake GPUs; the daemons started here are stopped at the end. The
workflow runs on a cut-down integration config with only partition names (a site file,
as a user would write it) and the status polling interval changed; every rule goes
through sbatch, and sacct tells what each job asked for and got.

Without root (or without SLURM and apt) these tests skip, saying why, unless
PIPELINE_SLURM_TESTS=require (CI), where they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from slurm import cluster

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SNAKEMAKE = VENV_BIN / "snakemake"
PROFILE = REPO / "profiles" / "slurm"
TEST_CONFIG = Path(__file__).parent / "data" / "config.integration.yaml"
# The whole workflow takes a few minutes on a 2-core machine; snakemake gets SIGINT
# after this many seconds (it ignores SIGTERM while waiting on sacct).
WORKFLOW_TIMEOUT_S = 900
# The plugin's log folder names the rule (rule_<rule>) or the group and its rules
# (group_<group>_<rule>_<rule>...).
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: (\S+/slurm_logs/((?:rule|group)_\w+)/\S*)\)")

pytestmark = pytest.mark.integration


# ---- helpers ---------------------------------------------------------------------------

def job_env(**variables: str) -> dict[str, str]:
    """The caller's environment without site settings, with the venv's tools first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_SLURM_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    env.update(variables)
    return env


def run_with_profile(workdir: Path, *args: str, timeout_s: int = WORKFLOW_TIMEOUT_S,
                     env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """snakemake --profile <slurm profile> in ``workdir``, polling sacct every few seconds."""
    # The checkout's own profile where there is one (it may hold a site.yaml), else ours.
    profile = "profiles/slurm" if (workdir / "profiles/slurm").is_dir() else str(PROFILE)
    cmd = ["timeout", "-s", "INT", "-k", "60", str(timeout_s), str(SNAKEMAKE),
           "--profile", profile, "--slurm-init-seconds-before-status-checks", "2", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env or job_env(),
                          timeout=timeout_s + 120)


def submissions(output: str) -> dict[str, tuple[str, str]]:
    """SLURM job id -> (label, SLURM log path) of every sbatch submission in snakemake's output.

    The label is ``rule_<rule>`` for a single job, ``group_<group>_<rules>`` for a group job.
    """
    return {job: (label, log) for job, log, label in SUBMITTED.findall(output)}


def runs_rule(label: str, rule: str) -> bool:
    """Whether the submission with this label ran jobs of ``rule``."""
    if label == f"rule_{rule}":
        return True
    return label.startswith("group_") and f"_{rule}_" in f"{label}_"


def accounting(job_ids) -> dict[str, dict[str, str]]:
    """sacct's view of the given jobs (allocations only, not steps)."""
    fields = ["JobID", "Partition", "ReqTRES", "AllocTRES", "Timelimit", "State"]
    result = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids),
                             "-o", ",".join(fields)], capture_output=True, text=True, check=True)
    rows = [dict(zip(fields, line.split("|"))) for line in result.stdout.splitlines() if line]
    return {row["JobID"]: row for row in rows}


def finished_jobs(output: str) -> Counter:
    """Rule -> number of jobs that snakemake reported finished, the target rule left out."""
    finished = Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", output))
    finished.pop("all", None)
    return finished


#: The Inception feature rules, on a GPU unless the site says feature_gpus: false.
FEATURE_RULES = ("real_features", "model_features", "fid_samples")


def gpu_rules() -> set[str]:
    """Rules that the profile sends to a GPU."""
    from snakemake.profiles import ProfileConfigFileParser

    with open(PROFILE / "config.yaml") as fh:
        parsed = ProfileConfigFileParser().parse(fh)
    return {entry.split(":")[0] for entry in parsed["set-resources"] if ":gpu=" in entry}


# ---- the profile, without a cluster ----------------------------------------------------------

def render_profile() -> dict:
    from snakemake.profiles import ProfileConfigFileParser

    with open(PROFILE / "config.yaml") as fh:
        return ProfileConfigFileParser().parse(fh)


def test_profile_without_site_values_uses_cluster_defaults(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("PIPELINE_SLURM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no profiles/slurm/site.yaml here
    profile = render_profile()
    assert profile["executor"] == "slurm"
    assert not any("slurm_partition" in e or "slurm_account" in e for e in profile["default-resources"])
    assert "runtime=60 * 2 ** (attempt - 1)" in profile["default-resources"]
    assert {"train:gpu=1", "sample:gpu=1"} <= set(profile["set-resources"])
    assert {f"{rule}:gpu=1" for rule in FEATURE_RULES} <= set(profile["set-resources"])
    assert "slurm-requeue" not in profile
    assert int(profile["retries"]) >= 1


def test_profile_refuses_a_missing_site_file(monkeypatch, tmp_path):
    """A site file named in PIPELINE_SLURM_SITE that is not there is an error naming it, not the defaults."""
    monkeypatch.setenv("PIPELINE_SLURM_SITE", str(tmp_path / "absent.yaml"))
    with pytest.raises(Exception, match=r"PIPELINE_SLURM_SITE names .*absent\.yaml, which is not a file"):
        render_profile()


def test_a_site_can_keep_the_feature_rules_on_cpus(monkeypatch, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"feature_gpus": False}))
    monkeypatch.setenv("PIPELINE_SLURM_SITE", str(site))
    gpu = {entry.split(":")[0] for entry in render_profile()["set-resources"] if ":gpu=" in entry}
    assert gpu == {"train", "sample"}


def test_profile_takes_site_file_and_environment_overrides(monkeypatch, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"account": "lab", "cpu_partition": "all", "gpu_partition": "a100q",
                                    "gpu_model": "a100", "requeue": True}))
    monkeypatch.setenv("PIPELINE_SLURM_SITE", str(site))
    monkeypatch.setenv("PIPELINE_SLURM_ACCOUNT", "other_lab")
    profile = render_profile()
    # Quoted: a partition named like a Python builtin ("all") must stay a string.
    assert "slurm_partition='all'" in profile["default-resources"]
    assert "slurm_account='other_lab'" in profile["default-resources"]
    assert {"train:slurm_partition='a100q'", "train:gpu_model='a100'",
            "sample:slurm_partition='a100q'"} <= set(profile["set-resources"])
    assert profile["slurm-requeue"] == "True"


def test_site_caps_the_time_limits_through_the_environment(monkeypatch, tmp_path):
    """The site's max_runtime_minutes reaches the workflow's train_runtime (common.smk) as a variable."""
    # empty = unset for the profile; monkeypatch restores the variable the render exports
    monkeypatch.setenv("PIPELINE_SLURM_MAX_RUNTIME_MINUTES", "")
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"max_runtime_minutes": 2880}))
    monkeypatch.setenv("PIPELINE_SLURM_SITE", str(site))
    render_profile()
    assert os.environ["PIPELINE_SLURM_MAX_RUNTIME_MINUTES"] == "2880"
    site.write_text(yaml.safe_dump({"max_runtime_minutes": "two days"}))
    monkeypatch.setenv("PIPELINE_SLURM_MAX_RUNTIME_MINUTES", "")
    with pytest.raises(Exception, match="max_runtime_minutes must be a number of minutes"):
        render_profile()


def test_profile_rejects_unknown_site_keys(monkeypatch, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("partition: gpu\n")
    monkeypatch.setenv("PIPELINE_SLURM_SITE", str(site))
    with pytest.raises(Exception, match="unknown key.*partition"):
        render_profile()


def test_runtime_grows_with_each_attempt():
    """Snakemake evaluates profile resources as Python with ``attempt`` = 1, 2, 3 ..."""
    entry = next(e for e in render_profile()["default-resources"] if e.startswith("runtime="))
    expression = entry.split("=", 1)[1]
    assert [eval(expression, {"attempt": a}) for a in (1, 2, 3)] == [60, 120, 240]


# ---- the real cluster ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slurm_cluster():
    """The local test cluster, running for this module; what it starts stops afterwards."""
    reason = cluster.unavailable_reason()
    if reason:
        if cluster.required():
            pytest.fail(f"{cluster.REQUIRE_VARIABLE}=require but {reason}")
        pytest.skip(reason)
    with cluster.running_cluster() as started:
        yield started


def slurm_config() -> dict:
    """The integration config cut to what SLURM changes (where and how each job runs, not what it
    computes): two phantoms besides the wrong-geometry one and the corrupt file, one small model,
    no brain extraction (the local workflow test runs it). Each job here costs sbatch, a queue on
    the 2-core test node and the executor's status polling, so the job count decides the time."""
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["demo"]["n_subjects"] = 2
    config["preprocessing"] = {"brain_extraction": "none"}
    config["registration"]["on_poor_fit"] = "keep"
    config["models"] = {"vae": {**config["models"]["vae"], "budget": {"steps": 10}, "checkpoint_every": 10}}
    return config


@pytest.fixture(scope="module")
def workflow_run(slurm_cluster, tmp_path_factory):
    """The whole workflow, run once through the SLURM profile in a copy of the checkout."""
    work = tmp_path_factory.mktemp("slurm") / "checkout"
    work.mkdir()
    shutil.copy(REPO / "Snakefile", work)
    for folder in ("workflow", "src", "envs", "profiles"):
        shutil.copytree(REPO / folder, work / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "site.yaml"))
    (work / "config.yaml").write_text(yaml.safe_dump(slurm_config()))
    # The user's way of naming partitions: profiles/slurm/site.yaml.
    (work / "profiles/slurm/site.yaml").write_text(yaml.safe_dump(
        {"cpu_partition": cluster.CPU_PARTITION, "gpu_partition": cluster.GPU_PARTITION}))
    result = run_with_profile(work, "all")
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"exit {result.returncode}:\n{output[-6000:]}"
    jobs = submissions(output)
    return {"work": work, "output": output, "jobs": jobs, "sacct": accounting(jobs)}


def test_every_rule_ran_as_a_slurm_job(workflow_run):
    """Each job that ran was (part of) an sbatch job; test_a_second_call... shows none is left."""
    work, jobs, sacct = workflow_run["work"], workflow_run["jobs"], workflow_run["sacct"]
    finished = finished_jobs(workflow_run["output"])
    assert {"demo_cohort", "discover_inputs", "ingest", "register", "slice_dataset", "train",
            "sample", "metrics_model", "report"} <= set(finished)
    # the config's 2 phantoms, the wrong-geometry phantom and the corrupt file
    assert finished["ingest"] == finished["register"] == 4
    labels = Counter(label for label, _ in jobs.values())
    for rule, count in finished.items():
        assert any(runs_rule(label, rule) for label in labels), f"no sbatch job ran {rule}"
        if not any(label.startswith("group_") and runs_rule(label, rule) for label in labels):
            assert labels[f"rule_{rule}"] == count, rule
    assert not re.search(r"^localrule (?!all:)", workflow_run["output"], re.M)
    assert {row["State"] for row in sacct.values()} == {"COMPLETED"}
    assert set(sacct) == set(jobs)
    report = (work / "results/report/index.html").read_text()
    # a job killed on every attempt would be recorded, not retried into success: none was
    assert 'id="failed-runs"' not in report


def test_gpu_rules_asked_for_a_gpu_on_the_gpu_partition(workflow_run):
    jobs, sacct = workflow_run["jobs"], workflow_run["sacct"]
    assert gpu_rules() == {"train", "sample", *FEATURE_RULES}
    gpu_labels = {f"rule_{rule}" for rule in gpu_rules()}
    submitted = {label for label, _ in jobs.values()}
    assert {"rule_train", "rule_sample", "rule_real_features", "rule_model_features"} <= submitted, submitted
    for job, (label, _) in jobs.items():
        row = sacct[job]
        if label in gpu_labels:
            assert "gres/gpu=1" in row["ReqTRES"], row
            assert "gres/gpu=1" in row["AllocTRES"], row
            assert row["Partition"] == cluster.GPU_PARTITION, row
        else:
            assert "gres/gpu" not in row["ReqTRES"], (label, row)
            assert row["Partition"] == cluster.CPU_PARTITION, (label, row)


def test_gpu_jobs_saw_their_gpu_in_cuda_visible_devices(workflow_run):
    """SLURM sets CUDA_VISIBLE_DEVICES for GPU jobs only; every job that picks a device logs what it
    saw. Jobs without a GPU see none ("<none>": hidden by core.jobs in case the node does not
    confine devices; "<unset>" for jobs Snakemake ran on the submitting host)."""
    logs = workflow_run["work"] / "logs"
    # one train and one sample log per run (model and seed): logs/<rule>/<model>/seed<seed>.log;
    # Inception features of each run and of each real split: logs/fid/...
    train_logs = sorted((logs / "train").rglob("*.log")) + sorted((logs / "sample").rglob("*.log"))
    config = slurm_config()
    runs = sum(len(block.get("seeds", config.get("training", {}).get("seeds", [0]))) for block in config["models"].values())
    assert runs == 1
    assert len(train_logs) == 2 * runs, train_logs
    feature_logs = sorted((logs / "fid").rglob("*.features.log")) + sorted((logs / "fid/real").rglob("*.log"))
    assert feature_logs
    gpu_logs = train_logs + feature_logs
    for log in gpu_logs:
        devices = re.findall(r"CUDA_VISIBLE_DEVICES=(\S+)", log.read_text())
        assert devices, log
        assert set(devices) <= {"0", "1"}, (log, devices)
    for log in set(logs.rglob("*.log")) - set(gpu_logs):
        assert set(re.findall(r"CUDA_VISIBLE_DEVICES=(\S+)", log.read_text())) <= {"<unset>", "<none>"}, log


def test_a_second_call_has_nothing_to_submit(workflow_run):
    result = run_with_profile(workflow_run["work"], "-n", timeout_s=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Nothing to be done" in result.stdout + result.stderr


FLAKY = """
rule flaky:
    output: "done.txt"
    log: "logs/flaky.log"
    shell:
        "if [ ! -e attempt-1-failed ]; then touch attempt-1-failed; "
        "echo 'failing on purpose' > {log}; exit 3; fi; echo ok > {output}"
"""


def test_a_failed_job_names_its_log_and_is_retried_with_more_runtime(slurm_cluster, tmp_path):
    """Partition from the environment this time; retries and runtime growth from the profile."""
    (tmp_path / "Snakefile").write_text(FLAKY)
    result = run_with_profile(tmp_path, "--retries", "1", timeout_s=300,
                              env=job_env(PIPELINE_SLURM_CPU_PARTITION=cluster.CPU_PARTITION))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    jobs = submissions(output)
    assert len(jobs) == 2, output[-4000:]
    first, second = sorted(jobs, key=int)
    # The failure message points at the failed job's SLURM log, which is kept.
    failed_log = jobs[first][1]
    assert re.search(rf"SLURM-job '{first}' failed.*", output)
    assert output.count(failed_log) >= 2
    assert Path(failed_log).is_file()
    sacct = accounting(jobs)
    assert sacct[first]["State"] == "FAILED"
    assert sacct[second]["State"] == "COMPLETED"
    assert (sacct[first]["Timelimit"], sacct[second]["Timelimit"]) == ("01:00:00", "02:00:00")
    assert {row["Partition"] for row in sacct.values()} == {cluster.CPU_PARTITION}
    assert (tmp_path / "done.txt").read_text() == "ok\n"


# A guarded per-subject rule (core/guard.py through workflow/rules/guard.smk, as the pipeline's
# rules use it): one subject SIGKILLed (the test hook), one allocating past its memory request, one
# sleeping past its time limit; each dies on both attempts.
GUARDED = """
include: "{guard_rules}"

rule all:
    input: expand("subjects/{{subject}}", subject=["killed", "hog", "sleeper"])

rule subject:
    output: directory("subjects/{{subject}}")
    log: "logs/{{subject}}.log"
    resources:
        attempt=job_attempt,
        mem_mb=400,
        runtime=1,
    script: "work.py"
"""
GUARDED_WORK = """
import time

from pipeline_lib.core.guard import guard_subject_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0])


def work():
    if snakemake.wildcards.subject == "hog":
        held = []
        while True:  # 20 MB a step, every page written, until something stops it (slower than the
            held.append(b"\\x01" * 20_000_000)  # guard's polls, which a busy machine delays)
            time.sleep(0.1)
    time.sleep(600)


guard_subject_job(snakemake, work, stage="the test's work")
"""


def test_guarded_jobs_killed_on_every_attempt_leave_failed_rows(slurm_cluster, tmp_path):
    """The configured retries reach the cluster job (sbatch --export), the first attempt fails and is
    retried, the last one records why: a kill, the memory request, the time limit."""
    (tmp_path / "Snakefile").write_text(GUARDED.format(guard_rules=REPO / "workflow/rules/guard.smk"))
    (tmp_path / "work.py").write_text(GUARDED_WORK)
    result = run_with_profile(tmp_path, "--retries", "1", timeout_s=600, env=job_env(
        PIPELINE_SLURM_CPU_PARTITION=cluster.CPU_PARTITION, PYTHONPATH=str(REPO / "src"),
        PIPELINE_TEST_KILL_JOBS="subject:subject=killed@kill"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    jobs = submissions(output)
    assert len(jobs) == 6, output[-4000:]
    states = Counter(row["State"] for row in accounting(jobs).values())
    assert states == {"FAILED": 3, "COMPLETED": 3}, states
    reasons = {}
    for subject in ("killed", "hog", "sleeper"):
        status = yaml.safe_load((tmp_path / "subjects" / subject / "status.json").read_text())
        assert status["status"] == "failed"
        assert status["subject"] == subject
        reasons[subject] = status["reason"]
        assert "attempt 2 of 2" in (tmp_path / "logs" / f"{subject}.log").read_text()
    assert reasons["killed"].startswith("signal 9 (SIGKILL) from outside in the test's work"), reasons
    assert re.fullmatch(r"killed: out of memory at 0\.[45] GB \(the guard's limit 0\.4 GB\) in the test's work",
                        reasons["hog"]), reasons
    assert re.fullmatch(r"time limit \d+ s reached in the test's work", reasons["sleeper"]), reasons
