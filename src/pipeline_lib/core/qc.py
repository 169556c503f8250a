"""The per-subject status protocol shared by every per-subject stage, and its QC tables.

Each per-subject stage (ingest, register, ...) writes ``status.json`` into its
output folder, always, with ``subject``, ``stage``, ``status``, ``file`` and
``reason``:

* ``ok``: the stage's data files are in the folder;
* ``failed``: this stage refused the subject (``reason`` says why); no data files;
* ``skipped``: an earlier stage did not deliver the subject (``reason`` says which and why).

``on_bad_input`` decides what a failure does to the run: ``skip`` records it and
goes on; ``fail`` raises after the status is written (:func:`enforce_on_bad_input`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import write_json

STATUS_NAME = "status.json"
STATUS_COLUMNS = ["subject", "stage", "status", "file", "reason"]
OK, FAILED, SKIPPED = "ok", "failed", "skipped"
ON_BAD_INPUT = ("skip", "fail")


def new_status(subject: str, stage: str, file: str | Path = "") -> dict:
    """A stage's status before it runs: ``ok`` until a failure says otherwise."""
    return {"subject": subject, "status": OK, "stage": stage, "file": str(file), "reason": ""}


def write_status(out_dir: str | Path, status: dict) -> dict:
    write_json(Path(out_dir) / STATUS_NAME, status)
    return status


def read_status(stage_dir: str | Path) -> dict:
    return json.loads((Path(stage_dir) / STATUS_NAME).read_text())


def skipped_status(upstream: dict, stage: str, subject: str) -> dict:
    """The status of a subject an earlier stage did not deliver.

    The upstream ``file`` is deliberately not copied: it may be a source path.
    """
    if upstream.get("status") == OK:
        raise InputError(f"subject {subject}: upstream stage succeeded, nothing to pass on")
    upstream_stage = upstream.get("stage", "upstream")
    upstream_reason = upstream.get("reason", "")
    reason = f"{upstream_stage} {upstream.get('status', FAILED)}" + (f": {upstream_reason}" if upstream_reason else "")
    return {"subject": subject, "status": SKIPPED, "stage": stage, "file": "", "reason": reason}


def enforce_on_bad_input(status: dict, on_bad_input: str) -> None:
    """With ``on_bad_input: fail``, raise InputError naming the file and reason of a subject that is
    not ``ok``; with ``skip``, do nothing (the status is already recorded)."""
    if on_bad_input not in ON_BAD_INPUT:
        raise InputError(f"on_bad_input must be one of {', '.join(ON_BAD_INPUT)}, not {on_bad_input!r}")
    if on_bad_input == "fail" and status.get("status") != OK:
        what = status.get("file") or f"subject {status.get('subject')}"
        raise InputError(f"{what}: {status.get('stage')} {status.get('status')}: {status.get('reason')}")


def collect_status_table(stage_dirs: list[str | Path], qc_file: str | None = None) -> pd.DataFrame:
    """One row per subject folder; columns of ``qc_file`` (a JSON of numbers) are appended."""
    rows = []
    for stage_dir in stage_dirs:
        status = read_status(stage_dir)
        row = {col: status.get(col, "") for col in STATUS_COLUMNS}
        qc_path = Path(stage_dir) / qc_file if qc_file else None
        if qc_path is not None and qc_path.exists():
            qc = json.loads(qc_path.read_text())
            row.update({k: v for k, v in qc.items() if k not in row})
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else STATUS_COLUMNS)


def successful_outputs(stage_dirs: list[str | Path], filename: str) -> dict[str, Path]:
    """subject -> ``filename`` inside the folder, for the subjects whose stage succeeded."""
    found = {}
    for stage_dir in stage_dirs:
        status = read_status(stage_dir)
        if status.get("status") == OK:
            found[status["subject"]] = Path(stage_dir) / filename
    return found
