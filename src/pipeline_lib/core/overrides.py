"""``--config`` values with the types the config schema declares.

Snakemake reads ``--config key=value`` with int, float and bool parsers for a top-level value but
reads a nested value (``--config 'sampling={n: 64}'``) with YAML's BaseLoader, which keeps every
scalar as text: ``'64' is not of type 'integer'``. :func:`typed_overrides` converts each text
value to the type ``workflow/schemas/config.schema.yaml`` declares at its key (integer, number,
boolean, null; lists and mappings element by element); a value that does not convert is a
problem naming its key. Values from config files are typed by YAML already and left alone.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

_TRUE, _FALSE = ("true", "yes", "on"), ("false", "no", "off")
_NULL = ("null", "Null", "NULL", "~", "")  # YAML's
_WORDS = {"integer": "an integer", "number": "a number", "boolean": "true or false", "null": "null",
          "array": "a list", "object": "a mapping", "string": "a string"}


def typed_overrides(overrides: Mapping[str, Any], schema: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """``(typed, problems)``: ``overrides`` (Snakemake's parsed ``--config``) with every text value
    converted to its schema type, and one problem per value that cannot be converted."""
    problems: list[str] = []
    typed = _convert(dict(overrides), schema, [], problems)
    return typed, problems


#: The JSON type of an enum member (an enum without `type`, e.g. amp: [false, true, bf16, fp16]).
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}


def convert_text(text: str, types: Sequence[str]) -> Any:
    """``text`` as the first of ``types`` (JSON-schema type names) it reads as; ValueError if none.
    Text is kept when ``string`` is among the types (or no type is declared), except YAML's null
    (``null``, ``~``, nothing) where null is allowed."""
    word = text.strip()
    if "null" in types and word in _NULL:
        return None
    if "string" in types and "boolean" in types and word.lower() in _TRUE + _FALSE:
        return word.lower() in _TRUE  # a key that takes a word or a switch (amp: bf16 | true)
    if not types or "string" in types:
        return text
    for kind in ("boolean", "integer", "number"):
        if kind not in types:
            continue
        if kind == "boolean" and word.lower() in _TRUE + _FALSE:
            return word.lower() in _TRUE
        if kind == "integer" and re.fullmatch(r"[+-]?\d+", word):
            return int(word)
        if kind == "number" and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", word):
            number = float(word)
            return int(number) if "integer" in types and number.is_integer() else number
    raise ValueError(" or ".join(_WORDS.get(kind, kind) for kind in types))


def schema_types(schema: Mapping[str, Any]) -> list[str]:
    """The JSON types ``schema`` allows, its ``oneOf``/``anyOf`` branches' included."""
    declared = schema.get("type", [])
    types = [declared] if isinstance(declared, str) else list(declared)
    for branch in list(schema.get("oneOf", [])) + list(schema.get("anyOf", [])):
        types += [kind for kind in schema_types(branch) if kind not in types]
    return types


def _convert(value: Any, schema: Mapping[str, Any], path: list[str], problems: list[str]) -> Any:
    types = schema_types(schema)
    if isinstance(value, Mapping):
        return {key: _convert(item, _child(schema, str(key)), path + [str(key)], problems)
                for key, item in value.items()}
    if isinstance(value, list):
        items = _items(schema)
        return [_convert(item, items, path + [str(index)], problems) for index, item in enumerate(value)]
    if isinstance(value, str):
        if not types and "enum" in schema:
            types = sorted({_JSON_TYPES[type(member)] for member in schema["enum"] if type(member) in _JSON_TYPES})
        try:
            return convert_text(value, types)
        except ValueError as wanted:
            problems.append(f"{'.'.join(path) or '(top level)'}: --config gave {value!r}, which is not {wanted}")
            return value
    if types == ["string"] and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value):
        return str(value)  # a top-level `--config key=123` read as a number, for a text key
    return value


def _child(schema: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """The schema of ``key`` inside an object schema (its branches searched too); {} if unknown."""
    for branch in [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]:
        if key in branch.get("properties", {}):
            return branch["properties"][key]
        for pattern, sub in branch.get("patternProperties", {}).items():
            if re.search(pattern, key):
                return sub
        if isinstance(branch.get("additionalProperties"), Mapping):
            return branch["additionalProperties"]
    return {}


def _items(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    for branch in [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]:
        if isinstance(branch.get("items"), Mapping):
            return branch["items"]
    return {}
