"""``input.layout: dicom_study``: one study folder per subject, its series chosen by rules.

A study export holds many series (localizers, T1, DWI, ADC, ...), in one folder per series or
all in one folder. Every DICOM header below a study folder (the first folder level below
``input.source``; the source itself when the files lie directly in it) is read without its
pixels, the files are grouped by SeriesInstanceUID, and each series gets the sequence of the
first rule of ``input.series`` its SeriesDescription / ProtocolName / ImageType match. A DWI
rule with ``b_value`` keeps only that b-value's images (DiffusionBValue, or GE's (0043,1039) or
Siemens' (0019,100c) when the standard attribute is absent), so a series holding b0 and b1000
volumes becomes one b1000 volume; every b-value rule a series matches takes its own b-value's
images (a b1000 ``dwi`` and a b0 ``b0`` from one series). When several series of a study match one rule, the highest
SeriesNumber (the last acquired, usually the repeat) is taken and the others are listed as
ignored.

SeriesDescription, ProtocolName and ImageType are read to choose series and never written
anywhere: the sequence name comes from the rule. Manufacturer, model and field strength become
the subject's labels (``manufacturer``, ``scanner_model``, ``field_strength``), sanitised as
ingest sanitises its metadata, so ``condition_on: manufacturer`` works.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import pydicom
from pydicom.tag import Tag

IMAGE = "image"
B_VALUE_TOLERANCE = 0.05
_GE_B_VALUE, _SIEMENS_B_VALUE = Tag(0x0043, 0x1039), Tag(0x0019, 0x100C)
_TAGS = ["SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "ProtocolName", "ImageType",
         "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength", "DiffusionBValue",
         _GE_B_VALUE, _SIEMENS_B_VALUE]
LABELS = {"Manufacturer": "manufacturer", "ManufacturerModelName": "scanner_model",
          "MagneticFieldStrength": "field_strength"}


def study_key(rel: str, root_name: str) -> str:
    """The study (subject) a DICOM folder belongs to: its first folder below the source."""
    parts = PurePosixPath(rel).parts
    return parts[0] if len(parts) > 1 or (parts and parts[0] != root_name) else root_name


def select_series(files: Sequence[Path], rules: Sequence[Mapping[str, Any]]) -> tuple[list[dict], list[dict]]:
    """``(chosen, ignored)`` for the DICOM files of one study.

    ``chosen``: one dict per sequence with ``sequence``, ``files`` (sorted), ``labels``,
    ``series`` (a UID-derived index, for naming ignored entries). ``ignored``: dicts with
    ``series`` (an index), ``files`` and ``why`` (no header text in it).
    """
    series: dict[str, dict] = {}
    ignored: list[dict] = []
    unreadable = []
    for path in files:
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
        except Exception:  # pydicom raises many types for broken files
            unreadable.append(path)
            continue
        uid = str(header.get("SeriesInstanceUID", "") or "")
        entry = series.setdefault(uid, {"files": [], "header": header, "b_values": {}})
        entry["files"].append(path)
        entry["b_values"][path] = b_value(header)
    if unreadable:
        ignored.append({"series": "unreadable", "files": unreadable,
                        "why": f"{len(unreadable)} file(s) whose DICOM header cannot be read"})
    candidates: dict[str, list[dict]] = {}
    for index, (uid, entry) in enumerate(sorted(series.items())):
        header = entry["header"]
        rule = _first_matching(header, rules)
        if rule is None:
            ignored.append({"series": f"series{index}", "files": entry["files"],
                            "why": "matches no input.series rule (e.g. a localizer or another sequence)"})
            continue
        if rule.get("b_value") is None:
            candidates.setdefault(rule["sequence"], []).append(
                {"sequence": rule["sequence"], "files": sorted(entry["files"]), "series": f"series{index}",
                 "number": _series_number(header), "labels": scanner_labels(header)})
            continue
        # every b-value rule the series matches takes its own b-value's images, so one DWI series
        # can give a b1000 and a b0 sequence (e.g. brain extraction on the b0)
        taken: set = set()
        for b_rule in _b_value_rules(header, rules):
            wanted = float(b_rule["b_value"])
            files_kept = [p for p in sorted(entry["files"]) if _close(entry["b_values"][p], wanted)]
            if not files_kept:
                found = sorted({b for b in entry["b_values"].values() if b is not None})
                ignored.append({"series": f"series{index}", "files": entry["files"],
                                "why": f"rule {b_rule['sequence']}: no image with b = {wanted:g} "
                                       f"(b-values found: {', '.join(f'{b:g}' for b in found) or 'none'})"})
                continue
            taken.update(files_kept)
            candidates.setdefault(b_rule["sequence"], []).append(
                {"sequence": b_rule["sequence"], "files": files_kept, "series": f"series{index}",
                 "number": _series_number(header), "labels": scanner_labels(header)})
        left = [p for p in entry["files"] if p not in taken]
        if taken and left:
            wanted_text = ", ".join(f"{float(r['b_value']):g}" for r in _b_value_rules(header, rules))
            names = ", ".join(r["sequence"] for r in _b_value_rules(header, rules))
            ignored.append({"series": f"series{index}-other-b", "files": left,
                            "why": f"rule {names}: images of other b-values than {wanted_text}"})
    chosen = []
    for sequence, group in candidates.items():
        group.sort(key=lambda c: c["number"])
        chosen.append(group[-1])
        for other in group[:-1]:
            ignored.append({"series": other["series"], "files": other["files"],
                            "why": f"another series of the study matched rule {sequence} "
                                   "(the highest series number is taken)"})
    return chosen, ignored


def b_value(header: pydicom.Dataset) -> float | None:
    """The diffusion b-value of one image: DiffusionBValue, else GE's or Siemens' private tag."""
    for tag in ("DiffusionBValue", _GE_B_VALUE, _SIEMENS_B_VALUE):
        element = header.get(tag)
        if element is None:
            continue
        value = element.value if hasattr(element, "value") else element
        if isinstance(value, bytes):
            value = value.decode("ascii", "ignore").strip("\0 ").split("\\")[0]
        if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
            value = value[0] if len(value) else None
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        # GE adds 1e9 to the b-value in some software versions
        return number % 1e9 if tag == _GE_B_VALUE else number
    return None


def scanner_labels(header: pydicom.Dataset) -> dict[str, str]:
    """Manufacturer, model and field strength as short printable labels (empty ones left out)."""
    labels = {}
    for keyword, label in LABELS.items():
        value = header.get(keyword)
        if value is None:
            continue
        if keyword == "MagneticFieldStrength":
            try:
                text = f"{float(value):g}"
            except (TypeError, ValueError):
                continue
        else:
            text = "".join(ch for ch in " ".join(str(value).split()) if ch.isprintable())[:64]
        if text:
            labels[label] = text
    return labels


def _first_matching(header: pydicom.Dataset, rules: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    description = str(header.get("SeriesDescription", "") or "")
    protocol = str(header.get("ProtocolName", "") or "")
    image_type = header.get("ImageType", "") or ""
    image_type = "\\".join(map(str, image_type)) if not isinstance(image_type, str) else image_type
    for rule in rules:
        checks = [(rule.get("series_description"), description), (rule.get("protocol_name"), protocol),
                  (rule.get("image_type"), image_type)]
        given = [(pattern, text) for pattern, text in checks if pattern]
        if given and all(re.search(pattern, text) for pattern, text in given):
            return rule
    return None


def _b_value_rules(header: pydicom.Dataset, rules: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rules with a ``b_value`` whose patterns the series matches, in the config's order."""
    return [rule for rule in rules if rule.get("b_value") is not None and _first_matching(header, [rule]) is rule]


def _close(value: float | None, wanted: float) -> bool:
    if value is None:
        return False
    return abs(value - wanted) <= max(B_VALUE_TOLERANCE * wanted, 1.0)


def _series_number(header: pydicom.Dataset) -> int:
    try:
        return int(header.get("SeriesNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0
