"""Find the input images, give each subject a pseudonym, and stage them under pseudonyms.

The input is either a directory (scanned for NIfTI files and DICOM series
folders, BIDS names understood) or a sample sheet (TSV with ``subject``,
``path`` and optional label columns).

Nothing in a directory tree stops discovery. Every entry is either an input
(a NIfTI file, a folder of DICOM files) or *ignored, with why*: symbolic link
loops, dangling links, links leaving the tree, folder links, unreadable
folders, named pipes, sockets and device nodes (never opened), hidden entries,
non-image files, folders nested too deep, several inputs for one subject. Odd
names (quotes, newlines, shell metacharacters, bytes that are not UTF-8) are
ordinary names: nothing here goes through a shell.

Symbolic links, the policy: a link to a *file* is followed when its target lies
inside the input folder (git-annex and DataLad trees are links into a hidden
store); a link whose target lies outside is not followed, since the input folder
is what the data steward approved and a link could pull in anything (another
study, ``/dev/zero``); a link to a *folder* is never followed: inside the tree its
target is scanned where it lies, and not following folder links makes loops
impossible. A sample sheet names its paths explicitly, so its paths may lie anywhere.

What comes out (:class:`Discovery`):

* ``linkage`` -- pseudonym, original key, path, format, kind. It re-identifies
  subjects and belongs in ``private/`` only;
* ``subjects`` -- pseudonym, format, kind and labels; shareable;
* ``ignored`` -- entry pseudonym, path, kind and reason of every ignored entry;
  its path column is private, the rest (:meth:`Discovery.public_ignored`) shareable;
* ``sources`` -- pseudonym -> real path: :func:`write_staging` turns it into
  ``<staging>/<pseudonym>/input`` links, the only paths later rules ever see.

Layouts (``input.layout``, :mod:`~pipeline_lib.imaging.adapters` and
:mod:`~pipeline_lib.imaging.dicom_study`): with a layout other than ``auto`` a subject may
carry several sequences (BraTS t1, t1ce, t2, flair; IXI t1, t2, pd; BIDS suffix and acq; the
series a ``dicom_study`` rule chose) and masks (the BraTS segmentation, never an image). The
reference sequence (``registration.reference_sequence``, else the first in
:data:`SEQUENCE_ORDER`) is staged as ``input`` as before, every other image sequence as
``sequences/<name>`` and every mask as ``masks/<name>``; ``subjects.tsv`` gets the columns
``sequence`` (the reference), ``sequences`` and ``mask`` (comma-separated) and the layout's
labels. Sequence names come from the layout's vocabulary or the config, never from free text.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.jobs import is_within
from pipeline_lib.core.settings import SEQUENCE_NAME, InputSettings, read_settings
from pipeline_lib.imaging import adapters, dicom_study
# The walk and the sample sheet live in their own modules; the names other modules know from
# here (kinds, detection, display_path, load_schema) stay importable from discovery.
from pipeline_lib.imaging.input_scan import (BIDS_SKIP_DIRS, DICOM_KIND, MISSING_KIND, NIFTI_KIND,  # noqa: F401
                                             NIFTI_SUFFIXES, _drop_duplicate_keys, _ignore, _scan_directory,
                                             _series_kind, _strip_nifti_suffix, dicom_files_in, display_path,
                                             is_dicom_file, is_nifti_name)
from pipeline_lib.imaging.sample_sheet import _read_sample_sheet, load_schema  # noqa: F401
from pipeline_lib.imaging.pseudonym import ENTRY_PREFIX, pseudonymise

log = logging.getLogger(__name__)

LINKAGE_COLUMNS = ["subject", "source_key", "path", "format", "kind", "sequence"]
IGNORED_COLUMNS = ["entry", "path", "kind", "reason"]
#: Name of the link to a subject's input inside its staging folder (and of the sidecar link).
STAGED_INPUT, STAGED_SIDECAR = "input", "sidecar.json"
#: Folders of a multi-sequence subject's staging folder: its other image sequences and its masks.
STAGED_SEQUENCES, STAGED_MASKS = "sequences", "masks"
#: The stated order that picks a subject's reference sequence when registration.reference_sequence
#: is null: structural T1 first; sequences not listed follow in alphabetical order.
SEQUENCE_ORDER = ("t1", "t1w", "t1ce", "t2", "t2w", "flair", "pd", "pdw")
#: Label columns a layout adds to subjects.tsv, in this order, before the layout's own labels.
SEQUENCE_COLUMNS = ["sequence", "sequences", "mask"]



def file_state(path: str | os.PathLike) -> tuple[int, int, int]:
    """One version of a file, as the DAG's caches of subjects.tsv key it: inode, size and
    modification time (ns). A table replaced atomically (a new inode, as core.io writes it) or
    rewritten to another size is a new state even within one tick of a coarse file-system clock."""
    info = os.stat(path)
    return info.st_ino, info.st_size, info.st_mtime_ns



@dataclass
class Discovery:
    """What discovery found; see the module docstring."""

    linkage: pd.DataFrame
    subjects: pd.DataFrame
    ignored: pd.DataFrame
    sources: dict[str, Path] = field(default_factory=dict)
    series: dict[str, list[Path]] = field(default_factory=dict)
    sidecars: dict[str, Path] = field(default_factory=dict)
    #: pseudonym -> the other image sequences and masks: dicts with folder (sequences or
    #: masks), sequence, path, format and files (a DICOM series' files, else None)
    extras: dict[str, list[dict]] = field(default_factory=dict)

    def public_ignored(self) -> pd.DataFrame:
        """The ignored entries without their paths: pseudonym, kind and reason."""
        return self.ignored.drop(columns="path")


def discover_inputs(source: Path, salt: str, schema_path: Path,
                    layout: InputSettings | Mapping[str, Any] | None = None,
                    reference_sequence: str | None = None) -> Discovery:
    """Find the inputs under a source directory or in a sample sheet.

    ``layout`` is the ``input`` config block (its ``layout``, ``pattern``, ``labels`` and
    ``series``; None = ``auto``); ``reference_sequence`` is ``registration.reference_sequence``.
    Rows are sorted by pseudonym. Raises InputError, naming the config key
    ``input.source``, for an unusable source, an invalid sheet, a tree without
    a single input, or two keys that share a pseudonym; never for an entry of
    the tree.
    """
    source = Path(source)
    settings = read_settings(InputSettings, layout, "input")
    ignored: list[dict] = []
    if source.is_dir() and settings.layout != "auto":
        scanned = _scan_directory(source, ignored)
        records, labels = _apply_layout(source, scanned, settings, reference_sequence, ignored, salt)
        if not records:
            kinds = pd.Series([entry["kind"] for entry in ignored], dtype=str).value_counts()
            found = ", ".join(f"{n} {kind}" for kind, n in kinds.items()) or "nothing"
            raise InputError(f"input.source: no subject of layout {settings.layout} found; the layout expects "
                             f"{_layout_hint(settings.layout)} (ignored: {found})")
        return _build_tables(records, labels, ignored, salt)
    if source.is_dir():
        records = _scan_directory(source, ignored)
        labels: list[str] = []
    elif source.is_file() and source.suffix.lower() in (".tsv", ".txt") and settings.layout != "auto":
        raise InputError(f"input.layout: {settings.layout} reads a folder; a sample sheet names its "
                         "subjects and labels itself (use layout auto)")
    elif source.is_file() and source.suffix.lower() in (".tsv", ".txt"):
        records, labels = _read_sample_sheet(source, Path(schema_path))
    elif source.exists():
        raise InputError(f"input.source: {source} must be a folder or a .tsv sample sheet")
    else:
        raise InputError(f"input.source: {source} does not exist")
    records = _drop_duplicate_keys(records, ignored, salt)
    if not records:
        kinds = pd.Series([entry["kind"] for entry in ignored], dtype=str).value_counts()
        found = ", ".join(f"{n} {kind}" for kind, n in kinds.items()) or "nothing"
        raise InputError(f"input.source: no NIfTI file or DICOM series found (ignored: {found})")
    return _build_tables(records, labels, ignored, salt)


# ------------------------------------------------------------------ layouts


def _apply_layout(root: Path, scanned: list[dict], settings: InputSettings, reference: str | None,
                  ignored: list[dict], salt: str) -> tuple[list[dict], list[str]]:
    """Scanned inputs -> one record per subject with its sequences; unrecognised inputs ignored."""
    if settings.layout == "dicom_study":
        items = _dicom_study_items(root, scanned, settings, ignored)
    else:
        layout = adapters.LayoutSettings(settings.layout, settings.pattern)
        by_rel = {record["rel"]: record for record in scanned}
        try:
            adapted, unknown = adapters.adapt(list(by_rel), layout, root=root, unique=False)
        except InputError as exc:  # participants.tsv or a sidecar that cannot be read
            raise InputError(f"input.layout {settings.layout}: {exc}") from None
        for entry in unknown:
            record = by_rel[entry["rel"] if "rel" in entry else entry["relpath"]]
            _ignore(ignored, root, record["path"], record["kind"],
                    f"not a {settings.layout} input ({_layout_hint(settings.layout)})")
        items = [{"key": a["subject_key"], "sequence": a["sequence"], "role": a["role"],
                  "labels": a["labels"], "record": by_rel[a["relpath"]]} for a in adapted]
    for item in items:
        for key, value in settings.labels.items():
            item["labels"].setdefault(key, str(value))
    return _group_subjects(items, reference, ignored, root, salt)


#: Files the DAG-time layout check looks at before it leaves the verdict to discovery.
LAYOUT_CHECK_LIMIT = 100_000
_LAYOUT_CHECK_BATCH = 64


def layout_problem(block: Mapping[str, Any]) -> str | None:
    """Why ``input.layout`` can find no subject in the ``input.source`` folder, or None.

    Run while Snakemake builds the DAG, so that a layout that does not fit the folder (the Han
    preset's brats on a folder that is not BraTS) fails the dry run instead of the discovery job.
    Only names are read; the walk stops at the first input the layout recognises (the usual
    case costs a few file names) and gives up after :data:`LAYOUT_CHECK_LIMIT` files. The
    message names what the layout expects and counts what is there, never a path: the DAG's
    messages land in .snakemake/log.
    """
    settings = read_settings(InputSettings, block, "input")
    source = Path(str(block.get("source") or ""))
    if settings.layout in ("auto", "dicom_study") or not source.is_dir():
        return None  # auto takes any input; dicom_study reads DICOM headers: discovery decides
    layout = adapters.LayoutSettings(settings.layout, settings.pattern)
    seen, candidates, batch = 0, 0, []
    for folder, subfolders, files in os.walk(source):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d not in BIDS_SKIP_DIRS)
        for name in files:
            seen += 1
            if is_nifti_name(name) and not name.startswith("."):
                candidates += 1
                batch.append((Path(folder) / name).relative_to(source).as_posix())
        if len(batch) >= _LAYOUT_CHECK_BATCH:
            if _recognised(batch, layout, source):
                return None
            batch = []
        if seen > LAYOUT_CHECK_LIMIT:
            return None
    if batch and _recognised(batch, layout, source):
        return None
    return (f"input.layout: {settings.layout} recognises no input in the input.source folder ({seen} file(s), "
            f"{candidates} of them NIfTI, none named as the layout expects: {_layout_hint(settings.layout)}); "
            "choose the layout that fits the folder (auto: one subject per NIfTI file or DICOM series)")


def _recognised(relpaths: list[str], layout: adapters.LayoutSettings, root: Path) -> bool:
    try:
        records, _ = adapters.adapt(relpaths, layout, root=root, unique=False)
    except InputError:
        return True  # a BIDS table that cannot be read: discovery reports it with its reason
    return bool(records)


def _layout_hint(layout: str) -> str:
    return {"brats": "<case>_t1.nii.gz ... or <case>-t1n.nii.gz ...",
            "ixi": "IXI<id>-<Guys|HH|IOP>-<number>-<sequence>.nii.gz",
            "bids": "sub-<label>[_ses-<label>]..._<suffix>.nii.gz outside derivatives/",
            "pattern": "does not match input.pattern"}.get(layout, layout)


def _dicom_study_items(root: Path, scanned: list[dict], settings: InputSettings, ignored: list[dict]) -> list[dict]:
    """Every DICOM file below each study folder, grouped into series and chosen by the rules."""
    root_name = Path(os.path.realpath(root)).name
    studies: dict[str, list[Path]] = {}
    for record in scanned:
        if record["format"] != "dicom":
            _ignore(ignored, root, record["path"], record["kind"], "layout dicom_study reads DICOM series only")
            continue
        studies.setdefault(dicom_study.study_key(record["rel"], root_name), []).extend(record["files"])
    items = []
    for key, files in sorted(studies.items()):
        chosen, left = dicom_study.select_series(files, settings.series)
        for entry in left:
            first = sorted(entry["files"])[0]
            ignored.append({"path": first.parent, "rel": f"{key}#{entry['series']}",
                            "kind": _series_kind(len(entry["files"])), "reason": entry["why"]})
        for series in chosen:
            folder = series["files"][0].parent
            record = {"source_key": key, "rel": f"{key}#{series['series']}", "path": folder, "format": "dicom",
                      "kind": _series_kind(len(series["files"])), "files": series["files"], "labels": {}}
            items.append({"key": key, "sequence": series["sequence"], "role": adapters.IMAGE,
                          "labels": dict(series["labels"]), "record": record})
    return items


def sequence_order(names: list[str]) -> list[str]:
    """``names`` in the stated order: :data:`SEQUENCE_ORDER` first, then alphabetical."""
    rank = {name: index for index, name in enumerate(SEQUENCE_ORDER)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def _group_subjects(items: list[dict], reference: str | None, ignored: list[dict], root: Path,
                    salt: str) -> tuple[list[dict], list[str]]:
    """One record per subject key: the reference sequence's input plus ``extras``."""
    by_key: dict[str, list[dict]] = {}
    for item in items:
        by_key.setdefault(item["key"], []).append(item)
    records, extra_labels = [], []
    for key, group in sorted(by_key.items()):
        subject = pseudonymise(key, salt)
        usable = []
        counts: dict[tuple[str, str], int] = {}
        for item in group:
            counts[(item["role"], item["sequence"])] = counts.get((item["role"], item["sequence"]), 0) + 1
        for item in group:
            record = item["record"]
            if counts[(item["role"], item["sequence"])] > 1:
                _ignore_item(ignored, root, record, f"one of {counts[(item['role'], item['sequence'])]} inputs "
                             f"for subject {subject}, sequence {item['sequence'] or '(none)'}; none is ingested")
            elif item["sequence"] and not re.match(SEQUENCE_NAME, item["sequence"]):
                _ignore_item(ignored, root, record, f"subject {subject}: the sequence name is not a short "
                             "lower-case name (letters, digits, '_' or '-')")
            else:
                usable.append(item)
        images = {i["sequence"]: i for i in usable if i["role"] == adapters.IMAGE}
        masks = {i["sequence"]: i for i in usable if i["role"] == adapters.MASK}
        chosen = reference if reference is not None else next(iter(sequence_order(list(images))), None)
        if chosen not in images:
            why = (f"subject {subject} has no {reference} sequence (registration.reference_sequence)"
                   if reference is not None and images else f"subject {subject} has no image, only masks")
            for item in usable:
                _ignore_item(ignored, root, item["record"], why + "; none of its inputs is ingested")
            continue
        order = [chosen] + [name for name in sequence_order(list(images)) if name != chosen]
        main = images[chosen]
        labels: dict[str, str] = {}
        for item in [*masks.values(), *(images[n] for n in reversed(order))]:  # the reference's labels win
            labels.update({k: str(v) for k, v in item["labels"].items()})
        for name in labels:
            if name not in extra_labels and name not in SEQUENCE_COLUMNS:
                extra_labels.append(name)
        multi = len(order) > 1 or masks
        kind = main["record"]["kind"]
        if multi:
            kind += f"; {len(order)} sequence{'s' * (len(order) != 1)}" + (f" + {len(masks)} mask" if masks else "")
        records.append({
            **main["record"], "source_key": key, "kind": kind,
            "labels": {"sequence": chosen, "sequences": ",".join(order), "mask": ",".join(sorted(masks)),
                       **{k: v for k, v in labels.items() if k not in SEQUENCE_COLUMNS}},
            "extras": [{"folder": STAGED_SEQUENCES, "sequence": name, **_extra(images[name]["record"])}
                       for name in order[1:]]
                      + [{"folder": STAGED_MASKS, "sequence": name, **_extra(masks[name]["record"])}
                         for name in sorted(masks)],
        })
    return records, SEQUENCE_COLUMNS + extra_labels


def _extra(record: dict) -> dict:
    return {"path": record["path"], "format": record["format"], "files": record["files"], "kind": record["kind"]}


def _ignore_item(ignored: list[dict], root: Path, record: dict, reason: str) -> None:
    ignored.append({"path": record["path"], "rel": record["rel"], "kind": record["kind"], "reason": reason})


# ------------------------------------------------------------------ tables


def _build_tables(records: list[dict], labels: list[str], ignored: list[dict], salt: str) -> Discovery:
    """Pseudonymise the records and entries and split them into private and shareable tables."""
    by_pseudonym: dict[str, str] = {}
    for record in records:
        pseudonym = pseudonymise(record["source_key"], salt)
        other = by_pseudonym.setdefault(pseudonym, record["source_key"])
        if other != record["source_key"]:
            raise InputError(f"privacy.pseudonym_salt: two subject keys share pseudonym {pseudonym}; "
                             "choose another salt")
        record["subject"] = pseudonym
    records = sorted(records, key=lambda r: r["subject"])

    linkage = pd.DataFrame(
        [{"subject": r["subject"], "source_key": display_path(r["source_key"]),
          "path": display_path(os.path.abspath(r["path"])), "format": r["format"], "kind": r["kind"],
          "sequence": r["labels"].get("sequence", "")}
         for r in records]
        + [{"subject": r["subject"], "source_key": display_path(r["source_key"]),
            "path": display_path(os.path.abspath(e["path"])), "format": e["format"], "kind": e["kind"],
            "sequence": f"{e['folder']}/{e['sequence']}"}
           for r in records for e in r.get("extras", [])],
        columns=LINKAGE_COLUMNS,
    )
    subjects = pd.DataFrame(
        [{"subject": r["subject"], "format": r["format"], "kind": r["kind"], **r["labels"]}
         for r in records],
        columns=["subject", "format", "kind", *labels],
    ).fillna("")  # a layout label some subjects lack (BraTS 2023 has no grade folder) is empty
    entries = sorted(({"entry": pseudonymise(e["rel"], salt, ENTRY_PREFIX),
                       "path": display_path(os.path.abspath(e["path"])),
                       "kind": e["kind"], "reason": e["reason"]} for e in ignored),
                     key=lambda e: e["entry"])
    for record in records:
        if record["kind"] == MISSING_KIND:
            # the pseudonym only: the path itself may name the patient
            log.warning("subject %s: input does not exist (ingest will refuse it)", record["subject"])
    return Discovery(
        linkage=linkage, subjects=subjects,
        ignored=pd.DataFrame(entries, columns=IGNORED_COLUMNS),
        sources={r["subject"]: Path(r["path"]) for r in records},
        series={r["subject"]: r["files"] for r in records if r["format"] == "dicom" and r["files"] is not None},
        sidecars={r["subject"]: s for r in records if (s := _bids_sidecar(r)) is not None},
        extras={r["subject"]: r["extras"] for r in records if r.get("extras")},
    )


def _bids_sidecar(record: dict) -> Path | None:
    if record["format"] != "nifti":
        return None
    path = Path(record["path"])
    sidecar = path.with_name(_strip_nifti_suffix(path.name) + ".json")
    try:
        return sidecar if stat.S_ISREG(os.stat(sidecar).st_mode) else None
    except OSError:
        return None


# ------------------------------------------------------------------ staging


def write_staging(discovery: Discovery, staging_dir: Path, run_folder: Path | None = None) -> None:
    """One folder per subject under ``staging_dir`` holding its input under the name ``input``.

    Every later rule reads ``<staging_dir>/<pseudonym>/input``: the source path never
    becomes a rule input, a parameter or a log line, so Snakemake's records only ever
    hold pseudonyms. A NIfTI input is a link to the file; a DICOM series a folder of
    links to exactly the files discovery accepted (no pipe, no link leaving the tree
    can reach the converter). A link to a missing source is kept dangling; ingest
    refuses it. The folder is rebuilt from scratch, so subjects that left the cohort
    leave nothing behind. Sources inside ``run_folder`` (the demo cohort, data copied
    beside the results) are linked by relative paths, so that a finished run moved or copied
    elsewhere still finds them and reruns no ingest; other sources by absolute paths.
    """
    staging_dir = Path(staging_dir)
    staging_dir.mkdir(parents=True, exist_ok=True)
    anchor = os.path.realpath(run_folder) if run_folder is not None else None
    for subject, source in discovery.sources.items():
        folder = staging_dir / subject
        folder.mkdir()
        if subject in discovery.series:
            _stage_series(discovery.series[subject], folder / STAGED_INPUT, anchor)
        else:
            _stage(source, folder / STAGED_INPUT, anchor)
        if subject in discovery.sidecars:
            _stage(discovery.sidecars[subject], folder / STAGED_SIDECAR, anchor)
        for extra in discovery.extras.get(subject, []):
            (folder / extra["folder"]).mkdir(exist_ok=True)
            link = folder / extra["folder"] / extra["sequence"]
            if extra["files"] is not None:
                _stage_series(extra["files"], link, anchor)
            else:
                _stage(extra["path"], link, anchor)


def _stage_series(files: list[Path], folder: Path, anchor: str | None = None) -> None:
    """Links ``00001.dcm``, ... to the files, in name order; the folder gets the newest file's times
    (or the source folder's), so a rebuilt staging folder reruns only changed series."""
    folder.mkdir()
    newest = None
    for index, path in enumerate(files):
        _stage(path, folder / f"{index + 1:05d}.dcm", anchor)
        try:
            info = os.stat(path.parent) if index == 0 else None
            candidates = [os.stat(path)] + ([info] if info else [])
            newest = max([newest] + candidates, key=lambda i: i.st_mtime_ns if i else -1)
        except OSError:
            continue
    if newest is not None:
        os.utime(folder, ns=(newest.st_atime_ns, newest.st_mtime_ns))


def _stage(source: Path, link: Path, anchor: str | None = None) -> None:
    """Link ``link`` to the real path of ``source`` and give it the target's times.

    Snakemake reruns a job when an input link *or* its target is newer than the
    outputs; with the target's times a rebuilt staging folder reruns only the
    subjects whose source changed. A target inside ``anchor`` is linked relatively.
    """
    try:
        target = os.path.realpath(source, strict=True)
    except OSError:
        os.symlink(os.path.abspath(source), link)  # dangling on purpose: ingest refuses it
        return
    os.symlink(os.path.relpath(target, os.path.realpath(link.parent))
               if anchor is not None and is_within(target, anchor) else target, link)
    try:
        info = os.stat(target)
        os.utime(link, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)
    except OSError:
        pass  # unreadable target: the link keeps its own time; ingest reports the problem
