"""What every report section is built from: :class:`Section` (a block of the page), :data:`GROUPS`
(the questions the page answers, in order) and :class:`Notes` (the page's warnings, one per kind).

A section module defines its render functions ``(ReportData, Notes) -> str`` and a ``SECTIONS`` list of
its entries; ``document.py`` places every module's entries on the page, group by group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pipeline_lib.report.html import escape as _esc
from pipeline_lib.report.inputs import ReportData

#: The questions the sections answer, in page order: (group id, heading).
GROUPS = (
    ("paper", "The paper beside this run: published, on the authors' data"),
    ("fidelity", "Fidelity: do the samples look like real slices?"),
    ("diversity", "Diversity: do the samples cover the variety of real slices?"),
    ("memorization", "Memorization: do the models copy training patients?"),
    ("usefulness", "Usefulness: do the samples help a downstream task?"),
    ("reading", "Human reading: can readers tell synthetic from real?"),
    ("qc", "Quality control: inputs, registration and training"),
)


@dataclass(frozen=True)
class Section:
    """A block of the page: its group (a :data:`GROUPS` id), heading, anchor and render function."""

    group: str
    title: str
    anchor: str
    render: Callable[[ReportData, Notes], str]
    #: With several datasets, render once per dataset (False: once for the cohort, e.g. ingest QC).
    per_dataset: bool = True
    #: Whether the page has this section at all (None: always), e.g. only with report.published set.
    when: Callable[[ReportData], bool] | None = None

    def shown(self, data: ReportData) -> bool:
        return self.when is None or bool(self.when(data))



class Notes:
    """The page's warnings, one per kind, each listing what it applies to."""

    def __init__(self) -> None:
        self._kinds: dict[str, tuple[str, list[str]]] = {}

    def add(self, kind: str, message: str, item: str = "") -> None:
        _, items = self._kinds.setdefault(kind, (message, []))
        if item and item not in items:
            items.append(item)

    def __len__(self) -> int:
        return len(self._kinds)

    def html(self) -> str:
        if not self._kinds:
            return ""
        rows = []
        for kind, (message, items) in self._kinds.items():
            applies = f" Applies to: {', '.join(items)}." if items else ""
            rows.append(f'<li data-kind="{_esc(kind)}"><b>{_esc(kind[:1].upper() + kind[1:])}</b>: {_esc(message)}{_esc(applies)}</li>')
        return f'<div class="warnings" id="warnings"><p>⚠ Warnings</p><ul>{"".join(rows)}</ul></div>'
