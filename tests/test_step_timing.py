"""Train time limits from the measured speed: the measurement the trainer writes beside its
checkpoints (core/step_timing.py) and the minutes computed from it (core/resources.train_time_limit)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from pipeline_lib.core import resources
from pipeline_lib.core.settings import TrainerSettings, result_part
from pipeline_lib.core.step_timing import FILE_NAME, StepClock, read_timing, settings_key

from helpers.workflow import discovered_checkout

BLOCK = {"family": "vae", "width": 4, "latent_dim": 4, "batch_size": 8, "budget": {"steps": 40},
         "checkpoint_every": 10, "seed": 1}


# ---- the minutes ----------------------------------------------------------------------------------

def test_measured_speed_sizes_the_remaining_steps():
    limit = resources.train_time_limit(2, steps_left=10_000, seconds_per_step=0.6, measured=True)
    # 10,000 x 0.6 s x 1.3 = 130 min, + 20 min start-up and saving; not grown for the attempt
    assert limit.minutes == 150
    assert limit.source == "measured"
    assert limit.attempts_needed == 1


def test_an_estimate_grows_with_each_attempt():
    first = resources.train_time_limit(1, steps_left=10_000, seconds_per_step=0.6)
    second = resources.train_time_limit(2, steps_left=10_000, seconds_per_step=0.6)
    assert (first.minutes, first.source) == (150, "estimate")
    assert second.minutes == 225


def test_without_a_speed_the_budget_rule_of_before():
    assert resources.train_time_limit(1, budget_minutes=100).minutes == 130
    assert resources.train_time_limit(3, budget_minutes=100).minutes == 520
    assert resources.train_time_limit(2).minutes == 480
    assert resources.train_time_limit(1).source == "budget"


def test_short_runs_get_the_floor():
    assert resources.train_time_limit(1, steps_left=10, seconds_per_step=0.1, measured=True).minutes == \
        resources.TRAIN_FLOOR_MINUTES


def test_work_beyond_the_cap_runs_over_several_attempts():
    # 1,000,000 steps at 0.5 s: 10,833 min + 20 of work, under a 2-day cap (2,880 min)
    limit = resources.train_time_limit(1, steps_left=1_000_000, seconds_per_step=0.5, measured=True,
                                       cap_minutes=2880)
    assert limit.minutes == 2880
    # each capped attempt trains 2,860 min: ceil(10,833 / 2,860) = 4 attempts
    assert limit.attempts_needed == 4


def test_the_default_cap_is_a_week():
    limit = resources.train_time_limit(4, budget_minutes=5000)
    assert limit.minutes == 7 * 24 * 60


# ---- the measurement -----------------------------------------------------------------------------

def test_clock_leaves_out_the_warm_up():
    clock = StepClock(first_step=0, warmup=10)
    clock.synced(5, 100.0)  # inside the warm-up: slow first steps do not count
    assert clock.seconds_per_step() is None
    clock.synced(10, 101.0)
    clock.synced(30, 111.0)
    assert clock.seconds_per_step() == pytest.approx(0.5)
    assert clock.measured_steps == 20


def test_settings_key_ignores_the_time_only_budget_keys():
    plain = settings_key(BLOCK)
    assert settings_key({**BLOCK, "budget": {"steps": 40, "minutes": 5, "seconds_per_step": 2}}) == plain
    assert settings_key({**BLOCK, "width": 8}) != plain


@pytest.mark.parametrize("text", ["", "{", json.dumps({"format": "other"}),
                                  json.dumps({"format": "pipeline_lib-step-timing/1", "seconds_per_step": -1,
                                              "steps_done": 1, "target_steps": 2, "device": "cpu",
                                              "fingerprint": "x", "settings": "y", "measured_steps": 1})])
def test_an_unreadable_measurement_is_no_measurement(tmp_path, text):
    (tmp_path / FILE_NAME).write_text(text)
    assert read_timing(tmp_path) is None


def train(tmp_path, block, steps_this_call=None):
    from pipeline_lib.models.training import train_model

    images = np.random.default_rng(0).uniform(0, 1, (32, 16, 16)).astype(np.float32)
    return train_model("m", block, images, None, tmp_path / "w.pt", tmp_path / "l.csv", tmp_path / "ck",
                       steps_this_call=steps_this_call)


def test_trainer_writes_the_measurement_and_a_resume_keeps_it(tmp_path):
    block = {**BLOCK, "log_every": 2}
    assert train(tmp_path, block, steps_this_call=20) is None
    first = read_timing(tmp_path / "ck")
    assert first is not None
    assert (first.steps_done, first.target_steps, first.device) == (20, 40, "cpu")
    # the key the workflow computes from the run's result settings (common.smk: model_settings)
    assert first.settings == settings_key(result_part(block, TrainerSettings))
    assert (tmp_path / "ck" / first.fingerprint / "checkpoint.pt").exists()
    assert first.measured_steps == 10  # steps 10..20, after the 10 warm-up steps
    # a resumed attempt stopped before its own warm-up is over keeps the earlier speed
    assert train(tmp_path, block, steps_this_call=6) is None
    resumed = read_timing(tmp_path / "ck")
    assert resumed.steps_done == 26
    assert resumed.seconds_per_step == first.seconds_per_step
    # the finished run's measurement stays (a rerun on new data reuses the speed)
    assert train(tmp_path, block) is not None
    assert read_timing(tmp_path / "ck").steps_done == 40


def test_the_speed_estimate_changes_no_checkpoint(tmp_path):
    assert train(tmp_path, BLOCK, steps_this_call=14) is None
    estimated = {**BLOCK, "budget": {"steps": 40, "seconds_per_step": 3.0}}
    assert train(tmp_path, estimated, steps_this_call=14) is None
    assert len(list((tmp_path / "ck").glob("*/checkpoint.pt"))) == 1
    assert read_timing(tmp_path / "ck").steps_done == 28


def test_the_run_s_limit_comes_from_its_measurement_then_the_estimate_then_the_budget(tmp_path):
    from pipeline_lib.core.step_timing import CHECKPOINT_FILE, FORMAT, run_time_limit

    run = {"family": "vae", "budget": {"steps": 1000}, "seed": 0}
    budget = {"steps": 1000, "seconds_per_step": 30.0}
    record = {"format": FORMAT, "seconds_per_step": 60.0, "steps_done": 900, "target_steps": 1000,
              "device": "cuda (test)", "fingerprint": "abc", "settings": settings_key(run), "measured_steps": 50}
    (tmp_path / FILE_NAME).write_text(json.dumps(record))
    # measured, but the checkpoint is gone: every planned step is left
    no_checkpoint = run_time_limit(tmp_path, run, budget, 1000, 1, 10_000)
    assert no_checkpoint.source == "measured"
    assert no_checkpoint.minutes == resources.train_time_limit(1, steps_left=1000, seconds_per_step=60.0,
                                                               measured=True).minutes
    (tmp_path / "abc").mkdir()
    (tmp_path / "abc" / CHECKPOINT_FILE).write_bytes(b"")
    resumable = run_time_limit(tmp_path, run, budget, 1000, 1, 10_000)
    assert resumable.minutes == resources.train_time_limit(1, steps_left=100, seconds_per_step=60.0,
                                                           measured=True).minutes
    # another run's settings: the user's estimate for the planned steps
    other = run_time_limit(tmp_path, {**run, "seed": 1}, budget, 1000, 2, 10_000)
    assert other.source == "estimate"
    assert other.minutes == resources.train_time_limit(2, steps_left=1000, seconds_per_step=30.0).minutes
    # no estimate either: the budget's rule
    fallback = run_time_limit(tmp_path, {**run, "seed": 1}, {"steps": 1000}, 1000, 1, 10_000)
    assert fallback.source == "budget"
    # the site's cap bounds every source
    assert run_time_limit(tmp_path, run, budget, 10**6, 1, 120).minutes == 120


def test_reading_the_measurement_imports_no_torch(tmp_path):
    """The workflow reads it once per train job while it builds the DAG."""
    code = ("import sys; from pipeline_lib.core import resources, step_timing; "
            "step_timing.read_timing('.'); resources.train_time_limit(1); step_timing.run_time_limit('.', {}, {}, 10, 1, 60); "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "[]"


# ---- the workflow's train_runtime, through a dry run ----------------------------------------------

def test_dry_run_sizes_train_time_limits_from_the_measurement(tmp_path, monkeypatch):
    """bench/job_requests.py on a copy of the workflow: a measurement with the run's settings sizes
    the remaining steps; budget.seconds_per_step sizes a run never measured; the site's cap bounds both."""
    from pathlib import Path

    import yaml
    from snakemake.utils import validate

    from pipeline_lib.core.settings import canonical

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "bench"))
    from job_requests import job_requests

    config = yaml.safe_load((repo / "config.yaml").read_text())
    config["models"]["dcgan_kazuhiro"]["budget"].update(steps=1500, seconds_per_step=30.0)
    work = discovered_checkout(tmp_path, config, subjects=20)

    # the run's settings as the workflow hands them to the trainer (common.smk: model_settings)
    validate(config, schema=str(repo / "workflow/schemas/config.schema.yaml"), set_default=True)
    run = result_part(config["models"]["vae"], TrainerSettings)
    key = settings_key(canonical({**run, "seed": 0}))
    folder = work / "results/checkpoints/vae/seed0"
    (folder / "0123456789abcdef").mkdir(parents=True)
    (folder / "0123456789abcdef/checkpoint.pt").write_bytes(b"")
    measurement = {"format": "pipeline_lib-step-timing/1", "seconds_per_step": 60.0, "steps_done": 900,
                   "target_steps": 1000, "device": "cuda (test)", "fingerprint": "0123456789abcdef",
                   "settings": key, "measured_steps": 100}
    (folder / FILE_NAME).write_text(json.dumps(measurement))

    def train_minutes(attempt=1):
        rows, _ = job_requests(work, ["all"], [], attempt, work / "profiles/slurm")
        return {row["wildcards"]: row["runtime"] for row in rows if row["rule"] == "train"}

    monkeypatch.setenv("PIPELINE_SLURM_MAX_RUNTIME_MINUTES", "")
    minutes = train_minutes()
    # 100 steps left x 60 s x 1.3 + 20 min
    assert minutes["model=vae,seed=0"] == 150
    # 1,500 steps x 30 s x 1.3 + 20 min (an estimate: grows with the attempt)
    assert minutes["model=dcgan_kazuhiro,seed=0"] == 995
    assert train_minutes(2)["model=dcgan_kazuhiro,seed=0"] == math.ceil(995 * 1.5)

    # a measurement of other settings (another width) is not this run's speed: the budget rule
    (folder / FILE_NAME).write_text(json.dumps({**measurement, "settings": "0000000000000000"}))
    assert train_minutes()["model=vae,seed=0"] == int(10 * 1.1) + 20

    monkeypatch.setenv("PIPELINE_SLURM_MAX_RUNTIME_MINUTES", "600")
    assert train_minutes()["model=dcgan_kazuhiro,seed=0"] == 600
