"""Registry of model families: family name == module name under this package.

Families are imported lazily, so the workflow can list a family's source file
(to rerun its models when it changes) without importing torch at parse time.
"""

from __future__ import annotations

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


def get_family(family: str):
    """The :class:`~pipeline_lib.models.base.GenerativeModel` subclass of ``family``."""
    family_source(family)
    module = importlib.import_module(f"{__name__}.{family}")
    return module.MODEL


def build_model(family: str, image_size: int, hparams: dict[str, Any], n_classes: int = 0,
                channels: int = 1):
    cls = get_family(family)
    return cls(image_size=image_size, channels=channels, n_classes=n_classes, **hparams)
