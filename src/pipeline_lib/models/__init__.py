"""Registry of model families: family name == module name under this package.

Families are imported lazily, so the workflow can list a family's source file
(to rerun its models when it changes) without importing torch at parse time.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

from ..errors import InputError

_PACKAGE_DIR = Path(__file__).resolve().parent
_NOT_FAMILIES = {"__init__", "base", "layers"}


def available_families() -> list[str]:
    return sorted(p.stem for p in _PACKAGE_DIR.glob("*.py") if p.stem not in _NOT_FAMILIES)


def family_source(family: str) -> Path:
    """The module file that defines ``family`` (declared as an input of its train rule)."""
    path = _PACKAGE_DIR / f"{family}.py"
    if family in _NOT_FAMILIES or not path.is_file():
        raise InputError(f"unknown model family '{family}'; available: {available_families()}")
    return path


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
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                local = _PACKAGE_DIR / f"{node.module.split('.')[0]}.py"
                if local.is_file():
                    pending.append(local)
    return sorted(found)


def get_family(family: str):
    """The :class:`~pipeline_lib.models.base.GenerativeModel` subclass of ``family``."""
    family_source(family)
    module = importlib.import_module(f"{__name__}.{family}")
    return module.MODEL


def build_model(family: str, image_size: int, hparams: dict[str, Any], n_classes: int = 0,
                channels: int = 1):
    cls = get_family(family)
    return cls(image_size=image_size, channels=channels, n_classes=n_classes, **hparams)
