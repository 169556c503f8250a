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
package's, see :mod:`pipeline_lib.models`) is imported at DAG time to read its table,
so its model blocks are checked the same way; that imports torch, but only for a
config that names one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings import TrainerSettings, check_known_keys, family_hparams
from pipeline_lib.models import builtin_families, get_family, is_builtin

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
            table = declared.get(family) if is_builtin(family) else family_table(get_family(family))
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
