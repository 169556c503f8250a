"""docs/CONFIGURATION.md is written from the config schema and the families' hyperparameter declarations
(pipeline_lib.models.config_reference); the committed file must be what the generator writes now."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline_lib.models import config_reference
from pipeline_lib.models.families.hparams import hyperparameter
from pipeline_lib.models.hyperparameters import builtin_declarations

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / config_reference.SCHEMA
REGENERATE = "python -m pipeline_lib.models.config_reference --write docs/CONFIGURATION.md"

# JSON-schema keywords the schema uses; any other key in a schema node is a value that YAML cut
# out of a flow mapping's unquoted description at a comma (`{description: a, b}`), which would
# leave a truncated line in the reference.
KEYWORDS = {"$schema", "description", "type", "additionalProperties", "properties", "default", "enum", "items",
            "minItems", "maxItems", "required", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
            "oneOf", "anyOf", "allOf", "not", "minLength", "maxLength", "pattern", "uniqueItems", "minProperties",
            "maxProperties", "const", "format"}


def test_committed_reference_is_current():
    committed = (REPO / "docs" / "CONFIGURATION.md").read_text()
    assert committed == config_reference.write_reference(SCHEMA), f"regenerate it: {REGENERATE}"


def _keys(node: dict, path: str):
    for key, child in node.get("properties", {}).items():
        yield f"{path}.{key}" if path else key
        yield from _keys(child, f"{path}.{key}" if path else key)
    if isinstance(node.get("items"), dict):
        yield from _keys(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _keys(node["additionalProperties"], f"{path}.<name>")


def test_every_schema_key_and_family_hyperparameter_has_a_row():
    schema = yaml.safe_load(SCHEMA.read_text())
    declarations = builtin_declarations()
    text = config_reference.reference(schema, declarations)
    keys = list(_keys(schema, ""))
    assert len(keys) > 150
    for key in keys:
        if "." in key:
            assert f"| `{key}` |" in text, key
        else:  # every section is a heading; one that is a single value (on_bad_input) its own row too
            assert f"\n## {key}\n" in text, key
            assert schema["properties"][key].get("type") == "object" or f"| `{key}` |" in text, key
    for family, declared in declarations.items():
        for name in declared.__dataclass_fields__:
            assert f"| `models.<name>.{name}` |" in text, (family, name)


@dataclass(frozen=True)
class Sub:
    weights: str | None = hyperparameter(None, "a file")


@dataclass(frozen=True)
class Fam:
    lr: float = hyperparameter(0.001, "step size (Adam)")
    preset: str = hyperparameter("x", "which one", choices=("x", "y"))
    sizes: list[int] = hyperparameter([4, 8], "widths")
    sub: Sub = hyperparameter(Sub(), "a sub-block")


def test_rows_give_type_range_default_and_description():
    schema = {"properties": {"section": {"type": "object", "description": "A section.", "properties": {
        "count": {"type": "integer", "minimum": 1, "default": 3, "description": "How many | which <kind>."},
        "items": {"type": "array", "default": [], "items": {"type": "object", "required": ["name"],
                                                            "properties": {"name": {"type": "string"}}}},
        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"}}}}}
    text = config_reference.reference(schema, {"fam": Fam})
    assert "| `section.count` | integer (≥ 1) | `3` | How many \\| which &lt;kind&gt;. |" in text
    assert "| `section.items[].name` | string | required |  |" in text
    assert "| `section.mode` | one of `a`, `b` | `a` |  |" in text
    assert "| `models.<name>.lr` | a number | `0.001` | step size (Adam) |" in text
    assert "| `models.<name>.preset` | one of `x`, `y` | `x` | which one |" in text
    assert "| `models.<name>.sizes` | a list of integers | `[4, 8]` | widths |" in text
    assert "| `models.<name>.sub.weights` | a string or null | `null` | a file |" in text


def test_no_schema_description_was_cut_at_a_comma():
    def walk(node, path):
        if isinstance(node, dict):
            stray = sorted(set(node) - KEYWORDS)
            assert not stray or path.endswith("properties") or path.endswith("default"), (path, stray)
            for key, child in node.items():
                walk(child, f"{path}/{key}")
        elif isinstance(node, list):
            for child in node:
                walk(child, path)
    walk(yaml.safe_load(SCHEMA.read_text()), "")
