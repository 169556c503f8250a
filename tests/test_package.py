"""The package on its own: pyproject.toml declares what the library imports (in ranges the pinned set
satisfies), and `pip install .` into a clean virtual environment gives a working `brainmri-gen`
command that generates images from an exported model.

The machine is offline (and torch is gigabytes), so the clean environment gets the already installed
distributions through a .pth file and pip installs with --no-index: pip must still find every
declared dependency among them, so a missing or misspelled one fails the install."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline_lib.models import export
from pipeline_lib.models.training import train_model

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
COMMAND = "brainmri-gen"
#: Imported by the library, installed with --no-deps from requirements-nodeps.txt (their declared
#: dependencies are GUI/rendering packages); brain_extraction.require() names the install command.
NO_DEPS_MODULES = {"deepbet", "brainextractor"}
#: Declared but never imported by the library, and why they are needed all the same.
NOT_IMPORTED = {"dcm2niix": "run as a program by imaging/ingest.py",
                "einops": "imported by monai's attention blocks (ddpm, ldm)"}


def _requirements() -> list[Requirement]:
    declared = PROJECT["dependencies"] + [r for extra in PROJECT.get("optional-dependencies", {}).values()
                                          for r in extra]
    return [Requirement(text) for text in declared]


def _pins(*files: str) -> dict[str, str]:
    pins = {}
    for name in files:
        for line in (REPO / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                requirement = Requirement(line)
                (version,) = [spec.version for spec in requirement.specifier if spec.operator == "=="]
                pins[canonicalize_name(requirement.name)] = version
    return pins


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> files of src/pipeline_lib importing it (at any depth, in functions too)."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "src" / "pipeline_lib").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "pipeline_lib":
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_imported_package_is_declared():
    declared = {canonicalize_name(r.name) for r in _requirements()}
    distributions = importlib.metadata.packages_distributions()
    nodeps = _pins("requirements-nodeps.txt")
    imports = _third_party_imports()
    assert {"numpy", "torch", "yaml", "cv2"} <= set(imports)  # the walk sees imports inside functions too
    undeclared = {}
    for module, files in imports.items():
        providers = {canonicalize_name(d) for d in distributions.get(module, [])}
        if module in NO_DEPS_MODULES:
            assert providers & set(nodeps), f"{module} is not installed from requirements-nodeps.txt"
        elif not providers & declared:
            undeclared[module] = (sorted(providers) or "no installed distribution", sorted(files)[:2])
    assert not undeclared, f"imported but not in pyproject.toml's dependencies: {undeclared}"
    imported = {canonicalize_name(d) for m in imports for d in distributions.get(m, [])}
    core = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    assert core - imported == set(NOT_IMPORTED), "a declared dependency is no longer used (or not listed here)"


def test_declared_ranges_hold_the_pinned_versions():
    pins = _pins("requirements.txt", "requirements-nodeps.txt")
    for requirement in _requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is declared in pyproject.toml but not pinned in requirements"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"pyproject.toml asks {requirement}, requirements pin {name}=={pins[name]}"
    torch = next(r for r in PROJECT["dependencies"] if r.startswith("torch"))
    assert "==" not in torch
    assert "+" not in torch  # never a build of its own: the pinned one stays


def _source_copy(where: Path, replace: tuple[str, str] | None = None) -> Path:
    """pyproject.toml and src/ (pip builds in the source folder; the checkout stays clean)."""
    where.mkdir(parents=True)
    text = (REPO / "pyproject.toml").read_text()
    (where / "pyproject.toml").write_text(text.replace(*replace) if replace else text)
    shutil.copytree(REPO / "src", where / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return where


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory) -> Path:
    """A new virtual environment that sees this one's distributions except pipeline_lib itself."""
    tmp = tmp_path_factory.mktemp("clean-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True, timeout=120)
    present = tmp / "present"
    present.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if "pipeline_lib" not in entry.name and not entry.name.endswith(".pth"):
            (present / entry.name).symlink_to(entry)
    (site,) = (tmp / "venv" / "lib").glob("python3*/site-packages")
    (site / "present.pth").write_text(f"{present}\n")
    return tmp / "venv"


def _pip_install(venv: Path, source: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                           "--no-index", "--no-build-isolation", "--quiet", str(source)],
                          capture_output=True, text=True, timeout=600)


def _clean_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")} | {
        "OMP_NUM_THREADS": "1"}


def test_a_missing_dependency_fails_the_install(clean_venv, tmp_path):
    source = _source_copy(tmp_path / "typo", replace=('"jsonschema",', '"jsonschemaa",'))
    result = _pip_install(clean_venv, source)
    assert result.returncode != 0
    assert "jsonschemaa" in result.stderr
    assert not (clean_venv / "bin" / COMMAND).exists()


def test_pip_install_then_the_command_generates(clean_venv, tmp_path):
    result = _pip_install(clean_venv, _source_copy(tmp_path / "source"))
    assert result.returncode == 0, result.stdout + result.stderr
    command, env = clean_venv / "bin" / COMMAND, _clean_env()

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(command), *args], capture_output=True, text=True, timeout=300, env=env,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    assert run("--version").stdout.strip() == f"{COMMAND} {PROJECT['version']}"
    where = subprocess.run([str(clean_venv / "bin" / "python"), "-c", "import pipeline_lib; print(pipeline_lib.__file__)"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, check=True).stdout.strip()
    assert Path(where).is_relative_to(clean_venv)  # the installed copy, not this checkout's

    run_dir = tmp_path / "results" / "models" / "tiny" / "seed0"
    rng = np.random.default_rng(0)
    block = {"family": "vae", "width": 4, "latent_dim": 4, "batch_size": 8, "budget": {"steps": 3}, "seed": 0}
    train_model("tiny", block, rng.random((16, 16, 16), dtype=np.float32), None, run_dir / "weights.pt",
                run_dir / "losses.csv", tmp_path / "ck", device="cpu")
    exported = export.export_model(run_dir, tmp_path / "exported")

    run("generate", str(exported), "-n", "5", "--seed", "2", "--format", "npy", "--out", "samples")
    images = np.load(tmp_path / "samples" / "images.npy")
    model, description = export.load_model(exported, device="cpu")
    np.testing.assert_array_equal(images, export.generate(model, description, 5, seed=2)[0])
    assert run("info", str(exported)).stdout.startswith("model")
