"""Safe by default: the salt for real data, an owner-only private/, typed --config values, layered
config files, and the config mistakes that must stop the dry run (no model, a layout that fits
nothing). Unit tests first, then cheap dry runs (and one discovery job) through Snakemake."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
import yaml

from pipeline_lib.core.config_check import NO_MODEL, config_problems
from pipeline_lib.core.overrides import convert_text, typed_overrides
from pipeline_lib.core.private import make_owner_only, private_folder, write_owner_only
from pipeline_lib.core.errors import InputError
from pipeline_lib.imaging.discovery import discover_inputs, layout_problem
from pipeline_lib.imaging.pseudonym import (DEMO_SALT, SALT_FILE, STANDIN_MARKER, is_public_salt, project_salt,
                                            salt_notice)
from pipeline_lib.models.hyperparameters import typed_hyperparameters

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
DEMO = yaml.safe_load((REPO / "config.yaml").read_text())


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


class umask:
    """The process umask set to ``value`` inside the block (the usual 022 of a shared system)."""

    def __init__(self, value: int):
        self.value = value

    def __enter__(self):
        self.previous = os.umask(self.value)

    def __exit__(self, *exc):
        os.umask(self.previous)


# ------------------------------------------------------------------ the salt


def test_published_salts_are_public():
    assert is_public_salt(None)
    assert is_public_salt("")
    assert is_public_salt(DEMO_SALT)
    for preset in (REPO / "presets").glob("*.yaml"):
        salt = yaml.safe_load(preset.read_text())["privacy"]["pseudonym_salt"]
        assert is_public_salt(salt), preset.name
    assert SCHEMA["properties"]["privacy"]["properties"]["pseudonym_salt"]["default"] == DEMO_SALT
    assert not is_public_salt("a-secret-of-our-own")


def test_real_data_gets_a_private_salt_generated_once_and_reused(tmp_path):
    source, private = tmp_path / "export", tmp_path / "private"
    source.mkdir()
    with umask(0o022):
        salt, origin = project_salt(DEMO_SALT, source, private)
    assert origin == "generated"
    assert re.fullmatch(r"[0-9a-f]{64}", salt)
    assert mode(private) == 0o700
    assert mode(private / SALT_FILE) == 0o600
    assert salt not in salt_notice(origin, private)
    assert str(private / SALT_FILE) in salt_notice(origin, private)
    again, origin = project_salt("han-2018-preset-salt-change-me", source, private)
    assert (again, origin) == (salt, "private")
    assert salt_notice(origin) is None
    assert project_salt(None, source, private)[0] == salt
    # a salt of one's own wins; the demo and the stand-in cohorts keep the public one
    assert project_salt("ours", source, private) == ("ours", "config")
    assert project_salt(DEMO_SALT, "demo", tmp_path / "unused") == (DEMO_SALT, "config")
    (tmp_path / STANDIN_MARKER).write_text("{}")
    assert project_salt(DEMO_SALT, source, tmp_path / "unused") == (DEMO_SALT, "config")
    assert not (tmp_path / "unused").exists()


def test_an_emptied_salt_file_is_an_error_not_a_new_salt(tmp_path):
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / SALT_FILE).write_text("\n")
    with pytest.raises(ValueError, match="pseudonym_salt is empty: delete it"):
        project_salt(None, tmp_path, tmp_path / "private")


# ------------------------------------------------------------------ private/


def test_private_tree_is_owner_only_whatever_the_umask(tmp_path):
    data = tmp_path / "data.nii.gz"
    data.write_text("x")
    os.chmod(data, 0o644)
    with umask(0o022):
        private = private_folder(tmp_path / "private")
        (private / "qc").mkdir()
        (private / "qc" / "ingest.tsv").write_text("subject\n")
        (private / "staging" / "sub-0123456789").mkdir(parents=True)
        os.symlink(data, private / "staging" / "sub-0123456789" / "input")
        assert mode(private / "qc") == 0o755  # what the umask gives, before
        make_owner_only(private / "qc" / "ingest.tsv", private / "staging")
        assert write_owner_only(private / "note", "text")
        assert not write_owner_only(private / "note", "other")
    assert mode(private) == mode(private / "qc") == mode(private / "staging" / "sub-0123456789") == 0o700
    assert mode(private / "qc" / "ingest.tsv") == mode(private / "note") == 0o600
    assert (private / "note").read_text() == "text"
    assert mode(data) == 0o644  # a link's target, the input data, is never touched


# ------------------------------------------------------------------ config checks


def test_a_config_without_a_model_is_an_error():
    assert NO_MODEL in config_problems({k: v for k, v in DEMO.items() if k != "models"}, SCHEMA_PATH)
    disabled = {name: {**block, "enabled": False} for name, block in DEMO["models"].items()}
    assert NO_MODEL in config_problems({**DEMO, "models": disabled}, SCHEMA_PATH)
    assert NO_MODEL.startswith("models: no model to train")


def test_a_layout_that_fits_nothing_names_what_it_expects_and_no_path(tmp_path):
    (tmp_path / "DOE^JANE").mkdir()
    (tmp_path / "DOE^JANE" / "MRN0042 T1.nii.gz").write_bytes(b"")
    problem = layout_problem({"source": str(tmp_path), "layout": "brats"})
    assert problem.startswith("input.layout: brats recognises no input")
    assert "<case>_t1.nii.gz" in problem
    assert "1 of them NIfTI" in problem
    assert "DOE" not in problem
    assert "MRN" not in problem
    assert str(tmp_path) not in problem
    assert "IXI<id>" in layout_problem({"source": str(tmp_path), "layout": "ixi"})
    assert layout_problem({"source": str(tmp_path), "layout": "auto"}) is None
    # the discovery job (a tree past the DAG-time check's limit) names the expected names too
    with pytest.raises(InputError, match=r"no subject of layout brats found; the layout expects <case>_t1\.nii\.gz"):
        discover_inputs(tmp_path, "a-salt-of-ours", REPO / "workflow/schemas/samples.schema.yaml",
                        layout={"layout": "brats"})
    (tmp_path / "Case_1").mkdir()
    (tmp_path / "Case_1" / "Case_1_t1.nii.gz").write_bytes(b"")
    assert layout_problem({"source": str(tmp_path), "layout": "brats"}) is None
    assert layout_problem({"source": str(tmp_path), "layout": "pattern", "pattern": r"(?P<subject>Case_\d+)_t1"}) is None


# ------------------------------------------------------------------ typed --config values


def test_command_line_text_gets_the_schema_types():
    # what Snakemake's --config parser hands over: nested scalars are text
    given = {"sampling": {"n": "64", "n_per_class": "8"}, "registration": {"grid": ["32", "32", "16"]},
             "slicing": {"clip_percentile": "99.5"}, "models": {"vae": {"amp": "true", "seeds": ["0", "1"]}},
             "privacy": {"pseudonym_salt": "12345"}, "on_bad_input": "skip", "demo": {"n_subjects": 6}}
    typed, problems = typed_overrides(given, SCHEMA)
    assert problems == []
    assert typed["sampling"] == {"n": 64, "n_per_class": 8}
    assert typed["registration"]["grid"] == [32, 32, 16]
    assert typed["slicing"]["clip_percentile"] == 99.5
    assert typed["models"]["vae"] == {"amp": True, "seeds": [0, 1]}
    assert typed["privacy"]["pseudonym_salt"] == "12345"
    assert typed["on_bad_input"] == "skip"


def test_text_that_is_not_the_schema_type_is_a_problem_naming_the_key():
    _, problems = typed_overrides({"sampling": {"n": "sixty-four"}, "registration": {"grid": ["32", "x", "16"]}},
                                  SCHEMA)
    assert problems == ["sampling.n: --config gave 'sixty-four', which is not an integer",
                        "registration.grid.1: --config gave 'x', which is not an integer"]
    assert convert_text("1e-3", ["number"]) == 0.001
    assert convert_text("null", ["integer", "null"]) is None
    assert convert_text("null", ["string", "null"]) is None
    assert convert_text("none", ["string", "null"]) == "none"
    with pytest.raises(ValueError, match="an integer or null"):
        convert_text("2.5", ["integer", "null"])


def test_family_hyperparameters_get_the_type_of_their_published_default():
    typed, problems = typed_hyperparameters({"vae": {"lr": "2e-3", "latent_dim": "16", "family": "vae"}},
                                            {"vae": {"family": "vae"}})
    assert problems == []
    assert typed == {"vae": {"lr": 0.002, "latent_dim": 16, "family": "vae"}}
    _, problems = typed_hyperparameters({"vae": {"latent_dim": "many"}}, {"vae": {"family": "vae"}})
    assert problems == ["models.vae.latent_dim: --config gave 'many', which is not an integer"]


# ------------------------------------------------------------------ through Snakemake


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    from helpers.workflow import copy_checkout
    return copy_checkout(tmp_path_factory, "safe-defaults")


def _snakemake(work: Path, *args: str):
    from helpers.workflow import snakemake
    with umask(0o022):
        return snakemake(work, "--cores", "1", *args, timeout=300)


def _output(result) -> str:
    return result.stdout + result.stderr  # Snakemake prints errors on stdout


def _jobs(result) -> dict[str, int]:
    from helpers.workflow import job_counts
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return job_counts(result.stdout + result.stderr)


@pytest.mark.integration
def test_typed_command_line_values_pass_and_bad_ones_fail_naming_the_key(checkout):
    assert _jobs(_snakemake(checkout, "-n", "--config", "sampling={n: 32, n_per_class: 8}",
                            "models={vae: {lr: 0.002, latent_dim: 8}}"))["sample"] == 5
    failed = _snakemake(checkout, "-n", "--config", "sampling={n: sixty}")
    assert failed.returncode != 0
    assert "sampling.n: --config gave 'sixty', which is not an integer" in _output(failed)


@pytest.mark.integration
def test_config_files_layer_in_order(checkout, tmp_path):
    """config.yaml first, then a small file: every setting of config.yaml stays, the file's win."""
    small = tmp_path / "small.yaml"
    small.write_text(yaml.safe_dump({"models": {"vae": {"enabled": False}}, "sampling": {"n": 32}}))
    layered = _jobs(_snakemake(checkout, "-n", "--configfile", str(checkout / "config.yaml"), str(small)))
    base = _jobs(_snakemake(checkout, "-n"))
    assert layered["train"] == base["train"] - 1
    assert layered["report"] == base["report"] == 1
    # the small file alone replaces config.yaml: no model is left, which is an error saying so
    numbers = tmp_path / "numbers.yaml"
    numbers.write_text(yaml.safe_dump({"sampling": {"n": 32}}))
    alone = _snakemake(checkout, "-n", "--configfile", str(numbers))
    assert alone.returncode != 0
    assert "models: no model to train" in _output(alone)
    assert f"from {numbers}" in _output(alone)


@pytest.mark.integration
def test_a_layout_that_fits_nothing_fails_the_dry_run(checkout, tmp_path):
    source = tmp_path / "QUOLLBERG^PHILOMENA"
    source.mkdir()
    (source / "MRN0042731 T1.nii.gz").write_bytes(b"")
    # the case: the Han et al. preset (layout brats) on a folder that is not BraTS
    failed = _snakemake(checkout, "-n", "--configfile", str(checkout / "presets/han_2018.yaml"),
                        "--config", f"input={{source: {source}}}")
    assert failed.returncode != 0
    assert "input.layout: brats recognises no input" in _output(failed)
    assert "<case>_t1.nii.gz" in _output(failed)
    assert "MRN0042731" not in failed.stdout + failed.stderr


@pytest.mark.integration
def test_real_data_discovery_uses_an_owner_only_private_salt(checkout, tmp_path):
    """Under umask 022: the preset's change-me salt is replaced by a generated one, written 0600 to
    private/, reused by the next run and found nowhere under results/, logs/ or .snakemake/;
    everything discovery writes to private/ is owner-only."""
    source = tmp_path / "export"
    for name in ("a", "b"):
        (source / name).mkdir(parents=True)
        (source / name / "t1.nii.gz").write_bytes(b"")
    salt_arg = "privacy={pseudonym_salt: kazuhiro-2018-preset-salt-change-me}"
    run = _snakemake(checkout, "--until", "discover_inputs", "--config", f"input={{source: {source}}}", salt_arg)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "pseudonyms use a random salt generated now into private/pseudonym_salt" in _output(run)
    salt_file = checkout / "private" / SALT_FILE
    salt = salt_file.read_text().strip()
    assert mode(checkout / "private") == 0o700
    assert mode(salt_file) == 0o600
    for path in [checkout / "private", *(checkout / "private").rglob("*")]:
        if not path.is_symlink():
            assert mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert (checkout / "private/linkage.tsv").is_file()
    assert (checkout / "private/qc").is_dir()
    for folder in ("results", "logs", ".snakemake"):
        for path in (checkout / folder).rglob("*"):
            if path.is_file():
                assert salt not in path.read_bytes().decode("utf-8", "ignore"), path
    again = _snakemake(checkout, "-n", "--until", "discover_inputs", "--config", f"input={{source: {source}}}",
                       salt_arg)
    assert again.returncode == 0
    assert "generated now" not in _output(again)
    assert salt_file.read_text().strip() == salt
