"""The input folder's walk: every entry becomes an input record (a NIfTI file, a folder of DICOM
files) or an ignored entry with its kind and reason; nothing in the tree stops the walk.

Symbolic links, the policy: a link to a *file* is followed when its target lies inside the input
folder (git-annex and DataLad trees are links into a hidden store); a link whose target lies
outside is not followed, since the input folder is what the data steward approved and a link could
pull in anything (another study, ``/dev/zero``); a link to a *folder* is never followed: inside the
tree its target is scanned where it lies, and not following folder links makes loops impossible.
Special files (pipes, sockets, devices) are never opened. :mod:`~pipeline_lib.imaging.discovery`
groups the records into subjects.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from pipeline_lib.imaging.pseudonym import pseudonymise

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ANALYZE_SUFFIXES = (".hdr", ".img", ".hdr.gz", ".img.gz")
# BIDS keeps converted/processed copies of the raw data in these folders;
# scanning them would give every subject twice.
BIDS_SKIP_DIRS = {"derivatives", "sourcedata"}
# DICOMDIR (and variants such as DICOMDIR-bigEnd) is a media index with a
# DICOM preamble, not an image.
NON_IMAGE_DICOM_PREFIX = "dicomdir"
#: Folders deeper than this below the input folder are not scanned. PACS exports
#: and BIDS trees are a handful of levels deep; the limit stops bind-mount loops
#: and trees built to exhaust the scan.
MAX_DEPTH = 32
NIFTI_KIND, DICOM_KIND, MISSING_KIND = "NIfTI file", "DICOM series", "missing input"

_BIDS_SUB = re.compile(r"^sub-([A-Za-z0-9]+)$")
_BIDS_SES = re.compile(r"^ses-([A-Za-z0-9]+)$")
_BIDS_FILE = re.compile(r"^sub-([A-Za-z0-9]+)(?:_ses-([A-Za-z0-9]+))?_")



def is_nifti_name(name: str) -> bool:
    """Tell whether a file name has a NIfTI suffix (.nii or .nii.gz)."""
    return name.lower().endswith(NIFTI_SUFFIXES)


def is_dicom_file(path: Path) -> bool:
    """Tell whether ``path`` is a DICOM image file.

    A regular file counts when it ends in ``.dcm`` or carries the ``DICM`` magic at
    byte 128 (DICOM Part 10); DICOMDIR index files and hidden files do not. Only
    regular files are ever opened (a named pipe would block the reader forever).
    """
    path = Path(path)
    if path.name.startswith(".") or path.name.lower().startswith(NON_IMAGE_DICOM_PREFIX):
        return False
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
    except OSError:
        return False
    if path.suffix.lower() == ".dcm":
        return True
    return _has_dicom_magic(path) is True


def _has_dicom_magic(path: Path) -> bool | None:
    """True/False for a readable regular file; None when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return None
    return len(head) == 132 and head[128:132] == b"DICM"


def dicom_files_in(folder: Path) -> list[Path]:
    """Return the DICOM image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if is_dicom_file(p))


def _strip_nifti_suffix(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def display_path(path: Path | str) -> str:
    """A path as one printable line for the private tables.

    Bytes that are not UTF-8 become ``\\xNN``, control characters (a newline in a
    file name) their escape, so every entry stays on one line of its table.
    """
    text = os.fsencode(str(path)).decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


# ---------------------------------------------------------------- directory


def _scan_directory(root: Path, ignored: list[dict]) -> list[dict]:
    """Walk ``root`` without raising; return one record per NIfTI file and DICOM folder.

    Entries that are not inputs are appended to ``ignored``. The walk keeps its
    own stack (no recursion limit) and never follows a folder link.
    """
    root_real = os.path.realpath(root)
    records: list[dict] = []
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            with os.scandir(folder) as listing:
                names = sorted(entry.name for entry in listing)
        except OSError as exc:
            _ignore(ignored, root, folder, "folder", f"cannot be listed ({_strerror(exc)}); "
                    "its contents were not scanned")
            continue
        dicom_files, subfolders = [], []
        siblings = set(names)
        for name in names:
            path = folder / name
            verdict = _classify(root, root_real, path, name, depth, siblings, ignored)
            if verdict == "folder":
                subfolders.append(path)
            elif verdict == "nifti":
                records.append(_record(root, path, "nifti", NIFTI_KIND))
            elif verdict == "dicom":
                dicom_files.append(path)
        if dicom_files:
            records.append(_record(root, folder, "dicom", _series_kind(len(dicom_files)), files=dicom_files))
        # reversed: the stack pops the first name first, so the scan order is the sorted order
        stack.extend((sub, depth + 1) for sub in reversed(subfolders))
    return records


def _classify(root: Path, root_real: str, path: Path, name: str, depth: int, siblings: set[str],
              ignored: list[dict]) -> str:
    """What one directory entry is: "folder", "nifti", "dicom" or "ignored" (recorded)."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        _ignore(ignored, root, path, "entry", f"cannot be examined ({_strerror(exc)})")
        return "ignored"
    if stat.S_ISLNK(info.st_mode):
        problem = _link_problem(path, root_real)
        if problem:
            _ignore(ignored, root, path, "symbolic link", problem)
            return "ignored"
        try:
            info = os.stat(path)
        except OSError as exc:  # the target vanished since realpath
            _ignore(ignored, root, path, "symbolic link", f"cannot be followed ({_strerror(exc)})")
            return "ignored"
        if stat.S_ISDIR(info.st_mode):
            _ignore(ignored, root, path, "symbolic link to a folder",
                    "links to folders are not followed (its target is scanned where it lies "
                    "inside input.source)")
            return "ignored"
    if stat.S_ISDIR(info.st_mode):
        if name.startswith("."):
            _ignore(ignored, root, path, "hidden folder", "name starts with '.'; not scanned")
        elif name in BIDS_SKIP_DIRS:
            _ignore(ignored, root, path, "BIDS derivatives folder",
                    f"'{name}' holds copies or results of the raw data; not scanned")
        elif depth + 1 > MAX_DEPTH:
            _ignore(ignored, root, path, "folder",
                    f"nested more than {MAX_DEPTH} levels below input.source; not scanned")
        else:
            return "folder"
        return "ignored"
    if not stat.S_ISREG(info.st_mode):
        _ignore(ignored, root, path, _special_kind(info.st_mode), "not a regular file; never opened")
        return "ignored"
    return _classify_file(root, path, name, info, siblings, ignored)


def _classify_file(root: Path, path: Path, name: str, info: os.stat_result, siblings: set[str],
                   ignored: list[dict]) -> str:
    lower = name.lower()
    if lower.endswith(".json") and any(name[:-5] + s in siblings for s in NIFTI_SUFFIXES):
        return "sidecar"  # a BIDS sidecar belongs to its image (ingest reads it through a link)
    if name.startswith("."):
        _ignore(ignored, root, path, "hidden file", "name starts with '.'; not read")
    elif is_nifti_name(name):
        return "nifti"  # empty or unreadable ones too: ingest refuses them with the reason
    elif lower.startswith(NON_IMAGE_DICOM_PREFIX):
        _ignore(ignored, root, path, "DICOMDIR", "a media index, not an image; the series it lists "
                "are found by scanning their folders")
    elif lower.endswith(ANALYZE_SUFFIXES):
        _ignore(ignored, root, path, "ANALYZE 7.5 file", "ANALYZE .hdr/.img pairs carry no "
                "reliable orientation; convert them to NIfTI")
    elif lower.endswith(".dcm"):
        return "dicom"
    elif info.st_size == 0:
        _ignore(ignored, root, path, "empty file", "0 bytes, so not an image")
    else:
        magic = _has_dicom_magic(path)
        if magic:
            return "dicom"
        if magic is None:
            _ignore(ignored, root, path, "unreadable file", "cannot be read, so it cannot be "
                    "recognised; not examined")
        else:
            _ignore(ignored, root, path, "other file", "not a NIfTI file or DICOM image")
    return "ignored"


def _link_problem(path: Path, root_real: str) -> str | None:
    """Why a symbolic link is not followed, or None when its target lies inside the tree."""
    try:
        target = os.path.realpath(path, strict=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "loop: following it never ends"
        if exc.errno == errno.ENOENT:
            return "dangling: its target does not exist"
        return f"cannot be followed ({_strerror(exc)})"
    if target != root_real and not target.startswith(root_real.rstrip(os.sep) + os.sep):
        return ("leads outside input.source; not followed (links may only point inside the "
                "input folder; list such files in a sample sheet instead)")
    return None


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


def _strerror(exc: OSError) -> str:
    """The error without the file name that OSError's message carries."""
    return os.strerror(exc.errno) if exc.errno else type(exc).__name__


def _ignore(ignored: list[dict], root: Path, path: Path, kind: str, reason: str) -> None:
    ignored.append({"path": path, "rel": _relative(root, path), "kind": kind, "reason": reason})


def _relative(root: Path, path: Path) -> str:
    rel = Path(path).relative_to(root).as_posix()
    return rel if rel != "." else Path(os.path.realpath(root)).name


def _record(root: Path, path: Path, fmt: str, kind: str, files: list[Path] | None = None) -> dict:
    rel = Path(path).relative_to(root)
    # the source folder itself may be the one DICOM series: name it after the folder
    key = _subject_key(rel, fmt) if rel.parts else Path(os.path.realpath(root)).name
    return {"source_key": key, "rel": _relative(root, path), "path": path, "format": fmt, "kind": kind,
            "files": files, "labels": {}}


def _series_kind(count: int) -> str:
    return f"{DICOM_KIND} ({count} file{'s' * (count != 1)})"


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


def _drop_duplicate_keys(records: list[dict], ignored: list[dict], salt: str) -> list[dict]:
    """Inputs that share a subject key are all set aside: choosing one is the user's call."""
    by_key: dict[str, list[dict]] = {}
    for record in records:
        by_key.setdefault(record["source_key"], []).append(record)
    kept = []
    for key, group in by_key.items():
        if len(group) == 1:
            kept.append(group[0])
            continue
        subject = pseudonymise(key, salt)
        for record in group:
            ignored.append({
                "path": record["path"], "rel": record["rel"],
                "kind": record["kind"],
                "reason": f"one of {len(group)} inputs for subject {subject}; none is ingested "
                          "(a sample sheet chooses one image per subject)"})
    return kept
