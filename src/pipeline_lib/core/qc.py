"""Per-subject status files (status.json in each stage's output folder) as tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

STATUS_COLUMNS = ["subject", "stage", "status", "file", "reason"]


def read_status(stage_dir: str | Path) -> dict:
    return json.loads((Path(stage_dir) / "status.json").read_text())


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
        if status.get("status") == "ok":
            found[status["subject"]] = Path(stage_dir) / filename
    return found
