"""Config errors before anything runs: each names its key, the DAG fails on them, no torch at parse time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_lib.core.config_check import config_problems
from pipeline_lib.models import builtin_families, get_family
from pipeline_lib.models.families.hparams.fields import declared_fields, types_of
from pipeline_lib.models.hyperparameters import check_model_blocks, declaration

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEMO = yaml.safe_load((REPO / "config.yaml").read_text())


def test_the_demo_config_has_no_problem():
    assert config_problems(DEMO, SCHEMA) == []
    assert check_model_blocks(DEMO["models"]) == []


def test_schema_violations_name_the_dotted_key():
    config = {**DEMO, "registration": {"grid": [8, 8]}, "ingest": {"max_voxels": "lots"}}
    problems = config_problems(config, SCHEMA)
    assert "registration.grid: [8, 8] is too short" in problems
    assert "ingest.max_voxels: 'lots' is not of type 'integer'" in problems


def test_dataset_problems_name_the_key():
    model = next(iter(DEMO["models"]))
    config = {**DEMO, "datasets": {"ballesteros": {"selection": {"mode": "central", "n": 10}, "size": [218, 182]},
                                   "han": {"axis": "sagittal", "selection": {"mode": "range", "first": 80}}},
              "models": {model: {**DEMO["models"][model], "dataset": "ballesteros"}}}
    problems = config_problems(config, SCHEMA)
    assert "datasets.han: selection mode range needs selection.last" in problems
    assert any(p.startswith(f"models.{model}.dataset: dataset 'ballesteros' has non-square slices (218x182)")
               for p in problems)
    config["models"][model]["dataset"] = "cohort"
    assert any(p.startswith(f"models.{model}.dataset: unknown dataset 'cohort'") for p in config_problems(config, SCHEMA))


def test_input_source_problems_name_the_key(tmp_path):
    assert config_problems({**DEMO, "input": {"source": str(tmp_path / "x")}}, SCHEMA) == [
        f"input.source: {tmp_path / 'x'} does not exist"]
    (tmp_path / "image.nii").write_bytes(b"")
    assert config_problems({**DEMO, "input": {"source": str(tmp_path / "image.nii")}}, SCHEMA) == [
        f"input.source: {tmp_path / 'image.nii'} must be a folder or a sample sheet (.tsv)"]
    assert config_problems({**DEMO, "input": {"source": str(tmp_path)}}, SCHEMA) == []


def test_section_checks_name_the_section():
    problems = config_problems({**DEMO, "ingest": {"min_voxel_mm": 5.0, "max_voxel_mm": 2.0}}, SCHEMA)
    assert problems == ["ingest: min_voxel_mm (5.0) must be below max_voxel_mm (2.0)"]


def test_model_blocks_are_checked_against_their_familys_hyperparameters():
    models = {
        "a": {"family": "vae", "budget": {"steps": 1}, "learnig_rate": 1e-4},
        "b": {"family": "vae", "budget": {"steps": 1}, "lr": "fast", "latent_dim": 2.5},
        "c": {"family": "dcgan", "budget": {"steps": 1}, "preset": "radford"},
        "d": {"family": "dfc_vae", "budget": {"steps": 1}, "perceptual": {"backbone": "vgg16", "layer": 3}},
        "e": {"family": "transformer", "budget": {"steps": 1}},
        "f": {"family": "cvae", "budget": {"step": 10}},
        "g": {"family": "wgan", "budget": {"steps": 1}, "clip_value": 0.02, "n_critic": 3},
    }
    problems = check_model_blocks(models)
    assert problems[0].startswith("models.a.learnig_rate: unknown key; the family's hyperparameters are "
                                  "batch_size, latent_dim, lr, recon_weight, width")
    assert "models.b.lr: must be a number (published default 0.0001), not 'fast'" in problems
    assert "models.b.latent_dim: must be an integer (published default 200), not 2.5" in problems
    assert "models.c.preset: must be one of han, kazuhiro, not 'radford'" in problems
    assert any(p.startswith("models.d.perceptual.layer: unknown key") for p in problems)
    assert any(p.startswith("models.e.family: unknown model family 'transformer'") for p in problems)
    assert any(p.startswith("models.f: budget.step: unknown key") for p in problems)
    assert not any(p.startswith("models.g") for p in problems)


def test_augment_blocks_name_the_key():
    model = next(iter(DEMO["models"]))
    good = {**DEMO["models"][model], "augment": {"flip_lr": 0.5, "rotate_deg": 5, "translate_px": 2, "scale": 0.05}}
    assert config_problems({**DEMO, "models": {model: good}}, SCHEMA) == []
    assert check_model_blocks({model: good}) == []
    bad = {**DEMO["models"][model], "augment": {"flip_lr": 2, "shear": 1}}
    assert any(p.startswith(f"models.{model}.augment") for p in config_problems({**DEMO, "models": {model: bad}}, SCHEMA))
    assert check_model_blocks({model: bad})[0].startswith(f"models.{model}: augment.shear: unknown key")


#: A value of the wrong type for each kind of declared hyperparameter.
WRONG = {int: "many", float: "fast", str: 3, bool: "yes"}


@pytest.mark.parametrize("family", builtin_families())
def test_every_family_rejects_an_unknown_key_and_a_wrong_type(family):
    """What the DAG reads (the family's source, no torch) is the family's own declaration, and its
    check names the model block and the key for a misspelt key and for a value of the wrong type."""
    declared = declaration(family)
    assert declared is get_family(family).HYPERPARAMETERS
    hints = types_of(declared)
    key = next(f.name for f in declared_fields(declared) if hints[f.name] in WRONG)
    block = {"family": family, "budget": {"steps": 1}, f"{key}_typo": 1, key: WRONG[hints[key]]}
    problems = check_model_blocks({"m": block})
    assert len(problems) == 2, problems
    assert problems[0].startswith(f"models.m.{key}_typo: unknown key; the family's hyperparameters are "), problems
    assert problems[1].startswith(f"models.m.{key}: must be "), problems
    assert problems[1].endswith(f", not {WRONG[hints[key]]!r}"), problems
    assert check_model_blocks({"m": {"family": family, "budget": {"steps": 1}, key: declared().__dict__[key]}}) == []


def test_the_dag_imports_no_torch():
    imports = ("import pipeline_lib.core.config_check, pipeline_lib.models.hyperparameters, "
               "pipeline_lib.imaging.discovery, pipeline_lib.core.settings, pipeline_lib.reader_study.scoring")
    code = f"{imports}; import sys; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ------------------------------------------------------------------ through Snakemake


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    from helpers.workflow import copy_checkout
    return copy_checkout(tmp_path_factory, "config-errors")


def _dry_run(work: Path, *args: str) -> subprocess.CompletedProcess:
    from helpers.workflow import snakemake
    return snakemake(work, "-n", "--cores", "1", *args, timeout=300)


@pytest.mark.integration
def test_dry_run_fails_on_a_misspelled_hyperparameter(checkout, tmp_path):
    config = yaml.safe_load((checkout / "config.yaml").read_text())
    config["models"]["vae"]["learnig_rate"] = 1e-4
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(config))
    result = _dry_run(checkout, "--configfile", str(tmp_path / "typo.yaml"))
    assert result.returncode != 0
    assert "models.vae.learnig_rate: unknown key" in result.stdout + result.stderr
    assert f"from {tmp_path / 'typo.yaml'}" in result.stdout + result.stderr


@pytest.mark.integration
def test_dry_run_fails_on_a_missing_input_folder(checkout, tmp_path):
    result = _dry_run(checkout, "--config", f"input={{source: {tmp_path / 'nowhere'}}}")
    assert result.returncode != 0
    assert f"input.source: {tmp_path / 'nowhere'} does not exist" in result.stdout + result.stderr


@pytest.mark.integration
def test_own_config_file_replaces_the_demo_config(checkout, tmp_path):
    """--configfile is the way to run one's own config: nothing of config.yaml is merged in."""
    own = {"models": {"mine": {"family": "vae", "budget": {"steps": 5}}}}
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(own))
    result = _dry_run(checkout, "--configfile", str(tmp_path / "own.yaml"))
    assert result.returncode == 0, result.stderr
    stats = (result.stdout + result.stderr).split("Job stats:", 1)[1]
    assert re.search(r"^train\s+1$", stats, re.M), stats
    demo_models = set(yaml.safe_load((checkout / "config.yaml").read_text())["models"])
    assert not any(f"models/{name}/" in result.stdout for name in demo_models - {"mine"})
