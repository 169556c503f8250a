"""``private/``: what re-identifies subjects (pseudonym <-> source path, the generated salt, the
staging links, the QC tables with paths), readable by its owner only whatever the umask.

On a shared cluster file system the usual umask (022) makes new folders 755 and files 644, so
every user could read the linkage table, whose paths are often named after patients. Folders
here are 0700 and files 0600; symbolic links (private/source, the staging links) carry no
permissions of their own and their targets (the input data) are never touched.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

PRIVATE_DIR = Path("private")
FOLDER_MODE, FILE_MODE = 0o700, 0o600


def private_folder(path: str | os.PathLike = PRIVATE_DIR) -> Path:
    """Create ``path`` (and missing parents below it) owner-only and return it; an existing
    folder is made owner-only too."""
    path = Path(path)
    path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    os.chmod(path, FOLDER_MODE)
    return path


def make_owner_only(*paths: str | os.PathLike) -> None:
    """Folders 0700 and regular files 0600 at and below each path; links are left alone (not
    followed). For a job's outputs under private/ after they are written, and the folders
    Snakemake created for them with the umask's permissions. The staging folder holds a link per
    DICOM file (hundreds of thousands for a large cohort): entries are told apart by the type
    the folder listing gives, so a link costs no system call of its own."""
    for top in paths:
        top = Path(top)
        if not top.exists() or top.is_symlink():
            continue
        _restrict(top)
        if top.is_dir():
            _restrict_below(top)
        # the folders between private/ and the output (private/qc) were created by Snakemake
        if PRIVATE_DIR.name in top.parts[:-1]:
            for parent in top.parents:
                _restrict(parent)
                if parent.name == PRIVATE_DIR.name:
                    break


def _restrict_below(folder: Path) -> None:
    stack = [folder]
    while stack:
        with os.scandir(stack.pop()) as listing:
            for entry in listing:
                if entry.is_symlink():
                    continue
                if entry.is_dir(follow_symlinks=False):
                    os.chmod(entry.path, FOLDER_MODE)
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    os.chmod(entry.path, FILE_MODE)


def _restrict(path: Path) -> None:
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode):
        os.chmod(path, FOLDER_MODE)
    elif stat.S_ISREG(info.st_mode):
        os.chmod(path, FILE_MODE)


def write_owner_only(path: str | os.PathLike, text: str) -> bool:
    """Create ``path`` holding ``text``, 0600 from the start (never readable by others, not even
    for a moment) and complete when it appears; False, writing nothing, when it already exists
    (a concurrent writer won: both then read the same file)."""
    path = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.link(temporary, path)  # fails if the name exists, unlike a rename
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)
