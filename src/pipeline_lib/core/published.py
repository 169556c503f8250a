"""The papers' published result tables (``presets/published/<study>.yaml``), loaded and checked.

A file holds ``study`` (its file name), ``seed`` (the seed paper's number), ``citation``,
optional ``citation_source``, ``data`` and a non-empty list of ``tables``. Each table has a unique
``id``, a ``title``, ``source`` (where in the paper), ``columns`` (distinct names), ``rows`` (one
cell per column) and optional ``key_columns`` (how many leading columns identify a row, default
1; they must be unique together), ``unit`` and ``notes``. A cell is a number, a string, null, a
``{mean, sd}`` mapping (printed "mean ± sd") or a list of numbers (one per reader, printed
"a / b"). Key cells must be strings or numbers. Every problem raises an InputError naming the
file and the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from pipeline_lib.core.errors import InputError

#: Where the published tables live, relative to the repository root.
PUBLISHED_DIR = Path(__file__).resolve().parents[3] / "presets" / "published"
FILE_KEYS = {"study", "seed", "citation", "citation_source", "data", "tables"}
TABLE_KEYS = {"id", "title", "source", "columns", "rows", "key_columns", "unit", "notes"}


@dataclass(frozen=True)
class PublishedTable:
    study: str
    citation: str
    id: str
    title: str
    source: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    key_columns: int = 1
    unit: str = ""
    notes: str = ""

    def key(self, row: tuple[Any, ...]) -> tuple[str, ...]:
        """A row's identity: its key cells as strings."""
        return tuple(str(cell) for cell in row[: self.key_columns])

    def as_dict(self) -> dict[tuple[str, ...], dict[str, Any]]:
        """key -> {column: cell} for the value columns."""
        return {self.key(row): dict(zip(self.columns[self.key_columns:], row[self.key_columns:]))
                for row in self.rows}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_cell(cell: Any, where: str) -> None:
    if cell is None or isinstance(cell, str) or _is_number(cell):
        return
    if isinstance(cell, Mapping):
        if set(cell) != {"mean", "sd"} or not all(_is_number(v) for v in cell.values()):
            raise InputError(f"{where}: a mean ± sd cell must be {{mean: <number>, sd: <number>}}, got {cell!r}")
        return
    if isinstance(cell, list):
        if not cell or not all(_is_number(v) for v in cell):
            raise InputError(f"{where}: a per-reader cell must be a non-empty list of numbers, got {cell!r}")
        return
    raise InputError(f"{where}: a cell must be a number, text, null, {{mean, sd}} or a list, got {cell!r}")


def load_published(path: str | Path) -> dict[str, PublishedTable]:
    """Every table of one published-results file, by id, checked."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read the published tables ({exc})") from exc
    if not isinstance(data, Mapping):
        raise InputError(f"{path}: expected a mapping with study, citation and tables")
    unknown = set(data) - FILE_KEYS
    missing = {"study", "seed", "citation", "tables"} - set(data)
    if unknown or missing:
        raise InputError(f"{path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    if data["study"] != path.stem:
        raise InputError(f"{path}: study {data['study']!r} must be the file's name {path.stem!r}")
    if not isinstance(data["citation"], str) or not data["citation"].strip():
        raise InputError(f"{path}: citation must be non-empty text")
    tables = data["tables"]
    if not isinstance(tables, list) or not tables:
        raise InputError(f"{path}: tables must be a non-empty list")
    out: dict[str, PublishedTable] = {}
    for number, table in enumerate(tables, 1):
        where = f"{path}: table {number}"
        if not isinstance(table, Mapping):
            raise InputError(f"{where}: must be a mapping")
        unknown = set(table) - TABLE_KEYS
        missing = {"id", "title", "source", "columns", "rows"} - set(table)
        if unknown or missing:
            raise InputError(f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        where = f"{path}: table {table['id']!r}"
        if table["id"] in out:
            raise InputError(f"{where}: the id repeats")
        columns = table["columns"]
        if (not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns)
                or len(set(columns)) != len(columns)):
            raise InputError(f"{where}: columns must be a list of distinct names, got {columns!r}")
        keys = table.get("key_columns", 1)
        if not isinstance(keys, int) or isinstance(keys, bool) or not 1 <= keys < len(columns):
            raise InputError(f"{where}: key_columns must be 1 .. {len(columns) - 1}, got {keys!r}")
        rows = table["rows"]
        if not isinstance(rows, list) or not rows:
            raise InputError(f"{where}: rows must be a non-empty list")
        seen = set()
        for index, row in enumerate(rows, 1):
            if not isinstance(row, list) or len(row) != len(columns):
                raise InputError(f"{where}, row {index}: needs {len(columns)} cells ({', '.join(columns)}), "
                                 f"got {row!r}")
            for column, cell in zip(columns, row):
                _check_cell(cell, f"{where}, row {index}, column {column!r}")
            key = tuple(str(c) for c in row[:keys])
            if not all(isinstance(c, str) or _is_number(c) for c in row[:keys]):
                raise InputError(f"{where}, row {index}: key cells must be text or numbers, got {row[:keys]!r}")
            if key in seen:
                raise InputError(f"{where}, row {index}: key {key} repeats")
            seen.add(key)
        out[table["id"]] = PublishedTable(
            study=data["study"], citation=" ".join(data["citation"].split()), id=table["id"],
            title=" ".join(str(table["title"]).split()), source=str(table["source"]), columns=tuple(columns),
            rows=tuple(tuple(row) for row in rows), key_columns=keys, unit=str(table.get("unit", "")),
            notes=" ".join(str(table.get("notes", "")).split()))
    return out


def published_studies(folder: str | Path = PUBLISHED_DIR) -> dict[str, dict[str, PublishedTable]]:
    """Every study's tables in ``folder`` (``<study>.yaml``), by study."""
    return {path.stem: load_published(path) for path in sorted(Path(folder).glob("*.yaml"))}


def published_path(study: str | Path) -> Path:
    """The file of ``report.published``: a study name (``presets/published/<study>.yaml``) or a path
    to such a file (absolute, or relative to the working directory). InputError when there is none."""
    text = str(study).strip()
    if not text:
        raise InputError("report.published: empty; give a study name or a path to its .yaml file")
    looks_like_path = text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text
    path = Path(text) if looks_like_path else PUBLISHED_DIR / f"{text}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PUBLISHED_DIR.glob("*.yaml")))
        raise InputError(f"report.published: {text} is neither a published study ({known}) nor a file")
    return path
