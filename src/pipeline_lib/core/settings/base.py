"""What every section's settings share: the kinds of keys, reading a block, the value checks.

Every field is one of four kinds, declared on the field and nowhere else:

* a result key (the default): changing it changes what the stage computes, so
  it is part of the rule's ``params`` and Snakemake reruns the job;
* ``runtime``: how the job runs (device, batch size of a forward pass, memory
  layout, checkpoint interval), not what it computes; left out of ``params``;
* ``scoring`` (reader study only): changes the scoring of the readers'
  answers, not the kit they answer, so the kit is not rebuilt (and reshuffled);
* ``workflow``: decides which jobs exist (the training seeds), not what one job
  computes; left out of ``params`` so that adding a seed reruns no existing job.

A result key is a result of its own section's jobs unless it is declared
:func:`read_by` the rules of later stages: ``registration.on_poor_fit`` changes
which subjects slicing keeps, not what registration computes, so it is a param
of ``slice_dataset`` (and of the report, which states it) and not of ``register``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field, fields
from typing import Any, Iterable, Mapping, TypeVar

from pipeline_lib.core.errors import InputError

RESULT, RUNTIME, SCORING, WORKFLOW = "result", "runtime", "scoring", "workflow"
S = TypeVar("S")


def runtime(default: Any) -> Any:
    """A field that changes how a job runs, not what it computes."""
    return field(default=default, metadata={"kind": RUNTIME})


def workflow(default: Any) -> Any:
    """A field that decides which jobs exist (e.g. the seeds), not what one job computes."""
    return field(default=default, metadata={"kind": WORKFLOW})


def scoring(default: Any) -> Any:
    """A reader-study field that changes the scoring, not the kit."""
    return field(default=default, metadata={"kind": SCORING})


def read_by(default: Any, *rules: str) -> Any:
    """A result key of ``rules`` (of later stages) only, not of its own section's jobs."""
    return field(default=default, metadata={"kind": RESULT, "read_by": rules})


def field_kind(f: dataclasses.Field) -> str:
    return f.metadata.get("kind", RESULT)


def reading_rules(f: dataclasses.Field) -> tuple[str, ...] | None:
    """The rules whose results a :func:`read_by` key changes; None for a key of the section's own jobs."""
    return f.metadata.get("read_by")


def check_known_keys(given: Iterable[str], known: Iterable[str], where: str) -> None:
    """InputError naming ``where.<key>`` for every key of ``given`` that is not ``known``."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        keys = ", ".join(f"{where}.{key}" for key in unknown)
        raise InputError(f"{keys}: unknown key{'s' if len(unknown) > 1 else ''} "
                         f"(known: {', '.join(sorted(known))})")


def read_settings(cls: type[S], block: Mapping[str, Any] | S | None, where: str | None = None) -> S:
    """The typed settings of one config block (``None`` = every default).

    An instance of ``cls`` is returned as it is. Unknown keys and invalid values
    raise InputError naming the config key (``where``, default ``cls.PATH``).
    """
    if isinstance(block, cls):
        return block
    where = where or getattr(cls, "PATH", cls.__name__)
    block = dict(block or {})
    check_known_keys(block, (f.name for f in fields(cls)), where)
    try:
        return cls(**block)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from exc
    except TypeError as exc:  # a value of the wrong kind met a comparison in a check
        raise InputError(f"{where}: {exc}") from exc


def keys_of_kind(cls: type, *kinds: str) -> list[str]:
    return [f.name for f in fields(cls) if field_kind(f) in kinds]


def section_block(config: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The config block at a dotted ``path`` (e.g. ``evaluation.fid``), {} when absent."""
    block: Any = config
    for part in path.split("."):
        block = (block or {}).get(part) if isinstance(block, Mapping) else None
    return dict(block or {})


def block_part(block: Mapping[str, Any], cls: type, *kinds: str) -> dict[str, Any]:
    """The entries of ``block`` whose fields in ``cls`` are of one of ``kinds``."""
    wanted = set(keys_of_kind(cls, *kinds))
    return {key: value for key, value in block.items() if key in wanted}


def result_part(block: Mapping[str, Any], cls: type, *also: str) -> dict[str, Any]:
    """The entries of ``block`` that change what its section's own jobs compute: result keys (and
    keys of the kinds ``also``). Keys ``cls`` does not declare count as result keys (a model block's
    family hyperparameters); keys :func:`read_by` later rules do not (see :func:`read_by_rule`)."""
    kept = {RESULT, *also}
    declared = {f.name: f for f in fields(cls)}
    return {key: value for key, value in block.items()
            if key not in declared or (field_kind(declared[key]) in kept and reading_rules(declared[key]) is None)}


def read_by_rule(block: Mapping[str, Any], cls: type, rule: str) -> dict[str, Any]:
    """The entries of ``block`` that ``cls`` declares :func:`read_by` ``rule`` (a later stage's rule)."""
    wanted = {f.name for f in fields(cls) if rule in (reading_rules(f) or ())}
    return {key: value for key, value in block.items() if key in wanted}


def canonical(value: Any) -> Any:
    """Dicts with sorted keys, recursively."""
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    return value


# ----------------------------------------------------------------- checks shared by the sections


def positive_int(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{where} must be a positive integer, got {value!r}")


def positive_number(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise InputError(f"{where} must be a positive number, got {value!r}")


def optional_min(where: str, value: Any, minimum: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise InputError(f"{where} must be an integer ≥ {minimum} or null, got {value!r}")


def one_of(where: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise InputError(f"{where} must be one of {', '.join(map(str, choices))}, not {value!r}")
