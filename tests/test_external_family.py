"""A model family from outside the package: the documented example (docs/examples/external-family)
is pip-installed into a folder of its own, found through its entry point or a package.module:Class
reference, checked at DAG time like a built-in family and trained through the trainer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline_lib.models import ENTRY_POINT_GROUP, available_families, family_sources, get_family
from pipeline_lib.models.hyperparameters import check_model_blocks, declaration
from pipeline_lib.models.sampling import draw_samples
from pipeline_lib.models.training import load_trained_model, train_model

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "external-family"
SIZE = 16


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example family installed with pip into its own folder (its dependencies are this
    environment's), as `pip install` would put it beside the pipeline."""
    tmp = tmp_path_factory.mktemp("external")
    source = tmp / "source"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-build-isolation",
                    "--no-deps", "--target", str(target), str(source)], check=True, timeout=300)
    return target


@pytest.fixture
def on_path(installed, monkeypatch) -> Path:
    monkeypatch.syspath_prepend(str(installed))
    yield installed
    for name in [m for m in sys.modules if m == "pixel_gaussian" or m.startswith("pixel_gaussian.")]:
        del sys.modules[name]


def _images(n: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    blob = np.exp(-(((yy - 0.5) / 0.25) ** 2 + ((xx - 0.5) / 0.25) ** 2))
    return np.clip(blob + rng.normal(0, 0.05, (n, SIZE, SIZE)), 0, 1).astype(np.float32)


def test_the_family_is_unknown_until_installed():
    assert "pixel_gaussian" not in available_families()
    (problem,) = check_model_blocks({"g": {"family": "pixel_gaussian", "budget": {"steps": 1}}})
    assert problem.startswith("models.g.family: unknown model family 'pixel_gaussian'")
    assert ENTRY_POINT_GROUP in problem  # says how an external family is made known


def test_an_installed_family_is_checked_at_dag_time(on_path):
    assert "pixel_gaussian" in available_families()
    good = {"family": "pixel_gaussian", "budget": {"steps": 5}, "lr": 0.1, "init": "black"}
    direct = {**good, "family": "pixel_gaussian.model:PixelGaussian"}
    assert check_model_blocks({"g": good, "h": direct}) == []
    problems = check_model_blocks({"g": {**good, "min_sdt": 0.1, "lr": "fast", "init": "white"}})
    assert any(p.startswith("models.g.min_sdt: unknown key; the family's hyperparameters are "
                            "batch_size, init, lr, min_std") for p in problems)
    assert "models.g.lr: must be a number (published default 0.05), not 'fast'" in problems
    assert "models.g.init: must be one of mid_grey, black, not 'white'" in problems
    # the train rule's code inputs: the family's module and the pipeline modules it builds on
    sources = family_sources("pixel_gaussian")
    assert {path.name for path in sources} == {"model.py", "hparams.py", "base.py", "fields.py"}
    assert next(p for p in sources if p.name == "model.py") == on_path.resolve() / "pixel_gaussian" / "model.py"


def _checked_without_torch(family: str, search_path: list[Path]) -> str:
    """What the DAG-time check says of a block giving ``family`` a bad ``lr``, run where torch is
    not imported yet; fails if the check imported it."""
    code = ("import sys; from pipeline_lib.models.hyperparameters import check_model_blocks; "
            f"print(check_model_blocks({{'g': {{'family': {family!r}, 'budget': {{'steps': 1}}, 'lr': 'x'}}}})); "
            "print('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*search_path, REPO / "src"]))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    checked, torch_imported = done.stdout.splitlines()
    assert torch_imported == "False", checked
    return checked


def test_the_dag_reads_a_family_declared_apart_without_importing_torch(on_path):
    assert "models.g.lr: must be a number" in _checked_without_torch("pixel_gaussian", [on_path])
    # what the source names is what the class uses
    assert declaration("pixel_gaussian") is get_family("pixel_gaussian").HYPERPARAMETERS


def test_a_family_with_a_defaults_mapping_still_works(tmp_path, monkeypatch):
    """Families written before typed declarations set a DEFAULTS mapping (and CHOICES): it is read
    from the source at DAG time, and the family gets a declaration made from it."""
    package = tmp_path / "oldpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "family.py").write_text(textwrap.dedent("""
        import torch
        from pipeline_lib.models.base import GenerativeModel

        class Old(GenerativeModel):
            family = "old"
            DEFAULTS = {"lr": 0.1, "batch_size": 4, "init": "zero", "weights": None}
            CHOICES = {"init": ("zero", "one")}

            def __init__(self, image_size, channels=1, n_classes=0, **hparams):
                super().__init__(image_size, channels, n_classes, **hparams)
                self.level = torch.nn.Parameter(torch.zeros(1))
    """))
    assert "models.g.lr: must be a number (published default 0.1), not 'x'" in _checked_without_torch(
        "oldpkg.family:Old", [tmp_path])
    monkeypatch.syspath_prepend(str(tmp_path))
    problems = check_model_blocks({"g": {"family": "oldpkg.family:Old", "budget": {"steps": 1}, "init": "two"}})
    assert problems == ["models.g.init: must be one of zero, one, not 'two'"]
    model = get_family("oldpkg.family:Old")(16, lr=0.5, weights="w.pt")
    assert (model.hp.lr, model.hp.init) == (0.5, "zero")
    assert model.hparams == {"lr": 0.5, "batch_size": 4, "init": "zero", "weights": "w.pt"}


def test_bad_external_references_name_the_key(on_path):
    models = {
        "a": {"family": "no_such_package.model:Thing", "budget": {"steps": 1}},
        "b": {"family": "pixel_gaussian.model:Missing", "budget": {"steps": 1}},
        "c": {"family": "pixel_gaussian.model:torch", "budget": {"steps": 1}},
        "d": {"family": "pixel_gaussian.model:Pixel Gaussian", "budget": {"steps": 1}},
    }
    a, b, c, d = check_model_blocks(models)
    assert a == ("models.a.family: model family 'no_such_package.model:Thing': cannot import "
                 "no_such_package.model (ModuleNotFoundError: No module named 'no_such_package')")
    assert b == ("models.b.family: model family 'pixel_gaussian.model:Missing': pixel_gaussian.model.Missing "
                 "must be a subclass of pipeline_lib.models.base.GenerativeModel, found nothing")
    assert c.startswith("models.c.family: model family 'pixel_gaussian.model:torch': pixel_gaussian.model.torch "
                        "must be a subclass")
    assert "module 'torch'" in c
    assert d.startswith("models.d.family: model family 'pixel_gaussian.model:Pixel Gaussian' is not a family name")


@pytest.mark.parametrize("family", ["pixel_gaussian", "pixel_gaussian.model:PixelGaussian"])
def test_an_external_family_trains_through_the_trainer(on_path, tmp_path, family):
    images = _images()
    block = {"family": family, "budget": {"steps": 40}, "seed": 0, "batch_size": 8, "lr": 0.05}
    train_model("g", block, images, None, tmp_path / "weights.pt", tmp_path / "losses.csv", tmp_path / "ck",
                device="cpu")
    losses = pd.read_csv(tmp_path / "losses.csv")
    assert len(losses) == 40
    assert losses["nll"].iloc[-5:].mean() < losses["nll"].iloc[:5].mean() - 0.3
    model, summary = load_trained_model(tmp_path / "weights.pt", device="cpu")
    assert summary["family"] == family
    assert isinstance(model, get_family("pixel_gaussian"))
    samples = draw_samples(model, 64, seed=1)
    assert samples.shape == (64, SIZE, SIZE)
    # it learnt the data: the mean sample is the blob (bright centre, dark corners)
    mean = samples.mean(0)
    assert mean[SIZE // 2, SIZE // 2] > mean[0, 0] + 0.3
    np.testing.assert_array_equal(samples, draw_samples(model, 64, seed=1))


def test_code_inputs_follow_the_external_package_own_imports(tmp_path, monkeypatch):
    """An edit to a helper module of the family's own package reruns its models too."""
    package = tmp_path / "extpkg"
    (package / "nets").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets" / "__init__.py").write_text("")
    (package / "nets" / "blocks.py").write_text("WIDTH = 4\n")
    (package / "unused.py").write_text("")
    (package / "family.py").write_text(textwrap.dedent("""
        from extpkg.nets.blocks import WIDTH
        from pipeline_lib.models.families.vae import VAE

        class WideVAE(VAE):  # inherits its table: the DAG check imports it to read it
            DEFAULTS = {**VAE.DEFAULTS, "width": WIDTH}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    (problem,) = check_model_blocks({"w": {"family": "extpkg.family:WideVAE", "budget": {"steps": 1}, "widht": 8}})
    assert problem.startswith("models.w.widht: unknown key; the family's hyperparameters are batch_size")
    sources = family_sources("extpkg.family:WideVAE")
    assert {p.name for p in sources} == {"family.py", "blocks.py", "vae.py", "base.py", "losses.py", "fields.py"}
    assert {package.resolve() / "family.py", package.resolve() / "nets" / "blocks.py"} <= set(sources)


@pytest.mark.integration
def test_the_workflow_plans_and_refuses_external_families(installed, tmp_path_factory):
    """Through Snakemake: a config naming an installed family plans its run (the train job itself waits
    on the discovery checkpoint); a bad reference stops the dry run naming the key."""
    from helpers.workflow import SNAKEMAKE, TEST_CONFIG, copy_checkout

    work = copy_checkout(tmp_path_factory, "external-family")
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["models"] = {"pg": {"family": "pixel_gaussian", "budget": {"steps": 5}, "batch_size": 8}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")]),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def dry_run() -> subprocess.CompletedProcess:
        return subprocess.run([str(SNAKEMAKE), "-s", str(work / "Snakefile"), "--directory", str(work), "-n",
                               "--cores", "1", "-p", "--forceall", "results/models/pg/seed0/weights.pt"],
                              capture_output=True, text=True, timeout=300, env=env)

    planned = dry_run()
    assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr[-3000:]
    assert "Job stats" in planned.stdout
    config["models"]["pg"]["family"] = "pixel_gaussian.model:PixelGausian"
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    refused = dry_run()
    assert refused.returncode != 0
    assert "models.pg.family: model family 'pixel_gaussian.model:PixelGausian'" in refused.stdout + refused.stderr
