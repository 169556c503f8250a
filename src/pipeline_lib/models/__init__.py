"""Stage 3, models: the family registry, the trainer and the sampler.

A built-in family is one module ``models/families/<family>.py`` exposing ``MODEL``, a
:class:`~pipeline_lib.models.base.GenerativeModel` subclass, named in a model block by its
module name (``family: vae``). A family from another package is named either

* by an entry point of the group :data:`ENTRY_POINT_GROUP` that its package declares
  (``family: <entry point name>``), or
* directly, as ``family: package.module:Class`` (``package.module`` alone means its ``MODEL``).

Built-in families are imported lazily, so the workflow can list a family's source files (to rerun
its models when they change) without importing torch at parse time; an external family is
imported when it is first looked up (docs/external-family.md).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import Any

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.source_files import imported_sources

_PACKAGE_DIR = Path(__file__).resolve().parent
_FAMILIES_DIR = _PACKAGE_DIR / "families"
_PACKAGE = __name__
#: The entry-point group through which installed packages add model families.
ENTRY_POINT_GROUP = "pipeline_lib.families"


def builtin_families() -> list[str]:
    """The families shipped in ``models/families/`` (one module each)."""
    return sorted(p.stem for p in _FAMILIES_DIR.glob("*.py") if p.stem != "__init__")


def available_families() -> list[str]:
    """Every family a model block may name: the built-in ones, then those of installed entry points."""
    return builtin_families() + sorted(set(_entry_points(tuple(sys.path))) - set(builtin_families()))


@functools.lru_cache(maxsize=8)
def _entry_points(search_path: tuple[str, ...]) -> dict[str, importlib.metadata.EntryPoint]:
    """The installed families' entry points by name (keyed on ``sys.path``: a new path may add some)."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        earlier = found.get(point.name)
        if earlier is not None and earlier.value != point.value:
            raise InputError(f"model family '{point.name}' is declared by two installed packages "
                             f"({earlier.value} and {point.value}, entry-point group {ENTRY_POINT_GROUP})")
        found[point.name] = point
    return found


def is_builtin(family: str) -> bool:
    return family in builtin_families()


def family_reference(family: str) -> tuple[str, str]:
    """(module, attribute) that ``family`` names; the attribute is ``MODEL`` unless given.

    Raises InputError for a name that is neither a built-in family, nor an installed entry
    point, nor a ``package.module:Class`` reference.
    """
    if is_builtin(family):
        return f"{_PACKAGE}.families.{family}", "MODEL"
    if ":" not in family and "." not in family:
        point = _entry_points(tuple(sys.path)).get(family)
        if point is None:
            raise InputError(f"unknown model family '{family}'; available: {available_families()} "
                             f"(an external family is named package.module:Class, or installed with an "
                             f"entry point in the group {ENTRY_POINT_GROUP})")
        family = point.value
    module, _, attribute = family.partition(":")
    if not all(part.isidentifier() for part in module.split(".")) or (attribute and not attribute.isidentifier()):
        raise InputError(f"model family '{family}' is not a family name or a package.module:Class reference")
    return module, attribute or "MODEL"


def family_source(family: str) -> Path:
    """The module file that defines ``family`` (declared as an input of its train rule)."""
    module, _ = family_reference(family)
    if is_builtin(family):
        return _FAMILIES_DIR / f"{family}.py"
    try:
        spec = importlib.util.find_spec(module)
    except Exception as exc:  # noqa: BLE001 - find_spec imports the parent packages
        raise InputError(f"model family '{family}': cannot import {module} ({type(exc).__name__}: {exc})") from exc
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        raise InputError(f"model family '{family}': no module {module} is installed")
    return Path(spec.origin).resolve()


def _roots(family: str, source: Path) -> list[tuple[str, Path]]:
    """The packages whose modules count as the family's code: ``pipeline_lib.models`` and, for an
    external family inside a package, that top-level package (``source`` is the family's module)."""
    roots = [(_PACKAGE, _PACKAGE_DIR)]
    module, _ = family_reference(family)
    hops = module.count(".") - 1 + (source.name == "__init__.py")  # from source's folder up to the package's
    if not is_builtin(family) and hops >= 0:
        roots.append((module.split(".")[0], source.parents[hops]))
    return roots


def family_sources(family: str) -> list[Path]:
    """The family's module and every module of this package (or of the external family's own
    package) it imports, directly or not.

    These are the train rule's code inputs: editing a module reruns exactly the
    models whose behaviour it can change (e.g. vae.py also reruns dfc_vae). Found by
    parsing imports, so torch is not imported while Snakemake builds the DAG.
    """
    first = family_source(family)
    return imported_sources(first, _roots(family, first))


def get_family(family: str):
    """The :class:`~pipeline_lib.models.base.GenerativeModel` subclass of ``family``."""
    module_name, attribute = family_reference(family)
    if is_builtin(family):
        return importlib.import_module(module_name).MODEL
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - whatever the user's module raises, the config names it
        raise InputError(f"model family '{family}': cannot import {module_name} ({type(exc).__name__}: {exc})") from exc
    cls = getattr(module, attribute, None)
    from pipeline_lib.models.base import GenerativeModel

    if not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
        found = "nothing" if cls is None else repr(cls)
        raise InputError(f"model family '{family}': {module_name}.{attribute} must be a subclass of "
                         f"pipeline_lib.models.base.GenerativeModel, found {found}")
    return cls


def build_model(family: str, image_size: int, hparams: dict[str, Any], n_classes: int = 0,
                channels: int = 1, n_covariates: int = 0):
    cls = get_family(family)
    # passed only when set: a family's own __init__ hands it on to GenerativeModel's with its hparams
    extra = {"n_covariates": n_covariates} if n_covariates else {}
    return cls(image_size=image_size, channels=channels, n_classes=n_classes, **extra, **hparams)
