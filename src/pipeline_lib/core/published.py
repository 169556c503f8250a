"""The papers' published result tables (``presets/published/<study>.yaml``), loaded and checked.

A file holds ``study`` (its file name), ``seed`` (the seed paper's number), ``citation``,
optional ``citation_source``, ``data`` and a non-empty list of ``tables``. Each table has a unique
``id``, a ``title``, ``source`` (where in the paper), ``columns`` (distinct names), ``rows`` (one
cell per column) and optional ``key_columns`` (how many leading columns identify a row, default
1; they must be unique together), ``unit`` and ``notes``. A cell is a number, a string, null, a
``{mean, sd}`` mapping (printed "mean ± sd") or a list of numbers (one per reader, printed
"a / b"). Key cells must be strings or numbers. Every problem raises an InputError naming the
file and the table.

An optional ``protocol`` list holds the paper's protocol item by item (:class:`ProtocolItem`,
read by :func:`load_protocol`): ``id``, ``group`` (one of :data:`PROTOCOL_GROUPS`), ``item`` (the
row's label), ``paper`` (the value as the paper states it; null = not stated), ``source`` (where
in the paper; required when ``paper`` is given), ``run`` (where this run's value is:
``{config: <path>}`` into the resolved configuration, ``*`` for every key of a mapping and
``name[key=value]`` for the entries of ``name`` whose ``key`` is ``value``, or
``{cohort: <count>}`` for a count of the report's cohort table), ``compare`` (``value``: this
run has one value, equal to the paper's; ``set``: this run's distinct values are the paper's list;
``count``: this run's value is a list as long as the paper's number; ``text``: free text, not
comparable) and an optional ``note`` on the transcription.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import re

import yaml

from pipeline_lib.core.errors import InputError

#: Where the published tables live, relative to the repository root.
PUBLISHED_DIR = Path(__file__).resolve().parents[3] / "presets" / "published"
FILE_KEYS = {"study", "seed", "citation", "citation_source", "data", "tables", "protocol"}
TABLE_KEYS = {"id", "title", "source", "columns", "rows", "key_columns", "unit", "notes"}


#: The protocol table's groups, in page order.
PROTOCOL_GROUPS = ("data", "geometry", "normalisation", "model", "sampling", "metrics", "readers")
PROTOCOL_KEYS = {"id", "group", "item", "paper", "source", "run", "compare", "note"}
COMPARISONS = ("value", "set", "count", "text")
#: The counts a protocol item may take from the report's cohort table (report/inputs.py).
COHORT_COUNTS = ("subjects_found", "subjects_ingested", "subjects_registered")
#: One step of a config path: a key, ``*``, or ``key[field=value]``.
CONFIG_STEP = re.compile(r"^(?:\*|[A-Za-z0-9_]+(?:\[[A-Za-z0-9_]+=[^\]]+\])?)$")


@dataclass(frozen=True)
class ProtocolItem:
    """One protocol item of a paper (data, geometry, a model's hyperparameter …) and where this
    run's value of it is."""

    id: str
    group: str
    item: str
    paper: Any
    source: str
    run: tuple[str, str] | None
    compare: str = "value"
    note: str = ""


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


def _read_published(path: Path) -> Mapping:
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
    return data


def load_published(path: str | Path) -> dict[str, PublishedTable]:
    """Every table of one published-results file, by id, checked."""
    path = Path(path)
    data = _read_published(path)
    load_protocol(path)
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


def load_protocol(path: str | Path) -> tuple[ProtocolItem, ...]:
    """The ``protocol`` items of one published-results file, checked (empty when it has none)."""
    path = Path(path)
    items = _read_published(path).get("protocol") or []
    if not isinstance(items, list):
        raise InputError(f"{path}: protocol must be a list of items")
    out: list[ProtocolItem] = []
    for number, entry in enumerate(items, 1):
        where = f"{path}: protocol item {number}"
        if not isinstance(entry, Mapping):
            raise InputError(f"{where}: must be a mapping")
        unknown, missing = set(entry) - PROTOCOL_KEYS, {"id", "group", "item", "paper", "run"} - set(entry)
        if unknown or missing:
            raise InputError(f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        where = f"{path}: protocol item {entry['id']!r}"
        if entry["id"] in {item.id for item in out}:
            raise InputError(f"{where}: the id repeats")
        if entry["group"] not in PROTOCOL_GROUPS:
            raise InputError(f"{where}: group must be one of {', '.join(PROTOCOL_GROUPS)}, got {entry['group']!r}")
        source = str(entry.get("source") or "").strip()
        if entry["paper"] is not None and not source:
            raise InputError(f"{where}: a value the paper states needs its source (section, table or page)")
        compare = entry.get("compare", "value")
        if compare not in COMPARISONS:
            raise InputError(f"{where}: compare must be one of {', '.join(COMPARISONS)}, got {compare!r}")
        if compare == "set" and not (entry["paper"] is None or isinstance(entry["paper"], list)):
            raise InputError(f"{where}: compare: set needs the paper's values as a list")
        out.append(ProtocolItem(
            id=str(entry["id"]), group=entry["group"], item=" ".join(str(entry["item"]).split()),
            paper=entry["paper"], source=" ".join(source.split()), run=_protocol_run(entry["run"], where),
            compare=compare, note=" ".join(str(entry.get("note") or "").split())))
    return tuple(out)


def _protocol_run(run: Any, where: str) -> tuple[str, str] | None:
    """``{config: path}`` or ``{cohort: count}`` as (kind, what); None: nothing of the run matches."""
    if run is None:
        return None
    if not isinstance(run, Mapping) or len(run) != 1 or next(iter(run)) not in ("config", "cohort"):
        raise InputError(f"{where}: run must be {{config: <path>}}, {{cohort: <count>}} or null, got {run!r}")
    kind, what = next(iter(run.items()))
    if kind == "cohort" and what not in COHORT_COUNTS:
        raise InputError(f"{where}: run.cohort must be one of {', '.join(COHORT_COUNTS)}, got {what!r}")
    if kind == "config" and not (isinstance(what, str) and all(CONFIG_STEP.match(s) for s in what.split("."))):
        raise InputError(f"{where}: run.config must be a dotted path (steps: key, *, key[field=value]), got {what!r}")
    return kind, what


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
