"""Dataset adapters: the subjects, sequences and labels of a known dataset layout.

Discovery finds candidate inputs (NIfTI files, DICOM series folders) under ``input.source``;
an adapter (``input.layout``) turns their paths, relative to the source, into records:

``{"subject_key", "sequence", "role", "relpath", "labels": {...}}``

``role`` is ``image`` (sliced and modelled) or ``mask`` (a segmentation: carried along for QC,
never an image). A subject has one record per sequence. Adapters read only names (and, for
BIDS, the dataset's own tables and sidecars): no image is opened here.

* ``brats``: one folder per case, ``<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (BraTS 2015-2021) or
  ``<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (BraTS 2023); sequences are named t1, t1ce, t2,
  flair for both; the grade (HGG/LGG) comes from a parent folder of that name (BraTS 2015-2019)
  or else from the release's own ``name_mapping.csv`` (BraTS 2019/2020: its ``Grade`` column,
  matched on any ``BraTS_<year>_subject_ID`` column) in the case's folder or one above it inside
  the source. BraTS 2021 and later ship neither: their cases have no grade label. Only the grade
  is read from the table; its other columns (TCIA patient IDs among them) go nowhere.
* ``ixi``: ``IXI<id>-<site>-<number>-<sequence>.nii.gz``; the site gives the scanner label
  (Guys: Philips Gyroscan Intera 1.5 T; HH: Philips Intera 3 T; IOP: GE 1.5 T).
* ``bids``: entities (sub, ses, acq, run, suffix) parsed by pybids, ``participants.tsv``
  columns as labels, sidecar JSON fields (Manufacturer, ManufacturersModelName,
  MagneticFieldStrength) with BIDS' inheritance principle; a constant label (e.g. the scanner of
  a single-scanner dataset such as SALD) from config.
* ``pattern``: labels from named groups of a regular expression matched against the relative
  path (``subject`` names the subject group, ``sequence`` the sequence group, if present).
* ``auto`` (the default): one subject per input, as before adapters existed.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings import layout_pattern

LAYOUTS = ("auto", "brats", "ixi", "bids", "pattern")  # name-based; discovery adds dicom_study
IMAGE, MASK = "image", "mask"

# BraTS file-name suffix -> (sequence, role); 2023 names mapped onto the classic ones.
BRATS_SUFFIXES = {
    "t1": ("t1", IMAGE), "t1ce": ("t1ce", IMAGE), "t2": ("t2", IMAGE), "flair": ("flair", IMAGE),
    "seg": ("seg", MASK),
    "t1n": ("t1", IMAGE), "t1c": ("t1ce", IMAGE), "t2w": ("t2", IMAGE), "t2f": ("flair", IMAGE),
}
_BRATS_NAME = re.compile(r"^(?P<case>.+?)[_-](?P<suffix>t1ce|t1n|t1c|t2w|t2f|t1|t2|flair|seg)\.nii(\.gz)?$", re.I)

IXI_SITES = {
    "Guys": {"scanner": "Philips Gyroscan Intera 1.5T", "manufacturer": "Philips", "field_strength": "1.5"},
    "HH": {"scanner": "Philips Intera 3T", "manufacturer": "Philips", "field_strength": "3"},
    "IOP": {"scanner": "GE 1.5T", "manufacturer": "GE", "field_strength": "1.5"},
}
_IXI_NAME = re.compile(r"^IXI(?P<id>\d+)-(?P<site>[A-Za-z]+)-(?P<number>\d+)-(?P<sequence>[A-Za-z0-9]+)\.nii(\.gz)?$")

BIDS_SIDECAR_LABELS = {"Manufacturer": "manufacturer", "ManufacturersModelName": "scanner_model",
                       "MagneticFieldStrength": "field_strength"}


@dataclass(frozen=True)
class LayoutSettings:
    """``input.layout`` and its options."""

    name: str = "auto"
    pattern: str | None = None
    constant_labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in LAYOUTS:
            raise InputError(f"input.layout must be one of {', '.join(LAYOUTS)}, not {self.name!r}")
        if self.name == "pattern":
            layout_pattern(self.pattern)


def adapt(relpaths: Iterable[str], layout: LayoutSettings, root: Path | None = None, *,
          unique: bool = True) -> tuple[list[dict], list[dict]]:
    """``(records, ignored)`` for the inputs at ``relpaths`` (POSIX paths relative to the source).

    ``ignored`` lists the inputs the layout does not recognise, each with why; they do not stop
    the rest. ``root`` is the source folder (BIDS reads participants.tsv and sidecars there).
    ``unique=False`` leaves two inputs for one subject and sequence to the caller (discovery
    lists them as ignored instead of stopping).
    """
    relpaths = sorted(str(PurePosixPath(p)) for p in relpaths)
    if layout.name == "auto":
        records = [_record(_auto_key(p), "", IMAGE, p, {}) for p in relpaths]
        ignored = []
    elif layout.name == "brats":
        records, ignored = _brats(relpaths, root)
    elif layout.name == "ixi":
        records, ignored = _ixi(relpaths)
    elif layout.name == "bids":
        records, ignored = _bids(relpaths, root)
    else:
        records, ignored = _pattern(relpaths, re.compile(layout.pattern))
    for record in records:
        for key, value in layout.constant_labels.items():
            record["labels"].setdefault(key, str(value))
    if unique:
        _check_unique(records)
    return records, ignored


def _record(subject_key: str, sequence: str, role: str, relpath: str, labels: dict) -> dict:
    return {"subject_key": subject_key, "sequence": sequence, "role": role, "relpath": relpath,
            "labels": dict(labels)}


def _auto_key(relpath: str) -> str:
    name = PurePosixPath(relpath)
    stem = re.sub(r"\.nii(\.gz)?$", "", name.name, flags=re.I)
    return str(name.parent / stem) if str(name.parent) != "." else stem


def _brats(relpaths: list[str], root: Path | None) -> tuple[list[dict], list[dict]]:
    records, ignored = [], []
    mapping_tables: dict[PurePosixPath, dict[str, str]] = {}
    for relpath in relpaths:
        path = PurePosixPath(relpath)
        match = _BRATS_NAME.match(path.name)
        if not match:
            ignored.append({"relpath": relpath, "why": "not a BraTS file name (<case>_t1.nii.gz, <case>-t1n.nii.gz, ...)"})
            continue
        sequence, role = BRATS_SUFFIXES[match["suffix"].lower()]
        labels = {}
        grade = next((part.upper() for part in path.parts[:-1] if part.upper() in ("HGG", "LGG")), None)
        if grade is None and root is not None:
            grade = _mapped_grade(root, path, match["case"], mapping_tables)
        if grade:
            labels["grade"] = grade
        records.append(_record(match["case"], sequence, role, relpath, labels))
    return records, ignored


BRATS_MAPPING = "name_mapping.csv"
_BRATS_ID_COLUMN = re.compile(r"^brats_?\d{2,4}_subject_id$", re.I)
_GRADE_VALUE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")


def _mapped_grade(root: Path, path: PurePosixPath, case: str,
                  tables: dict[PurePosixPath, dict[str, str]]) -> str | None:
    """The case's grade from the nearest ``name_mapping.csv`` at or above its folder, or None."""
    for depth in range(len(path.parts) - 1, -1, -1):
        folder = PurePosixPath(*path.parts[:depth])
        if folder not in tables:
            tables[folder] = _read_brats_mapping(root, folder / BRATS_MAPPING)
        if case in tables[folder]:
            return tables[folder][case]
    return None


def _read_brats_mapping(root: Path, relpath: PurePosixPath) -> dict[str, str]:
    """case ID -> grade of one BraTS mapping table; {} when there is none or it has no Grade
    column (the validation sets' tables). Links are not followed, as in discovery's scan."""
    table = root / relpath
    try:
        if not stat.S_ISREG(os.lstat(table).st_mode):
            return {}
    except OSError:
        return {}
    try:
        frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{relpath}: cannot read as a CSV table ({type(exc).__name__})") from None
    grade_column = next((c for c in frame.columns if str(c).strip().lower() == "grade"), None)
    if grade_column is None:
        return {}
    id_columns = [c for c in frame.columns if _BRATS_ID_COLUMN.match(str(c).strip())]
    if not id_columns:
        raise InputError(f"{relpath}: a Grade column but no BraTS_<year>_subject_ID column to match "
                         "the cases with")
    grades: dict[str, str] = {}
    for line, row in enumerate(frame.to_dict("records"), start=2):  # line 1 is the header
        grade = row[grade_column].strip().upper()
        if not grade:
            continue
        if not _GRADE_VALUE.match(grade):
            # the value is not echoed: a free-text cell may hold anything
            raise InputError(f"{relpath}: line {line}: the Grade is not a short label such as HGG or LGG")
        for column in id_columns:
            case = row[column].strip()
            if case and grades.setdefault(case, grade) != grade:
                raise InputError(f"{relpath}: line {line}: a case listed before with another Grade")
    return grades


def _ixi(relpaths: list[str]) -> tuple[list[dict], list[dict]]:
    records, ignored = [], []
    for relpath in relpaths:
        match = _IXI_NAME.match(PurePosixPath(relpath).name)
        if not match:
            ignored.append({"relpath": relpath, "why": "not an IXI file name (IXI<id>-<site>-<number>-<sequence>.nii.gz)"})
            continue
        site = IXI_SITES.get(match["site"])
        if site is None:
            ignored.append({"relpath": relpath, "why": f"unknown IXI site {match['site']!r} "
                                                       f"(known: {', '.join(IXI_SITES)})"})
            continue
        labels = {"site": match["site"], **site}
        records.append(_record(f"IXI{match['id']}", match["sequence"].lower(), IMAGE, relpath, labels))
    return records, ignored


def _pattern(relpaths: list[str], pattern: re.Pattern) -> tuple[list[dict], list[dict]]:
    records, ignored = [], []
    for relpath in relpaths:
        match = pattern.search(relpath)
        if not match or not match["subject"]:
            ignored.append({"relpath": relpath, "why": "does not match input.pattern"})
            continue
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
        subject = groups.pop("subject")
        sequence = groups.pop("sequence", "")
        records.append(_record(subject, sequence.lower(), IMAGE, relpath, groups))
    return records, ignored


# ---------------------------------------------------------------- BIDS
# Entities are parsed by pybids (the BIDS community's library, with the specification's entity
# patterns). Sidecar inheritance is resolved here from the files discovery already found, instead
# of a pybids BIDSLayout: the layout would walk (and index) the tree on its own, outside the
# guarded scan that keeps hostile trees from stopping discovery.


def _bids(relpaths: list[str], root: Path | None) -> tuple[list[dict], list[dict]]:
    """BIDS entities from the names; labels from participants.tsv and sidecars (inheritance principle)."""
    if root is None:
        raise InputError("the bids layout needs the source folder")
    participants = _participants(root)
    records, ignored = [], []
    for relpath in relpaths:
        path = PurePosixPath(relpath)
        entities = bids_entities(relpath)
        if "subject" not in entities or "suffix" not in entities:
            ignored.append({"relpath": relpath, "why": "not a BIDS file name (sub-<label>[_ses-<label>]..._<suffix>.nii.gz)"})
            continue
        if path.parts[0] in ("derivatives", "sourcedata", "code"):
            ignored.append({"relpath": relpath, "why": f"{path.parts[0]}/ holds no raw data"})
            continue
        key = f"sub-{entities['subject']}" + (f"_ses-{entities['session']}" if "session" in entities else "")
        labels = dict(participants.get(entities["subject"], {}))
        labels.update(_sidecar_labels(root, path, entities))
        sequence = str(entities["suffix"]).lower() + "".join(
            f"_{short}-{entities[name]}" for name, short in (("acquisition", "acq"), ("run", "run"))
            if name in entities)
        records.append(_record(key, sequence, IMAGE, relpath, labels))
    return records, ignored


def bids_entities(relpath: str) -> dict[str, Any]:
    """pybids' entities of a path relative to the dataset root (extension and datatype included)."""
    from bids.layout import parse_file_entities

    return parse_file_entities("/" + str(PurePosixPath(relpath)))


def _participants(root: Path) -> dict[str, dict[str, str]]:
    table = root / "participants.tsv"
    if not table.is_file():
        return {}
    try:
        frame = pd.read_csv(table, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"participants.tsv: cannot read as a TSV table ({exc})") from exc
    if "participant_id" not in frame.columns:
        raise InputError("participants.tsv: no participant_id column")
    out = {}
    for row in frame.to_dict("records"):
        label = str(row.pop("participant_id")).removeprefix("sub-")
        out[label] = {k: v for k, v in row.items() if v not in ("", "n/a")}
    return out


_MATCHED_ENTITIES = ("subject", "session", "acquisition", "run", "suffix")


def _sidecar_labels(root: Path, path: PurePosixPath, entities: Mapping[str, Any]) -> dict[str, str]:
    """Scanner fields from the JSON sidecars that apply to ``path`` (BIDS inheritance principle: a
    sidecar in the image's folder or above applies when its entities are a subset of the image's;
    deeper ones override)."""
    merged: dict[str, Any] = {}
    for depth in range(len(path.parts)):  # top folder first, so deeper sidecars override
        folder = PurePosixPath(*path.parts[:depth])
        directory = root / folder
        if not directory.is_dir():
            continue
        for sidecar in sorted(directory.glob("*.json")):
            side = bids_entities(str(folder / sidecar.name))
            if side.get("suffix") != entities.get("suffix"):
                continue
            if all(side[k] == entities.get(k) for k in _MATCHED_ENTITIES if k in side):
                try:
                    merged.update(json.loads(sidecar.read_text()))
                except (OSError, ValueError) as exc:
                    raise InputError(f"{folder / sidecar.name}: not a readable JSON sidecar ({exc})") from exc
    return {label: str(merged[key]) for key, label in BIDS_SIDECAR_LABELS.items() if key in merged}


def _check_unique(records: list[dict]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for record in records:
        key = (record["subject_key"], record["sequence"])
        if key in seen:
            raise InputError(f"two inputs for subject {record['subject_key']!r}, sequence "
                             f"{record['sequence'] or '(none)'!r}: {seen[key]} and {record['relpath']}")
        seen[key] = record["relpath"]
