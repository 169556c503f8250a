"""The quality-control blocks: the cohort's counts, the ingest QC table and the registration QC table
with each subject's overlay (worst first; beyond a size only the worst flagged subjects' overlays are
inlined)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from pipeline_lib.core.qc import FLAGGED, worst_first
from pipeline_lib.report.html import (escape as _esc, finite_float as _as_float, float_or_nan, format_number,
                                      is_integer, plain_text, zoomable_img)
from pipeline_lib.report.inputs import ReportData
from pipeline_lib.report.sections import Notes, Section

_COHORT_LABELS = {
    "subjects_found": "Subjects found",
    "input_entries_ignored": "Input entries ignored (kind and reason in the ingest QC table)",
    "subjects_ingested": "Subjects ingested",
    "subjects_registered": "Subjects registered",
    "subjects_flagged": "Subjects flagged (registration QC)",
    "subjects_failed": "Subjects failed",
    "slices_train": "Slices (train)",
    "slices_train_augmented": "Augmented training images (offline, 3-D)",
    "slices_test": "Slices (test)",
    "image_size": "Image size (pixels)",
    "channels": "Channels (stacked sequences)",
}



def _cohort_section(data: ReportData, notes: Notes) -> str:
    return _cohort_table(data.cohort)


def _ingest_section(data: ReportData, notes: Notes) -> str:
    return _frame_table(data.ingest_qc, table_id="ingest-qc")


def _registration_section(data: ReportData, notes: Notes) -> str:
    return _registration_block(data.registration_qc, data.overlays, data.registration_caption)



def _cohort_table(cohort: Mapping) -> str:
    ordered = [k for k in _COHORT_LABELS if k in cohort] + [k for k in cohort if k not in _COHORT_LABELS]
    if not ordered:
        return "<p>No cohort summary was given.</p>"
    rows = []
    for key in ordered:
        label = _COHORT_LABELS.get(key, str(key))
        rows.append(f'<tr data-key="{_esc(key)}"><th>{_esc(label)}</th><td>{_esc(plain_text(cohort[key]))}</td></tr>')
    return '<table id="cohort">' + "".join(rows) + "</table>"


def _frame_table(frame: pd.DataFrame, table_id: str, extra: Mapping[int, str] | None = None,
                 extra_heading: str | None = None) -> str:
    """Render every column of ``frame``; ``extra`` adds one raw-HTML cell per row index."""
    if frame is None or frame.empty:
        return f'<p id="{_esc(table_id)}">No rows.</p>'
    head = "".join(f"<th>{_esc(str(c))}</th>" for c in frame.columns)
    if extra is not None:
        head += f"<th>{_esc(extra_heading or '')}</th>"
    numeric = {c: pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns}
    rows = []
    for pos in range(len(frame)):
        # Column-wise access keeps each column's dtype (iterrows would upcast ints).
        record = {c: frame[c].iloc[pos] for c in frame.columns}
        status = str(record.get("status", "")).lower()
        css = ' class="failed"' if status in {"failed", "skipped"} else (' class="flagged"' if status == FLAGGED else "")
        cells = "".join(_value_cell(record[c], numeric[c]) for c in frame.columns)
        if extra is not None:
            cells += f"<td>{extra.get(pos, '')}</td>"
        rows.append(f"<tr{css}>{cells}</tr>")
    return f'<table id="{_esc(table_id)}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


#: Up to this many subjects every overlay is embedded; above it only those of flagged (and failed,
#: should one have an overlay) subjects, worst first, within :data:`OVERLAY_EMBED_BYTES`; every
#: other subject's row links to its overlay: 2,000 subjects give a report under 2 MB (tests/test_report.py).
EMBED_EVERY_OVERLAY_UP_TO = 50
OVERLAY_EMBED_BYTES = 500_000
#: The report is results/report/index.html and a subject's overlay results/register/<subject>/overlay.png.
OVERLAY_LINK = "../register/{subject}/overlay.png"


def _registration_block(frame: pd.DataFrame, overlays: Mapping[str, Path], caption: str = "") -> str:
    """Registration QC, worst first, each subject's overlay beside its row (click to enlarge).

    The table is ordered failed, skipped, flagged, ok, then by brain-mask
    overlap (lowest first); every number carries its exact value in ``data-value``. Beyond
    :data:`EMBED_EVERY_OVERLAY_UP_TO` subjects only the worst subjects' overlays are embedded
    (see there) and the others are relative links, the one place the report points outside itself.
    """
    if frame is not None and "status" in frame and "subject" in frame:
        frame = worst_first(frame, "mask_dice")
    subjects = [str(s) for s in frame["subject"]] if frame is not None and "subject" in frame else []
    statuses = ([str(s).lower() for s in frame["status"]] if frame is not None and "status" in frame
                else [""] * len(subjects))
    unmatched = [str(k) for k in overlays if str(k) not in subjects]
    embed_all = len(subjects) + len(unmatched) <= EMBED_EVERY_OVERLAY_UP_TO
    budget = OVERLAY_EMBED_BYTES
    shown: dict[str, str] = {}
    for subject, status in zip(subjects + unmatched, statuses + [""] * len(unmatched)):
        if subject not in overlays:
            continue
        if not embed_all and status in (FLAGGED, "failed") and budget > 0:
            thumb = zoomable_img(overlays[subject], f"overlay {subject}", "thumb")
            if len(thumb) <= budget:  # worst first: a later, better subject is the one linked
                budget -= len(thumb)
                shown[subject] = thumb
                continue
        shown[subject] = (zoomable_img(overlays[subject], f"overlay {subject}", "thumb") if embed_all else
                          f'<a class="overlay-link" href="{_esc(OVERLAY_LINK.format(subject=subject))}">overlay</a>')
    thumbs = {pos: shown[subject] for pos, subject in enumerate(subjects) if subject in shown}
    table = _frame_table(frame, "registration-qc", extra=thumbs,
                         extra_heading="Overlay, yellow: brain mask (click to enlarge)")
    if caption:
        table = table.replace("<thead>", f"<caption>{_esc(caption)}</caption><thead>", 1)
    parts = [table]
    if not embed_all:
        embedded = sum(1 for html in shown.values() if html.startswith("<label"))
        parts.append(f'<p class="overlay-note">{len(subjects) + len(unmatched)} subjects: {embedded} overlays of '
                     f"flagged subjects are shown here (worst first, within {OVERLAY_EMBED_BYTES // 1000} kB); "
                     "every other overlay is a link to results/register/&lt;subject&gt;/overlay.png, which "
                     "opens where the results folder lies beside this report.</p>")
    if unmatched:
        parts.append("\n".join(f"<figure><figcaption>{_esc(k)}</figcaption>{shown[k]}</figure>" for k in unmatched))
    return "\n".join(parts)


def _value_cell(value: Any, numeric_column: bool) -> str:
    """A table cell: numbers right-aligned with ``data-value``, the rest as escaped text."""
    if isinstance(value, bool) or not numeric_column:
        # In a text column a NaN is pandas' marker for an empty field.
        missing = isinstance(value, float) and math.isnan(value)
        return f"<td>{'' if missing else _esc(plain_text(value))}</td>"
    if is_integer(value):
        return f'<td class="num" data-value="{_esc(repr(float(value)))}">{int(value)}</td>'
    number = _as_float(value)
    css = "num" if number is not None else "num na"
    return f'<td class="{css}" data-value="{_esc(repr(float_or_nan(value)))}">{_esc(format_number(value))}</td>'


SECTIONS = [
    Section("qc", "Cohort", "cohort-summary", _cohort_section),
    Section("qc", "Ingest QC", "ingest", _ingest_section, per_dataset=False),
    Section("qc", "Registration QC", "registration", _registration_section, per_dataset=False),
]
