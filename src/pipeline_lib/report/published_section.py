"""A paper's published table beside this run's values, in the paper's layout.

The published table (``core/published.py``) is shown as printed, labelled "published, on the
authors' data" with its citation; beside it, a table with the same rows and columns holds this
run's values where the caller has them (``ours``: row key -> {column: cell}, cells as in the
published files) and "—" where not (a model the run did not train, a metric it does not compute).
The two are never merged into one column: the authors' numbers come from their data, ours from
this run's, so the layout invites comparison of patterns, not of digits.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from pipeline_lib.core.published import PublishedTable
from pipeline_lib.report.html import escape, finite_float, format_number, section

PUBLISHED_LABEL = "published, on the authors' data"
OURS_LABEL = "this run"


def cell_text(cell: Any) -> str:
    """A published-format cell as text: numbers as printed, "mean ± sd", "a / b", "—" for none."""
    if cell is None:
        return "—"
    if isinstance(cell, Mapping):
        return f"{_number(cell['mean'])} ± {_number(cell['sd'])}" if "sd" in cell and cell["sd"] is not None \
            else _number(cell.get("mean"))
    if isinstance(cell, (list, tuple)):
        return " / ".join(_number(v) for v in cell)
    if isinstance(cell, str):
        return cell
    return _number(cell)


def _number(value: Any) -> str:
    number = finite_float(value)
    if number is None:
        return "n/a"
    return f"{int(number)}" if float(number).is_integer() and abs(number) < 1e15 else format_number(number)


def _value_attr(cell: Any) -> str:
    if isinstance(cell, Mapping):
        cell = cell.get("mean")
    number = None if isinstance(cell, (list, tuple, str)) else finite_float(cell)
    return "" if number is None else f' data-value="{escape(repr(number))}"'


def _table(table: PublishedTable, cells: Mapping[tuple[str, ...], Mapping[str, Any]], kind: str,
           caption: str, extra_keys: tuple[tuple[str, ...], ...] = ()) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    body = []
    for key in [table.key(row) for row in table.rows] + list(extra_keys):
        keys = "".join(f"<th>{escape(k)}</th>" for k in key)
        values = cells.get(key, {})
        tds = "".join(
            f'<td class="num"{_value_attr(values.get(c))} data-column="{escape(c)}">{escape(cell_text(values.get(c)))}</td>'
            for c in table.columns[table.key_columns:])
        body.append(f'<tr data-key="{escape(" | ".join(key))}">{keys}{tds}</tr>')
    return (f'<table class="published-table" data-kind="{kind}" data-table="{escape(table.study)}.{escape(table.id)}">'
            f"<caption>{caption}</caption><tr>{head}</tr>{''.join(body)}</table>")


def render_published_beside(table: PublishedTable, ours: Mapping[tuple[str, ...] | str, Mapping[str, Any]] | None,
                            *, ours_note: str = "", extra_rows: bool = False) -> str:
    """The published table and this run's table side by side (HTML fragment).

    ``ours`` maps a row key (a tuple of the key cells as strings, or one string when the table has
    one key column) to {column: cell}; unknown rows or columns are an error, so a typo cannot
    silently leave a cell empty. With ``extra_rows`` (e.g. this run's readers, whose IDs are not
    the paper's), rows the paper does not have are appended to this run's table instead.
    """
    ours_cells: dict[tuple[str, ...], Mapping[str, Any]] = {}
    known_keys = {table.key(row) for row in table.rows}
    value_columns = set(table.columns[table.key_columns:])
    extra: list[tuple[str, ...]] = []
    for key, values in (ours or {}).items():
        key = (key,) if isinstance(key, str) else tuple(str(k) for k in key)
        if len(key) != table.key_columns:
            raise ValueError(f"{table.study}.{table.id}: row key {key} needs {table.key_columns} cell(s)")
        if key not in known_keys and extra_rows:
            extra.append(key)
        elif key not in known_keys:
            raise ValueError(f"{table.study}.{table.id}: no published row {key}; rows are {sorted(known_keys)}")
        unknown = set(values) - value_columns
        if unknown:
            raise ValueError(f"{table.study}.{table.id}: unknown column(s) {sorted(unknown)}")
        ours_cells[key] = values
    unit = f" Unit: {escape(table.unit)}." if table.unit else ""
    notes = f" {escape(table.notes)}" if table.notes else ""
    published = _table(table, table.as_dict(), "published",
                       f"<strong>{escape(PUBLISHED_LABEL)}</strong>: {escape(table.title)} "
                       f"({escape(table.source)}).{unit}{notes} <cite>{escape(table.citation)}</cite>")
    mine = _table(table, ours_cells, "ours",
                  f"<strong>{escape(OURS_LABEL)}</strong>, same layout; — where this run has no value."
                  + (f" {escape(ours_note)}" if ours_note else ""), tuple(extra))
    return f'<div class="published-beside">{published}{mine}</div>'


def render_published_tables(tables: Mapping[str, PublishedTable], ours: Mapping[str, Mapping] | None = None, *,
                            notes: Mapping[str, str] | None = None, extra_rows: Iterable[str] = ()) -> str:
    """Every table of a study, each beside this run's values (``ours``: table id -> row values;
    ``notes``: table id -> a sentence under this run's table; ``extra_rows``: ids of tables whose
    run may have rows the paper has not). An HTML fragment without a heading."""
    ours, notes, extra_rows = ours or {}, notes or {}, set(extra_rows)
    unknown = (set(ours) | set(notes) | extra_rows) - set(tables)
    if unknown:
        raise ValueError(f"values given for unknown published table(s) {sorted(unknown)}")
    return "\n".join(render_published_beside(t, ours.get(t.id), ours_note=notes.get(t.id, ""),
                                             extra_rows=t.id in extra_rows) for t in tables.values())


def render_published_section(tables: Mapping[str, PublishedTable],
                             ours: Mapping[str, Mapping] | None = None, *, heading: str = "The paper beside this run",
                             ident: str = "published") -> str:
    """Every table of a study, each beside this run's values (``ours``: table id -> row values)."""
    return section(heading, render_published_tables(tables, ours), ident)
