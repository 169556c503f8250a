"""Model blocks checked against their family's declared hyperparameters, without torch, at DAG time.

A family names its declaration, a frozen dataclass (``models/families/hparams/fields.py``), in its
class attribute ``HYPERPARAMETERS``. Reading it by importing the family would import torch, which
Snakemake must not do while it builds the DAG (seconds per parse, and every cluster job parses the
Snakefile again). So :func:`declaration` reads the family module's source instead: the name the
class (or the family class it inherits from) assigns to ``HYPERPARAMETERS`` and the module that name
is imported from, and imports only that module. The built-in families' declarations live in the
torch-free ``models/families/hparams/``; an external family whose declaration lives in a module of
its own is read the same way (docs/external-family.md). A family whose declaration is defined in
its own module, or computed, is imported to read it (seconds per parse). A family written before
declarations, with a literal ``DEFAULTS`` mapping on a direct subclass of ``GenerativeModel``, has
that mapping read from its source.

:func:`check_model_blocks` then rejects, before anything runs, an unknown family, an unknown or
misspelled hyperparameter (``models.vae.learnig_rate``), a value of the wrong type, a value outside
a key's choices (a preset included), and bad trainer keys, each error naming its config key.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
from pathlib import Path
from typing import Any, Mapping

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.overrides import convert_text
from pipeline_lib.core.settings import TrainerSettings, family_hparams, model_dataset
from pipeline_lib.core.volumes import volume_blocks
from pipeline_lib.models import builtin_families, family_reference, family_source, get_family
from pipeline_lib.models.families.hparams.fields import (declared_fields, defaults, from_defaults, types_of, union_args,
                                                        value_problems)

#: Base classes followed in a family's source before giving up and importing it.
MAX_HOPS = 8


def declaration(family: str) -> type:
    """The hyperparameter declaration of ``family``: from its source where that names the module it
    comes from (no torch), else from the imported family class."""
    module, attribute = family_reference(family)
    found = _declared_in_source(module, family_source(family), attribute, hops=0)
    if found is None:
        found = get_family(family).HYPERPARAMETERS
    if found is None:
        raise InputError(f"model family '{family}' declares no HYPERPARAMETERS (docs/external-family.md)")
    return found


def published_defaults(family: str) -> dict[str, Any]:
    """The family's published hyperparameters (its ``DEFAULTS``), read as :func:`declaration` reads them."""
    return defaults(declaration(family))


def builtin_declarations() -> dict[str, type]:
    """family -> declaration, for every built-in family (torch-free)."""
    return {family: declaration(family) for family in builtin_families()}


def _module_path(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except Exception:  # noqa: BLE001 - find_spec imports parent packages; importing the family reports it
        return None
    return Path(spec.origin) if spec is not None and spec.origin and Path(spec.origin).is_file() else None


def _imported_names(tree: ast.Module, module: str, path: Path) -> dict[str, tuple[str, str]]:
    """local name -> (module, name) of each ``from X import name`` at the top of ``module``."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = {}
    for node in tree.body:
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
        for alias in node.names:
            found[alias.asname or alias.name] = (base, alias.name)
    return found


def _declared_in_source(module: str, path: Path | None, name: str, hops: int) -> type | None:
    """Class ``name`` of ``module``'s declaration, read from the source; None where only importing
    the family can tell."""
    if path is None or hops > MAX_HOPS:
        return None
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return None  # importing it reports the error
    imported = _imported_names(tree, module, path)
    if name == "MODEL":
        aliases = [node.value.id for node in tree.body
                   if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name)
                   and [getattr(t, "id", None) for t in node.targets] == ["MODEL"]]
        if len(aliases) != 1:
            return None
        name = aliases[0]
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name]
    if not classes:
        if name in imported:
            return _declared_in_source(imported[name][0], _module_path(imported[name][0]), imported[name][1], hops + 1)
        return None
    assigned = _class_assignments(classes[0])
    if "HYPERPARAMETERS" in assigned:
        value = assigned["HYPERPARAMETERS"]
        if isinstance(value, ast.Name) and value.id in imported:
            return _imported_declaration(*imported[value.id])
        return None  # declared in the family's own module
    base_names = [getattr(b, "id", getattr(b, "attr", None)) for b in classes[0].bases]
    if "DEFAULTS" in assigned:
        return _literal_defaults(name, assigned) if base_names == ["GenerativeModel"] else None
    for base in base_names:
        if base == "GenerativeModel" or base is None:
            continue
        where = imported.get(base, (module, base))
        found = _declared_in_source(where[0], path if where[0] == module else _module_path(where[0]), where[1], hops + 1)
        if found is not None:
            return found
    return None


def _class_assignments(node: ast.ClassDef) -> dict[str, ast.expr]:
    found = {}
    for stmt in node.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name) and stmt.value is not None:
                found[target.id] = stmt.value
    return found


def _imported_declaration(module: str, name: str) -> type | None:
    try:
        found = getattr(importlib.import_module(module), name, None)
    except Exception:  # noqa: BLE001 - importing the family reports it, naming the config key
        return None
    return found if isinstance(found, type) and dataclasses.is_dataclass(found) else None


def _literal_defaults(name: str, assigned: Mapping[str, ast.expr]) -> type | None:
    """The declaration a ``DEFAULTS`` mapping (and ``CHOICES``) makes, where both are literals."""
    try:
        published = ast.literal_eval(assigned["DEFAULTS"])
        choices = ast.literal_eval(assigned["CHOICES"]) if "CHOICES" in assigned else {}
    except (ValueError, TypeError, SyntaxError):
        return None
    if not isinstance(published, dict) or not isinstance(choices, dict):
        return None
    return from_defaults(f"{name}Hyperparameters", published, choices)


def spatial_dims(family: str) -> int:
    """2 for a family that learns slices, 3 for one that learns volumes: the family class's
    ``spatial_dims`` (GenerativeModel's is 2), read from the source where it is a literal there or
    in a class it inherits from (no torch, as :func:`declaration`), else from the imported class."""
    module, attribute = family_reference(family)
    found = _class_literal(module, family_source(family), attribute, "spatial_dims", hops=0)
    return int(get_family(family).spatial_dims if found is None else found)


def takes_covariates(family: str) -> bool:
    """Whether the family can condition on continuous covariates (its class's ``takes_covariates``,
    read as :func:`spatial_dims` reads ``spatial_dims``)."""
    module, attribute = family_reference(family)
    found = _class_literal(module, family_source(family), attribute, "takes_covariates", hops=0)
    return bool(get_family(family).takes_covariates if found is None else found)


def _class_literal(module: str, path: Path | None, name: str, attribute: str, hops: int) -> Any:
    """The literal value class ``name`` of ``module`` (or the first base class that sets it) gives
    ``attribute``; None where only importing can tell."""
    if path is None or hops > MAX_HOPS:
        return None
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return None
    imported = _imported_names(tree, module, path)
    if name == "MODEL":
        aliases = [node.value.id for node in tree.body if isinstance(node, ast.Assign)
                   and isinstance(node.value, ast.Name) and [getattr(t, "id", None) for t in node.targets] == ["MODEL"]]
        name = aliases[0] if len(aliases) == 1 else name
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name]
    if not classes:
        where = imported.get(name)
        return None if where is None else _class_literal(where[0], _module_path(where[0]), where[1], attribute, hops + 1)
    assigned = _class_assignments(classes[0])
    if attribute in assigned:
        try:
            return ast.literal_eval(assigned[attribute])
        except ValueError:
            return None
    for base in classes[0].bases:
        base_name = getattr(base, "id", None)
        where = imported.get(base_name, (module, base_name)) if base_name else None
        if where is None:
            return None
        found = _class_literal(where[0], path if where[0] == module else _module_path(where[0]), where[1],
                               attribute, hops + 1)
        if found is not None:
            return found
    return None


def model_dataset_problems(config: Mapping[str, Any]) -> list[str]:
    """A model's family and its dataset must agree: a 3-D family (``spatial_dims`` = 3) learns a volume
    dataset (``kind: volume``), a 2-D family a slice dataset, and only a family that takes covariates
    has ``condition_on_covariates``; each mismatch names the model's key."""
    volumes = sorted(volume_blocks(config))
    problems = []
    for name, block in (config.get("models") or {}).items():
        try:
            dims, dataset = spatial_dims(str(block["family"])), model_dataset(config, name)
        except InputError:
            continue  # reported by check_model_blocks and core.settings.dataset_problems
        if dims == 3 and dataset not in volumes:
            where = "names" if block.get("dataset") else "has no dataset key, so it takes"
            problems.append(
                f"models.{name}.dataset: family {block['family']} learns volumes but the model {where} the slice "
                f"dataset {dataset!r}; set it to a volume dataset (datasets.<name> with kind: volume"
                + (f": {', '.join(volumes)})" if volumes else "; the config has none yet, docs/VOLUMES.md)"))
        elif dims != 3 and dataset in volumes:
            problems.append(
                f"models.{name}.dataset: {dataset!r} is a volume dataset (kind: volume) but family {block['family']} "
                f"learns 2-D slices; give the model a slice dataset, or use a 3-D family "
                f"({', '.join(f for f in builtin_families() if spatial_dims(f) == 3)})")
        if block.get("condition_on_covariates") and not takes_covariates(str(block["family"])):
            able = [f for f in builtin_families() if takes_covariates(f)]
            problems.append(f"models.{name}.condition_on_covariates: family {block['family']} cannot condition on "
                            f"covariates; families that can: {', '.join(able)}")
    return problems


def check_model_blocks(models: Mapping[str, Any]) -> list[str]:
    """Every problem of the ``models`` config section, each naming its key; [] when all is well."""
    problems: list[str] = []
    for name, block in (models or {}).items():
        where = f"models.{name}"
        if not isinstance(block, Mapping):
            problems.append(f"{where}: must be a mapping of family, budget and hyperparameters")
            continue
        try:
            declared = declaration(str(block.get("family")))
        except InputError as exc:
            problems.append(f"{where}.family: {exc}")
            continue
        try:
            TrainerSettings.from_block(name, block)
        except InputError as exc:
            problems.append(str(exc))
        problems += _hyperparameter_problems(where, family_hparams(block), declared)
    return problems


def _hyperparameter_problems(where: str, given: Mapping[str, Any], declared: type) -> list[str]:
    names = [f.name for f in declared_fields(declared)]
    problems = []
    for key, value in given.items():
        if key in names:
            problems += value_problems(declared, {key: value}, where)
        else:
            problems.append(f"{where}.{key}: unknown key; the family's hyperparameters are "
                            f"{', '.join(sorted(names))} and the trainer's keys "
                            f"{', '.join(sorted(TrainerSettings.keys()))}")
    return problems


def typed_hyperparameters(overrides: Mapping[str, Any], models: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """``(typed, problems)``: the ``models`` part of ``--config`` with each text value of a family
    hyperparameter converted to its declared type (the config schema does not know a family's
    keys). ``models`` is the merged config's section: it names each family."""
    typed, problems = {}, []
    for name, block in (overrides or {}).items():
        family = ((models or {}).get(name) or {}).get("family") if isinstance(block, Mapping) else None
        try:
            declared = types_of(declaration(str(family))) if family is not None else {}
        except InputError:
            declared = {}  # check_model_blocks reports the family
        if not declared:
            typed[name] = block
            continue
        typed[name] = dict(block)
        for key, value in block.items():
            wanted = _json_types(declared.get(key))
            if isinstance(value, str) and wanted:
                try:
                    typed[name][key] = convert_text(value, wanted)
                except ValueError as why:
                    problems.append(f"models.{name}.{key}: --config gave {value!r}, which is not {why}")
    return typed, problems


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", type(None): "null"}


def _json_types(annotation: Any) -> list[str]:
    """The JSON-schema types of a declared type, where text from the command line must become one
    ([] keeps the text: strings, lists, mappings)."""
    kinds = [_JSON_TYPES.get(option) for option in (union_args(annotation) or (annotation,))]
    if None in kinds or kinds == ["null"]:
        return []
    return [kind for kind in kinds if kind is not None]
