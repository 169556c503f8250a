"""The paper's protocol beside this run's, item by item (``report.published``).

One row per protocol item of the published file (``protocol:``, core/published.py): the paper's
value with its source, this run's value read from the resolved configuration (the provenance
record's ``config``) or the cohort table, and whether the two are the same. Values are compared
after normalisation (numbers as floats, text case- and space-insensitive, lists element-wise);
free-text items are not compared and say "see note". The note column gives the preset's reason
(``report.protocol_notes``: item id -> text) and the transcription's own note. Nothing of the
paper's side is written here: it all comes from the published file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from pipeline_lib.core.published import PROTOCOL_GROUPS, ProtocolItem
from pipeline_lib.report.html import escape as _esc
from pipeline_lib.report.inputs import ReportData
from pipeline_lib.report.published_section import cell_text
from pipeline_lib.report.sections import Notes, Section

SAME, DIFFERS, SEE_NOTE, NOT_STATED = "same", "differs", "see note", "not stated"
NOT_SET = "not set in this run"
NO_COUNTERPART = "nothing of this run corresponds"
_FILTER = re.compile(r"^([A-Za-z0-9_]+)\[([A-Za-z0-9_]+)=([^\]]+)\]$")


@dataclass(frozen=True)
class ProtocolRow:
    item: ProtocolItem
    ours: tuple[Any, ...]
    status: str
    reason: str


def config_values(config: Mapping | None, path: str) -> list[Any]:
    """Every value at ``path`` in ``config`` (steps: ``key``, ``*`` = every entry of a mapping or list,
    ``key[field=value]`` = the entries of ``key`` whose ``field`` is ``value``), in config order."""
    nodes: list[Any] = [config or {}]
    for step in path.split("."):
        found = []
        for node in nodes:
            if step == "*" and isinstance(node, list):
                found.extend(node)
            if not isinstance(node, Mapping):
                continue
            matched = _FILTER.match(step)
            if step == "*":
                found.extend(node.values())
            elif matched:
                key, field, wanted = matched.groups()
                children = node.get(key)
                if isinstance(children, Mapping):
                    found.extend(c for c in children.values()
                                 if isinstance(c, Mapping) and str(c.get(field)) == wanted)
            elif step in node:
                found.append(node[step])
        nodes = found
    return nodes


def normalised(value: Any) -> Any:
    """A value in a form where equal settings compare equal: 2e-4 == 0.0002 == "2e-4", 128 == 128.0,
    "T1 " == "t1", [128, 128] == (128.0, 128.0)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(f"{float(value):.12g}")
    if isinstance(value, str):
        try:  # YAML reads 1e-4 (no dot) as text
            return normalised(float(value)) if value.strip() else ""
        except ValueError:
            return " ".join(value.split()).casefold()
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), normalised(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(normalised(v) for v in value)
    return str(value)


def _distinct(values: Iterable[Any]) -> tuple[Any, ...]:
    seen, out = set(), []
    for value in values:
        key = repr(normalised(value))
        if key not in seen:
            seen.add(key)
            out.append(value)
    return tuple(out)


def compare(item: ProtocolItem, ours: Sequence[Any]) -> str:
    """same / differs / see note / not stated for one item and this run's distinct values."""
    if item.paper is None:
        return NOT_STATED
    if item.compare == "text" or item.run is None:
        return SEE_NOTE
    if item.compare == "count":
        return SAME if len(ours) == 1 and isinstance(ours[0], (list, tuple)) and len(ours[0]) == item.paper else DIFFERS
    if item.compare == "set":
        return SAME if ({repr(normalised(v)) for v in ours} == {repr(normalised(v)) for v in item.paper}) else DIFFERS
    return SAME if len(ours) == 1 and normalised(ours[0]) == normalised(item.paper) else DIFFERS


def protocol_rows(items: Sequence[ProtocolItem], config: Mapping | None, cohort: Mapping | None,
                  reasons: Mapping[str, str] | None = None) -> list[ProtocolRow]:
    """Every item with this run's values, the comparison and the preset's reason, in group order."""
    reasons = reasons or {}
    rows = []
    for item in sorted(items, key=lambda i: PROTOCOL_GROUPS.index(i.group)):
        if item.run is None:
            ours: tuple[Any, ...] = ()
        elif item.run[0] == "cohort":
            count = (cohort or {}).get(item.run[1])
            ours = () if count is None else (count,)
        else:
            ours = _distinct(config_values(config, item.run[1]))
            if (item.compare == "set" and len(ours) == 1 and isinstance(ours[0], (list, tuple))
                    and not any(isinstance(p, (list, tuple)) for p in item.paper or ())):
                ours = _distinct(ours[0])  # one list setting (e.g. block_real_groups) against the paper's list
        rows.append(ProtocolRow(item, ours, compare(item, ours), str(reasons.get(item.id, "")).strip()))
    return rows


def value_text(value: Any) -> str:
    """A setting as text: numbers as printed, a grid or size as "128 × 128 × 40", a mapping as
    "key: value, …", none as "null"."""
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {value_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        return (" × " if numbers else ", ").join(value_text(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return cell_text(value)


def _ours_text(row: ProtocolRow) -> str:
    if row.item.run is None:
        return NO_COUNTERPART
    if not row.ours:
        return NOT_SET
    return "; ".join(value_text(v) for v in row.ours)


def _paper_text(item: ProtocolItem) -> str:
    if item.paper is None:
        return NOT_STATED
    if item.compare == "set":
        return "; ".join(value_text(v) for v in item.paper)
    return value_text(item.paper)


def render_protocol_table(rows: Sequence[ProtocolRow], citation: str) -> str:
    """The protocol table (HTML fragment): group, item, paper's value (source), this run's, status, note."""
    body = []
    for row in rows:
        item = row.item
        source = f' <span class="source">({_esc(item.source)})</span>' if item.source else ""
        notes = [f"Preset: {row.reason}" if row.reason else "",
                 "No reason stated in the preset." if row.status == DIFFERS and not row.reason else "",
                 f"Paper: {item.note}" if item.note else ""]
        note = " ".join(_esc(n) for n in notes if n)
        body.append(f'<tr data-item="{_esc(item.id)}" data-status="{_esc(row.status)}"><td>{_esc(item.group)}</td>'
                    f"<th>{_esc(item.item)}</th><td>{_esc(_paper_text(item))}{source}</td>"
                    f"<td>{_esc(_ours_text(row))}</td><td>{_esc(row.status)}</td><td>{note}</td></tr>")
    counts = {s: sum(r.status == s for r in rows) for s in (SAME, DIFFERS, SEE_NOTE, NOT_STATED)}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    return (f'<table class="protocol-table"><caption>The protocol of <cite>{_esc(citation)}</cite> item by item: the '
            "paper's value (with where it says so), this run's value from its configuration, and whether they are the "
            f"same ({_esc(summary)}).</caption><tr><th>Group</th><th>Item</th><th>Paper</th><th>This run</th>"
            f"<th>Same?</th><th>Note</th></tr>{''.join(body)}</table>")


def _protocol(data: ReportData, notes: Notes) -> str:
    """``report.published``: the paper's protocol beside this run's configuration."""
    config = (data.provenance or {}).get("config") or {}
    rows = protocol_rows(data.protocol, config, data.cohort, data.protocol_notes)
    citation = next(iter(data.published.values())).citation if data.published else ""
    if not data.provenance:
        notes.add("protocol", "this run's configuration is not known (no provenance record), so every value of "
                  "this run reads 'not set'")
    return render_protocol_table(rows, citation)


SECTIONS = [
    Section("paper", "The paper's protocol beside this run's", "protocol", _protocol, per_dataset=False,
            when=lambda data: bool(data.protocol)),
]
