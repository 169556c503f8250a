"""The source files a piece of code runs: a module and the modules of chosen packages that it
imports, directly or not. Rules list them (or their digest) so that editing the code reruns
exactly the jobs it can change; found by parsing imports, so nothing is imported while Snakemake
builds the DAG."""

from __future__ import annotations

import ast
from pathlib import Path


def module_file(dotted: str, package: str, package_dir: Path) -> Path | None:
    """The file of module ``dotted`` inside ``package`` (found at ``package_dir``; a package's
    ``__init__`` excluded), else None."""
    if not dotted.startswith(package + "."):
        return None
    path = package_dir.joinpath(*dotted[len(package) + 1:].split(".")).with_suffix(".py")
    return path if path.is_file() else None


def imported_sources(first: Path, roots: list[tuple[str, Path]]) -> list[Path]:
    """``first`` and every module of the ``roots`` (package name, its folder) that it imports,
    directly or not, at module level or inside a function (``from … import``, the form the package
    uses), sorted."""
    pending, found = [first], []
    while pending:
        path = pending.pop()
        if path in found:
            continue
        found.append(path)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                candidates = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                pending.extend(p for c in candidates for package, where in roots
                               if (p := module_file(c, package, where)) is not None)
    return sorted(found)
