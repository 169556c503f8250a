"""The per-subject status protocol shared by every per-subject stage, and its QC tables.

Each per-subject stage (ingest, register, ...) writes ``status.json`` into its
output folder, always, with ``subject``, ``stage``, ``status``, ``kind``,
``reason`` and ``warning``:

* ``ok``: the stage's data files are in the folder (``warning`` may say what was
  odd but acceptable, e.g. qform and sform a fraction of a millimetre apart);
* ``flagged``: the stage produced its data files but a quality check failed
  (``reason`` lists every failed check with its number and bound, e.g. "brain mask
  overlap 0.61 < 0.85"); the files stay so that the subject can be inspected and,
  if the user says so, used;
* ``failed``: this stage refused the subject (``reason`` says why); no data files;
* ``skipped``: an earlier stage did not deliver the subject (``reason`` says which and why).

``kind`` says what the input is in words a user knows ("NIfTI file", "DICOM series
(176 files)"); together with the pseudonym it names the input. No status, reason or
QC table under ``results/`` ever holds a path: a folder may be named after the
patient. Entries of the input tree that discovery did not ingest appear in the
ingest QC table with status ``ignored``, their ``entry-`` pseudonym, kind and reason;
the private QC table (:func:`private_qc_table`) adds the paths for the data steward.

``on_bad_input`` decides what a failure does to the run: ``skip`` records it and
goes on; ``fail`` raises after the status is written (:func:`enforce_on_bad_input`).
A ``flagged`` subject is not bad input (the file was read and processed) and never
stops the run; ``on_poor_fit`` decides whether later stages use it:
``exclude`` (default) leaves it out like a failure, ``keep`` uses it like ``ok``
(:func:`usable_statuses`, :func:`usable_outputs`). A subject a later stage leaves out
because it was flagged is passed on as ``skipped`` like a failure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import write_json
from pipeline_lib.core.subject_batches import subject_folders

STATUS_NAME = "status.json"
STATUS_COLUMNS = ["subject", "stage", "status", "kind", "reason", "warning"]
OK, FLAGGED, FAILED, SKIPPED, IGNORED = "ok", "flagged", "failed", "skipped", "ignored"
STATUSES = (OK, FLAGGED, FAILED, SKIPPED, IGNORED)
ON_BAD_INPUT = ("skip", "fail")
ON_POOR_FIT = ("exclude", "keep")


def new_status(subject: str, stage: str, kind: str = "") -> dict:
    """A stage's status before it runs: ``ok`` until a failure says otherwise."""
    return {"subject": subject, "status": OK, "stage": stage, "kind": kind, "reason": "", "warning": ""}


def write_status(out_dir: str | Path, status: dict) -> dict:
    write_json(Path(out_dir) / STATUS_NAME, status)
    return status


def read_status(stage_dir: str | Path) -> dict:
    return json.loads((Path(stage_dir) / STATUS_NAME).read_text())


def skipped_status(upstream: dict, stage: str, subject: str) -> dict:
    """The status of a subject an earlier stage did not deliver."""
    if upstream.get("status") == OK:
        raise InputError(f"subject {subject}: upstream stage succeeded, nothing to pass on")
    upstream_stage = upstream.get("stage", "upstream")
    upstream_reason = upstream.get("reason", "")
    reason = f"{upstream_stage} {upstream.get('status', FAILED)}" + (f": {upstream_reason}" if upstream_reason else "")
    return {"subject": subject, "status": SKIPPED, "stage": stage, "kind": upstream.get("kind", ""),
            "reason": reason, "warning": ""}


def flagged_status(status: dict, reasons: list[str]) -> dict:
    """``status`` turned ``flagged`` with every failed check in ``reason``; unchanged without reasons."""
    if not reasons:
        return status
    return {**status, "status": FLAGGED, "reason": "; ".join(reasons)}


def enforce_on_bad_input(status: dict, on_bad_input: str) -> None:
    """With ``on_bad_input: fail``, raise InputError naming the subject, its input kind and the
    reason when it failed or was skipped; with ``skip``, do nothing (the status is already
    recorded). A ``flagged`` subject passes: a poor fit is ``on_poor_fit``'s business, not bad input."""
    if on_bad_input not in ON_BAD_INPUT:
        raise InputError(f"on_bad_input must be one of {', '.join(ON_BAD_INPUT)}, not {on_bad_input!r}")
    if on_bad_input == "fail" and status.get("status") not in (OK, FLAGGED):
        what = f"subject {status.get('subject')}" + (f" ({status['kind']})" if status.get("kind") else "")
        raise InputError(f"{what}: {status.get('stage')} {status.get('status')}: {status.get('reason')}")


def collect_status_table(stage_dirs: list[str | Path], qc_file: str | None = None,
                         worst_first_by: str | None = None) -> pd.DataFrame:
    """One row per subject folder; the numbers and strings of ``qc_file`` (a JSON object) are
    appended as columns (lists and objects in it are left out).

    With ``worst_first_by`` (a column of ``qc_file``, higher = better) rows are
    ordered worst first: failed, skipped, flagged, ok, and within each status by
    that column, lowest first; otherwise in folder order.
    """
    rows = []
    for stage_dir in subject_folders(stage_dirs):
        status = read_status(stage_dir)
        row = {col: status.get(col, "") for col in STATUS_COLUMNS}
        qc_path = Path(stage_dir) / qc_file if qc_file else None
        if qc_path is not None and qc_path.exists():
            qc = json.loads(qc_path.read_text())
            row.update({k: v for k, v in qc.items() if k not in row and not isinstance(v, (list, dict))})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else STATUS_COLUMNS)
    if worst_first_by is not None and rows:
        frame = worst_first(frame, worst_first_by)
    return frame


# failed and skipped subjects have no numbers; they lead, then the flagged ones
_SEVERITY = {FAILED: 0, SKIPPED: 1, FLAGGED: 2, OK: 3, IGNORED: 4}


def worst_first(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """``frame`` ordered by status severity (failed, skipped, flagged, ok), then ``column``
    ascending (missing values first), then subject; the index is renumbered."""
    values = pd.to_numeric(frame[column], errors="coerce") if column in frame else pd.Series(float("nan"),
                                                                                               index=frame.index)
    keys = pd.DataFrame({
        "severity": frame["status"].map(_SEVERITY).fillna(-1),
        "value": values.fillna(-float("inf")),
        "subject": frame["subject"].astype(str),
    })
    order = keys.sort_values(["severity", "value", "subject"], kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def usable_statuses(on_poor_fit: str = "exclude") -> tuple[str, ...]:
    """The statuses whose data files later stages use: ``ok``, plus ``flagged`` under ``keep``."""
    if on_poor_fit not in ON_POOR_FIT:
        raise InputError(f"registration.on_poor_fit must be one of {', '.join(ON_POOR_FIT)}, "
                         f"not {on_poor_fit!r}")
    return (OK, FLAGGED) if on_poor_fit == "keep" else (OK,)


def outputs_with_status(stage_dirs: list[str | Path], filename: str,
                        statuses: tuple[str, ...]) -> dict[str, Path]:
    """subject -> ``filename`` inside the folder, for the subjects whose status is in ``statuses``."""
    unknown = sorted(set(statuses) - set(STATUSES))
    if unknown:
        raise InputError(f"unknown subject status(es) {', '.join(unknown)}; known: {', '.join(STATUSES)}")
    found = {}
    for stage_dir in subject_folders(stage_dirs):
        status = read_status(stage_dir)
        if status.get("status") in statuses:
            found[status["subject"]] = Path(stage_dir) / filename
    return found


def successful_outputs(stage_dirs: list[str | Path], filename: str) -> dict[str, Path]:
    """subject -> ``filename`` inside the folder, for the subjects whose stage succeeded (``ok``)."""
    return outputs_with_status(stage_dirs, filename, (OK,))


def usable_outputs(stage_dirs: list[str | Path], filename: str, on_poor_fit: str = "exclude") -> dict[str, Path]:
    """subject -> ``filename`` for the subjects a later stage uses under ``on_poor_fit``
    (``exclude``: ``ok`` only; ``keep``: ``ok`` and ``flagged``)."""
    return outputs_with_status(stage_dirs, filename, usable_statuses(on_poor_fit))


def with_ignored_entries(table: pd.DataFrame, ignored: pd.DataFrame, stage: str) -> pd.DataFrame:
    """``table`` plus one ``ignored`` row per entry of ``ignored`` (columns entry, kind, reason)."""
    rows = pd.DataFrame({"subject": ignored["entry"], "stage": stage, "status": IGNORED,
                         "kind": ignored["kind"], "reason": ignored["reason"], "warning": ""},
                        columns=STATUS_COLUMNS)
    return pd.concat([table, rows], ignore_index=True) if len(rows) else table


def private_qc_table(table: pd.DataFrame, linkage: pd.DataFrame, ignored: pd.DataFrame) -> pd.DataFrame:
    """The QC table with each row's source path (from the private linkage and ignored tables)
    as its last column: for the data steward, never for ``results/``."""
    # a multi-sequence subject has one linkage row per sequence, its reference sequence first
    first = linkage.drop_duplicates("subject", keep="first")
    paths = {**dict(zip(first["subject"], first["path"])), **dict(zip(ignored["entry"], ignored["path"]))}
    return table.assign(path=[paths.get(name, "") for name in table["subject"]])
