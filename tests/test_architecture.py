"""The library's structure stays true: stage packages import only in the allowed directions.

docs/ARCHITECTURE.md states the rules; this test enforces them on every import in
``src/pipeline_lib`` (top-level and inside functions, absolute and relative).
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "src" / "pipeline_lib"

#: Where each part of the library may import from (besides itself and the standard library).
#: Matching is by the longest prefix of the module's dotted name.
ALLOWED = {
    "pipeline_lib.core": {"pipeline_lib.core"},
    "pipeline_lib.imaging": {"pipeline_lib.core", "pipeline_lib.imaging"},
    # The trainer and sampler drive families through the registry.
    "pipeline_lib.models": {"pipeline_lib.core", "pipeline_lib.models"},
    # A family builds on the base class, shared layers and losses, and other families; it never
    # reaches the trainer, the sampler or anything downstream.
    "pipeline_lib.models.families": {"pipeline_lib.core", "pipeline_lib.models.base",
                                     "pipeline_lib.models.layers", "pipeline_lib.models.losses",
                                     "pipeline_lib.models.families"},
    # Evaluation sees arrays, tables and feature files: no trainer, no family.
    "pipeline_lib.evaluation": {"pipeline_lib.core", "pipeline_lib.evaluation"},
    "pipeline_lib.reader_study": {"pipeline_lib.core", "pipeline_lib.reader_study"},
    # The report reads every stage's outputs.
    "pipeline_lib.report": {"pipeline_lib.core", "pipeline_lib.report", "pipeline_lib.evaluation",
                            "pipeline_lib.reader_study", "pipeline_lib.imaging"},
}
#: Only these parts may render HTML (import the standard library's html module).
HTML_RENDERERS = ("pipeline_lib.report",)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in ``path``, relative ones resolved; for
    ``from package import name`` both the package and ``package.name`` are listed."""
    name = module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _part(module: str, table) -> str | None:
    matches = [prefix for prefix in table if module == prefix or module.startswith(prefix + ".")]
    return max(matches, key=len) if matches else None


def _module_exists(module: str, root: Path) -> bool:
    relative = Path(*module.split(".")[1:])
    return (root / relative).with_suffix(".py").is_file() or (root / relative / "__init__.py").is_file()


def forbidden_imports(root: Path) -> list[str]:
    """Every import in the library at ``root`` that breaks ALLOWED or HTML_RENDERERS."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        part = _part(importer, ALLOWED)
        for line, module in imported_modules(path, root):
            where = f"{path.relative_to(root.parent)}:{line}"
            if module == "html" and _part(importer, {p: None for p in HTML_RENDERERS}) is None:
                problems.append(f"{where}: {importer} renders HTML (imports html); only report/ may")
            if not module.startswith("pipeline_lib.") or not _module_exists(module, root):
                continue
            if part is None:
                continue  # the package root and entry points may use any stage
            if _part(module, ALLOWED[part]) is None and _part(module, {part: None}) is None:
                problems.append(f"{where}: {importer} imports {module}")
    return problems


def test_every_module_belongs_to_a_stage():
    loose = [p.name for p in LIBRARY.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert loose == [], f"modules outside the stage packages: {loose}"


def test_imports_follow_the_allowed_directions():
    assert forbidden_imports(LIBRARY) == []


@pytest.mark.parametrize("planted, file", [
    ("from pipeline_lib.models.training import train_model", "evaluation/fid.py"),
    ("from pipeline_lib.evaluation import fid", "imaging/registration.py"),
    ("from pipeline_lib.models import sampling", "models/families/vae.py"),
    ("import html", "evaluation/distribution.py"),
    ("from ...report import html", "models/families/dcgan.py"),
])
def test_a_forbidden_import_is_caught(tmp_path, planted, file):
    copy = tmp_path / "pipeline_lib"
    shutil.copytree(LIBRARY, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / file
    target.write_text(target.read_text() + f"\n\ndef _planted():\n    {planted}\n")
    problems = forbidden_imports(copy)
    assert len(problems) >= 1 and all(file.replace("/", ".")[:-3] in p for p in problems), problems
