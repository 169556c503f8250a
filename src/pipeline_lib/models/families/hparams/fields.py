"""How a family declares its hyperparameters: a frozen dataclass with one typed, documented field each.

A field's annotation is the type a config value must have, its default the published value, and
:func:`hyperparameter` adds a one-line doc (where the value comes from) and, for keys with a fixed
set of values, the values allowed::

    @dataclass(frozen=True)
    class VAEHyperparameters:
        latent_dim: int = hyperparameter(200, "size of the latent code (Ungría Hirte et al. §3.2)")

A field whose type is itself such a dataclass is a sub-block (``perceptual: {backbone: ...}``): a
config gives some of its keys and the rest keep their defaults. The checks below serve both the
trainer (:func:`resolve`) and the DAG-time config check, which imports these declarations without
torch. Torch-free, like everything the DAG imports.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from typing import Any, Iterable, Mapping

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings import check_known_keys

DOC = "doc"
CHOICES = "choices"


def hyperparameter(default: Any, doc: str, *, choices: Iterable[Any] = ()) -> Any:
    """A dataclass field with its published ``default``, a one-line ``doc`` and the ``choices`` a
    config may pick from (none: any value of the field's type)."""
    metadata = {DOC: doc, CHOICES: tuple(choices)}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def declared_fields(cls: type) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls))


def default_of(f: dataclasses.Field) -> Any:
    """The field's published value (a fresh copy); a sub-block's as a mapping."""
    value = f.default_factory() if f.default is dataclasses.MISSING else copy.deepcopy(f.default)
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def defaults(cls: type) -> dict[str, Any]:
    """Every hyperparameter's published value, in declaration order: the family's ``DEFAULTS``."""
    return {f.name: default_of(f) for f in declared_fields(cls)}


def choices_of(cls: type) -> dict[str, tuple[Any, ...]]:
    """key -> the values it allows, for the keys that have a fixed set."""
    return {f.name: f.metadata[CHOICES] for f in declared_fields(cls) if f.metadata.get(CHOICES)}


def types_of(cls: type) -> dict[str, Any]:
    """key -> its annotation, evaluated (declarations use ``from __future__ import annotations``)."""
    return typing.get_type_hints(cls)


def as_dict(hp: Any) -> dict[str, Any]:
    """The resolved hyperparameters as recorded in summaries and weights files."""
    return dataclasses.asdict(hp)


def union_args(annotation: Any) -> tuple[Any, ...] | None:
    """The options of ``X | Y`` (None for any other annotation)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return None


def matches(annotation: Any, value: Any) -> bool:
    """Whether ``value`` (as YAML gives it) can stand where ``annotation`` is declared."""
    options = union_args(annotation)
    if options is not None:
        return any(matches(option, value) for option in options)
    origin = typing.get_origin(annotation) or annotation
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        items = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return isinstance(value, (list, tuple)) and all(matches(items[0], v) for v in value if items)
    if origin in (dict, Mapping) or dataclasses.is_dataclass(annotation):
        return isinstance(value, Mapping)
    return True


_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
_PLURALS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def describe(annotation: Any) -> str:
    """``annotation`` in words, for errors and the configuration reference."""
    options = union_args(annotation)
    if options is not None:
        return " or ".join(describe(option) for option in options)
    origin = typing.get_origin(annotation) or annotation
    if annotation in _WORDS:
        return _WORDS[annotation]
    if origin in (list, tuple):
        items = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return "a list" + (f" of {_PLURALS.get(items[0], describe(items[0]))}" if items else "")
    if origin in (dict, Mapping) or dataclasses.is_dataclass(annotation):
        return "a mapping"
    return "any value"


def _sub_block_keys(annotation: Any, f: dataclasses.Field) -> list[str] | None:
    """The keys a sub-block may hold (a nested declaration's fields, or a mapping default's keys)."""
    if dataclasses.is_dataclass(annotation):
        return [sub.name for sub in declared_fields(annotation)]
    default = default_of(f)
    return list(default) if isinstance(default, dict) else None


def value_problems(cls: type, given: Mapping[str, Any], where: str) -> list[str]:
    """Each known key of ``given`` whose value has the wrong type, a sub-block's unknown or mistyped
    keys, and choice keys outside their choices; each problem names ``where.<key>``. Unknown keys
    of ``given`` itself are the caller's to report (it knows which other keys a block may hold)."""
    fields, hints, problems = {f.name: f for f in declared_fields(cls)}, types_of(cls), []
    for key, value in given.items():
        if key not in fields:
            continue
        wanted = hints[key]
        if not matches(wanted, value):
            problems.append(f"{where}.{key}: must be {describe(wanted)} (published default "
                            f"{default_of(fields[key])!r}), not {value!r}")
            continue
        sub_keys = _sub_block_keys(wanted, fields[key])
        if sub_keys is not None:
            try:
                check_known_keys(value, sub_keys, f"{where}.{key}")
            except InputError as exc:
                problems.append(str(exc))
            if dataclasses.is_dataclass(wanted):
                problems += value_problems(wanted, value, f"{where}.{key}")
        allowed = fields[key].metadata.get(CHOICES)
        if allowed and value not in allowed:
            problems.append(f"{where}.{key}: must be one of {', '.join(map(str, allowed))}, not {value!r}")
    return problems


def resolve(cls: type, given: Mapping[str, Any], where: str):
    """An instance of ``cls``: the published values overridden by ``given``, a sub-block key by key.
    Unknown keys and values outside a key's choices are InputErrors naming ``where.<key>``."""
    check_known_keys(given, [f.name for f in declared_fields(cls)], where)
    values = {**defaults(cls), **given}
    for key, allowed in choices_of(cls).items():
        if values[key] not in allowed:
            raise InputError(f"{where}.{key} must be one of {', '.join(map(str, allowed))}, got {values[key]!r}")
    hints = types_of(cls)
    for f in declared_fields(cls):
        default = default_of(f)
        if not isinstance(default, dict):
            continue
        user = given.get(f.name) or {}
        if not isinstance(user, Mapping):
            raise InputError(f"{where}.{f.name} must be a mapping, got {user!r}")
        check_known_keys(user, default, f"{where}.{f.name}")
        merged = {**default, **user}
        values[f.name] = hints[f.name](**merged) if dataclasses.is_dataclass(hints[f.name]) else merged
    return cls(**values)


def from_defaults(name: str, published: Mapping[str, Any], choices: Mapping[str, Iterable[Any]]) -> type:
    """A declaration made from a ``DEFAULTS`` mapping (and ``CHOICES``), as families written before
    typed declarations have: each key's type is its default's (any type where that is None)."""
    def field_type(value: Any) -> Any:
        if type(value) in (bool, int, float, str):
            return type(value)
        return list if isinstance(value, (list, tuple)) else dict if isinstance(value, Mapping) else Any

    return dataclasses.make_dataclass(
        name, [(key, field_type(value), hyperparameter(value, "", choices=choices.get(key, ())))
               for key, value in published.items()], frozen=True)
