"""Find the input images and give each subject a pseudonym.

The input is either a directory (scanned recursively for NIfTI files and
DICOM series folders, BIDS names understood) or a sample sheet (TSV with
``subject``, ``path`` and optional label columns).

Two tables come out:

* ``linkage`` -- pseudonym, original key, absolute path, format, existence.
  It re-identifies subjects and belongs in ``private/`` only.
* ``subjects`` -- pseudonym, format and labels. No key, no path: this one
  goes to the shareable results.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

from pipeline_lib.core.errors import InputError
from pipeline_lib.imaging.pseudonym import pseudonymise

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
LINKAGE_COLUMNS = ["subject", "source_key", "path", "format", "exists"]
# BIDS keeps converted/processed copies of the raw data in these folders;
# scanning them would give every subject twice.
BIDS_SKIP_DIRS = {"derivatives", "sourcedata"}
# DICOMDIR (and variants such as DICOMDIR-bigEnd) is a media index with a
# DICOM preamble, not an image.
NON_IMAGE_DICOM_PREFIX = "dicomdir"

_BIDS_SUB = re.compile(r"^sub-([A-Za-z0-9]+)$")
_BIDS_SES = re.compile(r"^ses-([A-Za-z0-9]+)$")
_BIDS_FILE = re.compile(r"^sub-([A-Za-z0-9]+)(?:_ses-([A-Za-z0-9]+))?_")


def discover_inputs(source: Path, salt: str, schema_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(linkage, subjects)`` for a source directory or sample sheet.

    Rows are sorted by pseudonym. Raises InputError naming the file and the
    problem for an unusable source, an invalid sheet, two inputs with the
    same subject key, or two keys that share a pseudonym.
    """
    source = Path(source)
    if source.is_dir():
        records = _scan_directory(source)
        labels: list[str] = []
    elif source.is_file() and source.suffix.lower() in (".tsv", ".txt"):
        records, labels = _read_sample_sheet(source, Path(schema_path))
    elif source.exists():
        raise InputError(f"{source}: input source must be a directory or a .tsv sample sheet")
    else:
        raise InputError(f"{source}: input source does not exist")
    if not records:
        raise InputError(f"{source}: no NIfTI files or DICOM series found")
    return _build_tables(records, labels, salt, source)


# ---------------------------------------------------------------- detection


def is_nifti_name(name: str) -> bool:
    """Tell whether a file name has a NIfTI suffix (.nii or .nii.gz)."""
    return name.lower().endswith(NIFTI_SUFFIXES)


def is_dicom_file(path: Path) -> bool:
    """Tell whether ``path`` is a DICOM image file.

    A file counts when it ends in ``.dcm`` or carries the ``DICM`` magic at
    byte 128 (DICOM Part 10); DICOMDIR index files and hidden files do not.
    """
    path = Path(path)
    if path.name.startswith(".") or path.name.lower().startswith(NON_IMAGE_DICOM_PREFIX):
        return False
    if not path.is_file():
        return False
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def dicom_files_in(folder: Path) -> list[Path]:
    """Return the DICOM image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if is_dicom_file(p))


def _strip_nifti_suffix(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# ---------------------------------------------------------------- directory


def _scan_directory(root: Path) -> list[dict]:
    """Walk ``root`` and return one record per NIfTI file and DICOM folder."""
    found: list[tuple[Path, str]] = []
    for folder, dirs, files in os.walk(root):
        # prune in place so os.walk does not descend; sorted for a stable order
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in BIDS_SKIP_DIRS)
        folder_path = Path(folder)
        visible = sorted(f for f in files if not f.startswith("."))
        for name in visible:
            if is_nifti_name(name):
                found.append((folder_path / name, "nifti"))
        if any(is_dicom_file(folder_path / name) for name in visible if not is_nifti_name(name)):
            found.append((folder_path, "dicom"))

    records = []
    seen: dict[str, Path] = {}
    for path, fmt in found:
        rel = path.relative_to(root)
        # the source folder itself may be the one DICOM series: name it after the folder
        key = _subject_key(rel, fmt) if rel.parts else root.resolve().name
        if key in seen:
            raise InputError(
                f"{root}: two inputs map to subject key '{key}' ({seen[key]} and {path}); "
                "give a sample sheet to choose one image per subject"
            )
        seen[key] = path
        records.append({"source_key": key, "path": path.resolve(), "format": fmt, "labels": {}})
    return records


def _subject_key(rel: Path, fmt: str) -> str:
    """Derive the subject key from a path relative to the source directory.

    BIDS names win: ``sub-<label>`` (plus ``ses-<label>``) from the folder
    names or, failing that, from the file name. Otherwise the key is the
    relative path without its NIfTI suffix.
    """
    parts = rel.parts
    folders = parts if fmt == "dicom" else parts[:-1]
    sub = next((m.group(1) for p in folders if (m := _BIDS_SUB.match(p))), None)
    ses = next((m.group(1) for p in folders if (m := _BIDS_SES.match(p))), None)
    if sub is None and fmt == "nifti" and (m := _BIDS_FILE.match(parts[-1])):
        sub, ses = m.group(1), ses or m.group(2)
    if sub is not None:
        return f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
    if fmt == "nifti":
        return rel.with_name(_strip_nifti_suffix(rel.name)).as_posix()
    return rel.as_posix()


# ------------------------------------------------------------- sample sheet


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
        path = path.resolve()
        fmt = row.get("format") or _infer_format(path)
        records.append({"source_key": row["subject"], "path": path, "format": fmt,
                        "labels": {c: row[c] for c in labels}})
    return records, labels


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


# ------------------------------------------------------------------ tables


def _build_tables(records: list[dict], labels: list[str], salt: str, source: Path
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pseudonymise the records and split them into linkage and subjects tables."""
    by_pseudonym: dict[str, str] = {}
    for record in records:
        pseudonym = pseudonymise(record["source_key"], salt)
        other = by_pseudonym.setdefault(pseudonym, record["source_key"])
        if other != record["source_key"]:
            raise InputError(
                f"{source}: two subject keys share pseudonym {pseudonym}; choose another salt"
            )
        record["subject"] = pseudonym
    records = sorted(records, key=lambda r: r["subject"])

    linkage = pd.DataFrame(
        [{"subject": r["subject"], "source_key": r["source_key"], "path": str(r["path"]),
          "format": r["format"], "exists": r["path"].exists()} for r in records],
        columns=LINKAGE_COLUMNS,
    )
    subjects = pd.DataFrame(
        [{"subject": r["subject"], "format": r["format"], **r["labels"]} for r in records],
        columns=["subject", "format", *labels],
    )
    for subject in linkage.loc[~linkage["exists"], "subject"]:
        # the pseudonym only: the path itself may name the patient
        log.warning("subject %s: input path does not exist (ingest will fail)", subject)
    return linkage, subjects
