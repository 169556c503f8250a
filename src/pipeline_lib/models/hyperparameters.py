"""Every family's hyperparameters, declared without torch, to check model blocks at DAG time.

A family's published hyperparameters are its ``DEFAULTS`` (each family module cites
them). Reading them means importing the family, hence torch, which Snakemake must
not do while it builds the DAG (seconds per parse, and every cluster job parses
the Snakefile again). So ``families/hyperparameters.json`` records each family's
defaults (and the presets of families that have them), written from the families
themselves by

    python -m pipeline_lib.models.hyperparameters --write

and ``tests/test_families.py`` fails when it differs from what the families
declare. :func:`check_model_blocks` then rejects, before anything runs, an unknown
family, an unknown or misspelled hyperparameter (``models.vae.learnig_rate``), a
value of the wrong type, an unknown preset, and bad trainer keys, each error
naming its config key. A built-in family missing from the file (one just added) is
checked when its training starts instead, as before. An external family (another
package's, see :mod:`pipeline_lib.models`) is checked the same way: its table is read
from its module's source when the class is declared plainly (a direct subclass of
``GenerativeModel`` whose ``DEFAULTS``, ``CHOICES`` and ``PRESETS`` are literals), so
torch is not imported; otherwise the family is imported at DAG time (seconds per parse).
"""

from __future__ import annotations

import argparse
import ast
import json
from types import SimpleNamespace
from pathlib import Path
from typing import Any, Mapping

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.overrides import convert_text
from pipeline_lib.core.settings import TrainerSettings, check_known_keys, family_hparams
from pipeline_lib.models import builtin_families, family_reference, family_source, get_family, is_builtin

DECLARED = Path(__file__).resolve().parent / "families" / "hyperparameters.json"


def declared_hyperparameters(path: Path = DECLARED) -> dict[str, dict]:
    """family -> {"defaults": {...}, "choices": {key: [...]}} as recorded in the JSON file."""
    return json.loads(Path(path).read_text())


def collect_hyperparameters() -> dict[str, dict]:
    """The same table, read from the built-in family modules themselves (imports torch)."""
    return {family: family_table(get_family(family)) for family in builtin_families()}


def family_table(cls) -> dict[str, Any]:
    """One family's entry of the table: its defaults and the values its choice keys allow."""
    presets = getattr(cls, "PRESETS", None)
    choices = {"preset": sorted(presets)} if presets and "preset" in cls.DEFAULTS else {}
    choices.update({key: list(allowed) for key, allowed in getattr(cls, "CHOICES", {}).items()})
    return {"defaults": json.loads(json.dumps(cls.DEFAULTS)), "choices": choices}


def external_table(family: str) -> dict[str, Any]:
    """An external family's table: from its source when :func:`literal_declaration` can read it,
    else from the imported class (which imports torch)."""
    declaration = literal_declaration(family)
    return family_table(declaration if declaration is not None else get_family(family))


#: The class attributes the table is made of.
TABLE_ATTRIBUTES = ("DEFAULTS", "CHOICES", "PRESETS")


def literal_declaration(family: str) -> SimpleNamespace | None:
    """The family class's ``DEFAULTS``, ``CHOICES`` and ``PRESETS`` read from its module's source,
    without importing it; None unless the class is a direct subclass of ``GenerativeModel`` (so
    nothing is inherited but the base's empty values) whose table attributes are literals."""
    _, attribute = family_reference(family)
    try:
        tree = ast.parse(family_source(family).read_text())
    except SyntaxError:
        return None  # importing it reports the error
    if attribute == "MODEL":
        aliases = [node.value.id for node in tree.body if isinstance(node, ast.Assign)
                   and [getattr(t, "id", None) for t in node.targets] == ["MODEL"] and isinstance(node.value, ast.Name)]
        if len(aliases) != 1:
            return None
        attribute = aliases[0]
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == attribute]
    if len(classes) != 1 or [getattr(b, "id", getattr(b, "attr", None)) for b in classes[0].bases] != ["GenerativeModel"]:
        return None
    found: dict[str, Any] = {}
    for node in classes[0].body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id in TABLE_ATTRIBUTES:
                try:
                    found[target.id] = ast.literal_eval(node.value)
                except (ValueError, TypeError, SyntaxError):
                    return None
    if "DEFAULTS" not in found:
        return None
    return SimpleNamespace(DEFAULTS=found["DEFAULTS"], CHOICES=found.get("CHOICES", {}), PRESETS=found.get("PRESETS"))


def check_model_blocks(models: Mapping[str, Any], declared: Mapping[str, dict] | None = None) -> list[str]:
    """Every problem of the ``models`` config section, each naming its key; [] when all is well."""
    declared = declared_hyperparameters() if declared is None else declared
    problems: list[str] = []
    for name, block in (models or {}).items():
        where = f"models.{name}"
        if not isinstance(block, Mapping):
            problems.append(f"{where}: must be a mapping of family, budget and hyperparameters")
            continue
        family = str(block.get("family"))
        try:
            table = declared.get(family) if is_builtin(family) else external_table(family)
        except InputError as exc:
            problems.append(f"{where}.family: {exc}")
            continue
        try:
            TrainerSettings.from_block(name, block)
        except InputError as exc:
            problems.append(str(exc))
        if table is not None:
            problems += _hyperparameter_problems(where, family_hparams(block), table)
    return problems


def typed_hyperparameters(overrides: Mapping[str, Any], models: Mapping[str, Any],
                          declared: Mapping[str, dict] | None = None) -> tuple[dict, list[str]]:
    """``(typed, problems)``: the ``models`` part of ``--config`` with each text value of a family
    hyperparameter converted to the type of its published default (the config schema does not
    know a family's keys). ``models`` is the merged config's section: it names each family."""
    declared = declared_hyperparameters() if declared is None else declared
    typed, problems = {}, []
    for name, block in (overrides or {}).items():
        family = ((models or {}).get(name) or {}).get("family") if isinstance(block, Mapping) else None
        defaults = declared.get(str(family), {}).get("defaults", {})
        if not defaults:
            typed[name] = block
            continue
        typed[name] = dict(block)
        for key, value in block.items():
            wanted = _json_types(defaults.get(key))
            if isinstance(value, str) and wanted:
                try:
                    typed[name][key] = convert_text(value, wanted)
                except ValueError as why:
                    problems.append(f"models.{name}.{key}: --config gave {value!r}, which is not {why}")
    return typed, problems


def _json_types(default: Any) -> list[str]:
    """The JSON-schema types a value may have where the published default is ``default``."""
    if isinstance(default, bool):
        return ["boolean"]
    if isinstance(default, int):
        return ["integer"]
    if isinstance(default, float):
        return ["number"]
    return []


def _hyperparameter_problems(where: str, given: Mapping[str, Any], family: Mapping[str, Any]) -> list[str]:
    defaults, choices = family["defaults"], family.get("choices", {})
    problems = []
    for key, value in given.items():
        if key not in defaults:
            problems.append(f"{where}.{key}: unknown key; the family's hyperparameters are "
                            f"{', '.join(sorted(defaults))} and the trainer's keys "
                            f"{', '.join(sorted(TrainerSettings.keys()))}")
            continue
        problem = _type_problem(value, defaults[key])
        if problem:
            problems.append(f"{where}.{key}: {problem}")
        elif isinstance(defaults[key], dict):
            try:
                check_known_keys(value, defaults[key], f"{where}.{key}")
            except InputError as exc:
                problems.append(str(exc))
        if key in choices and value not in choices[key]:
            problems.append(f"{where}.{key}: must be one of {', '.join(map(str, choices[key]))}, not {value!r}")
    return problems


def _type_problem(value: Any, default: Any) -> str | None:
    """Why ``value`` cannot stand where the published default is ``default`` (None: it can)."""
    if default is None or value is None:
        return None  # optional values (e.g. a weights path) take anything; the family checks them
    if isinstance(default, bool):
        ok, wanted = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, wanted = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, wanted = isinstance(value, str), "a string"
    elif isinstance(default, list):
        ok, wanted = isinstance(value, (list, tuple)), "a list"
    elif isinstance(default, dict):
        ok, wanted = isinstance(value, Mapping), "a mapping"
    else:
        return None
    return None if ok else f"must be {wanted} (published default {default!r}), not {value!r}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite {DECLARED.name} from the families")
    args = parser.parse_args(argv)
    text = json.dumps(collect_hyperparameters(), indent=2, sort_keys=True) + "\n"
    if args.write:
        DECLARED.write_text(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
