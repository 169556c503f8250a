"""Stage 3, models: the family registry, the trainer and the sampler.

A family is one module ``models/families/<family>.py`` exposing ``MODEL``, a
:class:`~pipeline_lib.models.base.GenerativeModel` subclass. Families are
imported lazily, so the workflow can list a family's source files (to rerun its
models when they change) without importing torch at parse time.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

from pipeline_lib.core.errors import InputError

_PACKAGE_DIR = Path(__file__).resolve().parent
_FAMILIES_DIR = _PACKAGE_DIR / "families"
_PACKAGE = __name__


def available_families() -> list[str]:
    return sorted(p.stem for p in _FAMILIES_DIR.glob("*.py") if p.stem != "__init__")


def family_source(family: str) -> Path:
    """The module file that defines ``family`` (declared as an input of its train rule)."""
    path = _FAMILIES_DIR / f"{family}.py"
    if family == "__init__" or not family.isidentifier() or not path.is_file():
        raise InputError(f"unknown model family '{family}'; available: {available_families()}")
    return path


def _module_file(dotted: str) -> Path | None:
    """The file of a ``pipeline_lib.models`` module (a package's ``__init__`` excluded), else None."""
    if not dotted.startswith(_PACKAGE + "."):
        return None
    path = _PACKAGE_DIR.joinpath(*dotted[len(_PACKAGE) + 1:].split(".")).with_suffix(".py")
    return path if path.is_file() else None


def family_sources(family: str) -> list[Path]:
    """The family's module and every module of this package it imports, directly or not.

    These are the train rule's code inputs: editing a module reruns exactly the
    models whose behaviour it can change (e.g. vae.py also reruns dfc_vae). Found by
    parsing imports, so torch is not imported while Snakemake builds the DAG.
    """
    pending, found = [family_source(family)], []
    while pending:
        path = pending.pop()
        if path in found:
            continue
        found.append(path)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                candidates = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                pending.extend(p for p in map(_module_file, candidates) if p is not None)
    return sorted(found)


def get_family(family: str):
    """The :class:`~pipeline_lib.models.base.GenerativeModel` subclass of ``family``."""
    family_source(family)
    module = importlib.import_module(f"{_PACKAGE}.families.{family}")
    return module.MODEL


def build_model(family: str, image_size: int, hparams: dict[str, Any], n_classes: int = 0,
                channels: int = 1):
    cls = get_family(family)
    return cls(image_size=image_size, channels=channels, n_classes=n_classes, **hparams)
