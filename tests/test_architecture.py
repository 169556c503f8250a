"""The library's structure stays true: stage packages import only in the allowed directions,
and no stage's modules import each other in a circle.

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
    # Cohort generators and test corpora are no stage: they build inputs and run stage 1 over them.
    # No stage lists them, so nothing in the pipeline depends on its own fixtures.
    "pipeline_lib.cohorts": {"pipeline_lib.core", "pipeline_lib.imaging", "pipeline_lib.cohorts"},
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
            module = _from_module(node, package)
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _from_module(node: ast.ImportFrom, package: list[str]) -> str:
    """The dotted module a ``from ... import`` names, a relative one resolved against ``package``."""
    if not node.level:
        return node.module or ""
    return ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))


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


def module_imports(path: Path, root: Path) -> set[str]:
    """The library modules ``path`` imports by name (top-level and inside functions): for
    ``from package import name`` the module ``package.name`` when there is one, else ``package``."""
    name = module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = _from_module(node, package)
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if _module_exists(f"{module}.{alias.name}", root) else module)
    return {module for module in found
            if module.startswith("pipeline_lib.") and module != name and _module_exists(module, root)}


def _stage(module: str) -> str:
    return ".".join(module.split(".")[:2])


def import_cycles(root: Path) -> list[str]:
    """Every circle of imports among the modules of one stage (or of the cohorts package), as
    ``a -> b -> a``; one per strongly connected group of modules."""
    graph = {}
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        graph[importer] = sorted(m for m in module_imports(path, root) if _stage(m) == _stage(importer))
    order, low, on_stack, stack, groups = {}, {}, set(), [], []

    def visit(module):  # Tarjan's strongly connected components
        order[module] = low[module] = len(order)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.get(module, ()):
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                groups.append(sorted(group))

    for module in graph:
        if module not in order:
            visit(module)
    return [" -> ".join(_circle(group, graph)) for group in sorted(groups)]


def _circle(group: list[str], graph: dict[str, list[str]]) -> list[str]:
    """One circle through the first module of a strongly connected ``group``."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first: the shortest way back to start
        following = []
        for module in frontier:
            for imported in graph[module]:
                if imported == start:
                    return paths[module] + [start]
                if imported in members and imported not in paths:
                    paths[imported] = paths[module] + [imported]
                    following.append(imported)
        frontier = following
    return group


def _copy_with(tmp_path: Path, file: str, planted: str) -> Path:
    """A copy of the library whose ``file`` has ``planted`` inside a function at its end."""
    copy = tmp_path / "pipeline_lib"
    shutil.copytree(LIBRARY, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / file
    target.write_text(target.read_text() + f"\n\ndef _planted():\n    {planted}\n")
    return copy


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
    # no stage depends on the cohort generators, and they stay out of the later stages
    ("from pipeline_lib.cohorts.demo_cohort import head_phantom", "imaging/registration.py"),
    ("from pipeline_lib.cohorts import hostile_corpus", "report/document.py"),
    ("from pipeline_lib.models import sampling", "cohorts/standin.py"),
])
def test_a_forbidden_import_is_caught(tmp_path, planted, file):
    problems = forbidden_imports(_copy_with(tmp_path, file, planted))
    assert len(problems) >= 1, problems
    assert all(file.replace("/", ".")[:-3] in p for p in problems), problems


def test_no_stage_imports_itself_in_a_circle():
    """Modules of one stage import each other one way only (reader_study's design and kit once
    imported each other): a circle means the two belong in one module or share a third."""
    assert import_cycles(LIBRARY) == []


@pytest.mark.parametrize("planted, file, circle", [
    # the circle reader_study had (design took kit's drawer, kit called design), planted back
    ("from pipeline_lib.reader_study.kit import kit_png", "reader_study/composition.py",
     "pipeline_lib.reader_study.composition -> pipeline_lib.reader_study.kit -> pipeline_lib.reader_study.composition"),
    # a relative import (ingest imports discovery)
    ("from . import ingest", "imaging/discovery.py",
     "pipeline_lib.imaging.discovery -> pipeline_lib.imaging.ingest -> pipeline_lib.imaging.discovery"),
    # through a third module (scoring imports kit, kit imports composition)
    ("from pipeline_lib.reader_study import scoring", "reader_study/composition.py",
     "pipeline_lib.reader_study.composition -> pipeline_lib.reader_study.scoring -> pipeline_lib.reader_study.kit -> "
     "pipeline_lib.reader_study.composition"),
    # the cohorts package is held to the same rule (running imports building)
    ("from pipeline_lib.cohorts.hostile_corpus.running import SALT", "cohorts/hostile_corpus/building.py",
     "pipeline_lib.cohorts.hostile_corpus.building -> pipeline_lib.cohorts.hostile_corpus.running -> "
     "pipeline_lib.cohorts.hostile_corpus.building"),
])
def test_an_import_circle_is_caught(tmp_path, planted, file, circle):
    assert import_cycles(_copy_with(tmp_path, file, planted)) == [circle]
