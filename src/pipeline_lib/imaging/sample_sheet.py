"""A sample sheet as the input: a TSV with ``subject``, ``path`` and optional label columns, checked
against the config schema's sheet schema (workflow/schemas/samples.schema.yaml); its paths may lie
anywhere, since the sheet names them explicitly."""

from __future__ import annotations

import os
import re
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

from pipeline_lib.core.errors import InputError
from pipeline_lib.imaging.input_scan import (DICOM_KIND, MISSING_KIND, NIFTI_KIND, _series_kind, dicom_files_in,
                                             is_nifti_name)



def load_schema(schema_path: Path) -> dict:
    """Read a YAML JSON-Schema and check that it is itself a valid schema."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def _read_sample_sheet(sheet: Path, schema_path: Path) -> tuple[list[dict], list[str]]:
    """Validate the sheet and return its records and label column names."""
    try:
        # dtype=str keeps IDs like 007 intact; empty cells stay empty strings
        frame = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{sheet}: not a readable tab-separated sample sheet ({exc})") from None
    columns = [str(c) for c in frame.columns]
    schema = load_schema(schema_path)
    _check_columns(sheet, columns, schema)
    if frame.empty:
        raise InputError(f"{sheet}: sample sheet has no rows")

    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for index, row in enumerate(frame.to_dict(orient="records")):
        line = index + 2  # line 1 is the header
        for error in sorted(validator.iter_errors(row), key=lambda e: list(e.absolute_path)):
            where = f"column '{error.absolute_path[0]}'" if error.absolute_path else "row"
            problems.append(f"{sheet}: line {line}: {where}: {error.message}")
    _check_duplicates(sheet, frame, "subject", problems)
    if problems:
        raise InputError("invalid sample sheet:\n" + "\n".join(problems))

    labels = [c for c in columns if c not in ("subject", "path", "format")]
    records = []
    for row in frame.to_dict(orient="records"):
        path = Path(row["path"])
        if not path.is_absolute():
            path = sheet.parent / path
        fmt = row.get("format") or _infer_format(path)
        files = _sheet_series_files(path) if fmt == "dicom" else None
        kind = MISSING_KIND if not os.path.lexists(path) else _series_kind(len(files)) if files is not None \
            else NIFTI_KIND if fmt == "nifti" else DICOM_KIND
        records.append({"source_key": row["subject"], "rel": row["path"], "path": path, "format": fmt,
                        "kind": kind, "files": files,
                        "labels": {c: row[c] for c in labels}})
    return records, labels


def _sheet_series_files(folder: Path) -> list[Path] | None:
    """The DICOM files of a series folder named in a sheet (None when it cannot be listed)."""
    try:
        return dicom_files_in(folder) if folder.is_dir() else None
    except OSError:
        return None


def _check_columns(sheet: Path, columns: list[str], schema: dict) -> None:
    """Reject a header that lacks required columns, repeats one or uses a forbidden name.

    Checked here rather than per row so the message names the column plainly.
    """
    missing = [c for c in ("subject", "path") if c not in columns]
    if missing:
        raise InputError(
            f"{sheet}: sample sheet lacks required column(s) {', '.join(missing)} "
            f"(found: {', '.join(columns) or 'none'}); is it tab-separated?"
        )
    # pandas renames a repeated header 'x' to 'x.1'
    repeated = [c for c in columns if re.fullmatch(r".+\.\d+", c) and c.rsplit(".", 1)[0] in columns]
    if repeated:
        raise InputError(f"{sheet}: repeated column name(s) in header: {', '.join(repeated)}")
    names = jsonschema.Draft202012Validator(schema.get("propertyNames", {}))
    bad = [c for c in columns if not names.is_valid(c)]
    if bad:
        reserved = schema.get("propertyNames", {}).get("not", {}).get("enum", [])
        raise InputError(
            f"{sheet}: column name(s) not allowed: {', '.join(bad)} (label columns must be "
            f"letters, digits and '_' starting with a letter, and not one of {', '.join(reserved)})"
        )


def _check_duplicates(sheet: Path, frame: pd.DataFrame, column: str, problems: list[str]) -> None:
    """Append one problem per value of ``column`` that occurs on several lines."""
    lines_by_value: dict[str, list[int]] = {}
    for index, value in enumerate(frame[column]):
        lines_by_value.setdefault(value, []).append(index + 2)
    for lines in lines_by_value.values():
        if len(lines) > 1:
            problems.append(
                f"{sheet}: lines {', '.join(map(str, lines))}: duplicate {column} "
                "(each subject must appear once)"
            )


def _infer_format(path: Path) -> str:
    """Guess the format of a sheet entry: NIfTI by suffix, otherwise a DICOM folder."""
    return "nifti" if is_nifti_name(path.name) else "dicom"
