"""Hostile corpus, filesystem cases: links (loops, dangling, leading outside the tree), pipes,
sockets, device nodes, unreadable and empty files, awkward names, depth, clutter beside the images."""

from __future__ import annotations

import gzip
import os
import shutil
import socket
from pathlib import Path
from typing import Callable

import nibabel as nib

from pipeline_lib.cohorts.hostile_corpus.building import (ACCEPT, PHI_MARK, REFUSE, Case, nifti_bytes, phantom,
                                                          voxel_affine, write_nifti, write_series)

def _fs_loop(d: Path) -> str:
    os.symlink("b.nii.gz", d / "a.nii.gz")
    os.symlink("a.nii.gz", d / "b.nii.gz")
    return "a.nii.gz"


def _fs_self_loop(d: Path) -> str:
    os.symlink("me", d / "me")
    return "me"


def _fs_dangling(d: Path) -> str:
    os.symlink("gone.nii.gz", d / "dangling.nii.gz")
    return "dangling.nii.gz"


def _outside(d: Path) -> Path:
    outside = d.parents[1] / "outside-the-corpus"
    outside.mkdir(exist_ok=True)
    return outside


def _fs_outside_file(d: Path) -> str:
    target = write_nifti(_outside(d) / "elsewhere.nii.gz")
    os.symlink(target, d / "link.nii.gz")
    return "link.nii.gz"


def _fs_outside_folder(d: Path) -> str:
    target = _outside(d) / "other-study"
    target.mkdir(exist_ok=True)
    write_nifti(target / "x.nii.gz")
    os.symlink(target, d / "study")
    return "study"


def _fs_dev_zero(d: Path) -> str:
    os.symlink("/dev/zero", d / "zeros.nii.gz")
    return "zeros.nii.gz"


def _fs_folder_link(d: Path) -> str:
    (d / "real").mkdir()
    write_nifti(d / "real" / "image.nii.gz")
    os.symlink("real", d / "alias")
    return "alias"


def _fs_annex_link(d: Path) -> str:
    store = d / ".git" / "annex"
    store.mkdir(parents=True)
    (store / "key-1234").write_bytes(gzip.compress(nifti_bytes()))  # annex objects have no suffix
    os.symlink(".git/annex/key-1234", d / "sub-01_T1w.nii.gz")
    return "sub-01_T1w.nii.gz"


def _fs_fifo(d: Path) -> str:
    os.mkfifo(d / "stream.nii.gz")
    return "stream.nii.gz"


def _fs_fifo_in_series(d: Path) -> str:
    write_series(d / "series")
    os.mkfifo(d / "series" / "IM-9999.dcm")
    return "series"


def _fs_socket(d: Path) -> str:
    # AF_UNIX paths are limited to ~107 bytes: bind from inside the folder
    here = os.getcwd()
    os.chdir(d)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind("listener.nii")
    finally:
        os.chdir(here)
    return "listener.nii"


def _fs_device(d: Path) -> str:
    os.mknod(d / "null.nii.gz", 0o600 | 0o020000, os.makedev(1, 3))
    return "null.nii.gz"


def _fs_unreadable_file(d: Path) -> str:
    path = write_nifti(d / "locked.nii.gz")
    path.chmod(0)
    return "locked.nii.gz"


def _fs_unreadable_folder(d: Path) -> str:
    (d / "locked").mkdir()
    write_nifti(d / "locked" / "inside.nii.gz")
    (d / "locked").chmod(0)
    return "locked"


def _fs_unreadable_slice(d: Path) -> str:
    files = write_series(d / "series")
    files[3].chmod(0)
    return "series"


def _fs_empty_nii(d: Path) -> str:
    (d / "empty.nii").write_bytes(b"")
    return "empty.nii"


def _fs_empty_niigz(d: Path) -> str:
    (d / "empty.nii.gz").write_bytes(b"")
    return "empty.nii.gz"


def _fs_empty_file(d: Path) -> str:
    (d / "IM0001").write_bytes(b"")
    return "IM0001"


def _fs_empty_slice(d: Path) -> str:
    files = write_series(d / "series")
    files[2].write_bytes(b"")
    return "series"


def _named(name: str) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        write_nifti(Path(os.fsdecode(os.fsencode(str(d)) + b"/" + os.fsencode(name))))
        return name
    return build


def _fs_invalid_utf8(d: Path) -> str:
    name = os.fsdecode(b"scan-\xff\xfe-latin1-\xe9.nii.gz")
    write_nifti(d / name)
    return name


def _deep(levels: int) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        folder = d.joinpath(*["level"] * levels)
        folder.mkdir(parents=True)
        write_nifti(folder / "deep.nii.gz")
        return "/".join(["level"] * levels) + "/deep.nii.gz"
    return build


def _fs_too_deep(d: Path) -> str:
    folder = d.joinpath(*["level"] * 40)
    folder.mkdir(parents=True)
    write_nifti(folder / "deep.nii.gz")
    # the folder beyond the limit is what gets ignored (the corpus folder counts as one level)
    return "/".join(["level"] * 32)


def _fs_hidden(d: Path) -> str:
    write_nifti(d / ".backup.nii.gz")
    return ".backup.nii.gz"


def _fs_dicomdir(d: Path) -> str:
    files = write_series(d / "tmp")
    shutil.copy(files[0], d / "DICOMDIR")
    shutil.rmtree(d / "tmp")
    return "DICOMDIR"


def _fs_analyze(d: Path) -> str:
    nib.save(nib.AnalyzeImage(phantom(), voxel_affine()), d / "old.hdr")
    return "old.hdr"


def _fs_text(d: Path) -> str:
    (d / "README.txt").write_text(f"export of {PHI_MARK}\n")
    return "README.txt"


def _fs_duplicate(d: Path) -> str:
    write_nifti(d / "scan.nii")
    write_nifti(d / "scan.nii.gz")
    return "scan.nii"


def _fs_derivatives(d: Path) -> str:
    (d / "derivatives").mkdir()
    write_nifti(d / "derivatives" / "brain.nii.gz")
    return "derivatives"


def _fs_clutter_in_series(d: Path) -> str:
    write_series(d / "series")
    (d / "series" / "Thumbs.db").write_bytes(b"\0" * 512)
    return "series"


def filesystem_cases() -> list[Case]:
    fs = "filesystem"
    return [
        Case("fs-loop", fs, "symbolic link loop (a -> b -> a)", REFUSE, r"loop", _fs_loop),
        Case("fs-self-loop", fs, "symbolic link to itself", REFUSE, r"loop", _fs_self_loop),
        Case("fs-dangling", fs, "dangling symbolic link", REFUSE, r"dangling", _fs_dangling),
        Case("fs-outside-file", fs, "link to a NIfTI file outside the tree", REFUSE, r"leads outside input\.source",
             _fs_outside_file),
        Case("fs-outside-folder", fs, "link to a folder outside the tree", REFUSE, r"leads outside input\.source",
             _fs_outside_folder),
        Case("fs-dev-zero", fs, "link named .nii.gz to /dev/zero", REFUSE, r"leads outside input\.source", _fs_dev_zero),
        Case("fs-folder-link", fs, "link to a folder inside the tree", REFUSE, r"links to folders are not followed",
             _fs_folder_link),
        Case("fs-annex-link", fs, "link into a hidden store inside the tree (git-annex, DataLad)", ACCEPT, r"",
             _fs_annex_link),
        Case("fs-fifo", fs, "named pipe (FIFO) named .nii.gz", REFUSE, r"never opened", _fs_fifo),
        Case("fs-fifo-in-series", fs, "named pipe among the files of a DICOM series", ACCEPT, r"", _fs_fifo_in_series),
        Case("fs-socket", fs, "Unix socket named .nii", REFUSE, r"never opened", _fs_socket),
        Case("fs-device", fs, "character device node named .nii.gz", REFUSE, r"never opened", _fs_device),
        Case("fs-unreadable-file", fs, "NIfTI file without read permission", REFUSE, r"permission denied",
             _fs_unreadable_file),
        Case("fs-unreadable-folder", fs, "folder without read permission", REFUSE, r"cannot be listed",
             _fs_unreadable_folder),
        Case("fs-unreadable-slice", fs, "DICOM series with one unreadable file", REFUSE,
             r"file 4 of 8 .*cannot be read \(permission denied\)", _fs_unreadable_slice),
        Case("fs-empty-nii", fs, "empty .nii file", REFUSE, r"empty \(0 bytes\)", _fs_empty_nii),
        Case("fs-empty-niigz", fs, "empty .nii.gz file", REFUSE, r"empty \(0 bytes\)", _fs_empty_niigz),
        Case("fs-empty-file", fs, "empty file without a suffix", REFUSE, r"0 bytes", _fs_empty_file),
        Case("fs-empty-slice", fs, "DICOM series with one empty file", REFUSE, r"file 3 of 8 .*empty",
             _fs_empty_slice),
        Case("fs-quotes", fs, "file name with quotes", ACCEPT, r"", _named("it's \"quoted\".nii.gz")),
        Case("fs-newline", fs, "file name with a newline", ACCEPT, r"", _named("first\nsecond.nii.gz")),
        Case("fs-shell", fs, "file name with shell metacharacters", ACCEPT, r"",
             _named("$(touch PWNED); rm -rf ~ | `id` & *?[x].nii.gz")),
        Case("fs-invalid-utf8", fs, "file name that is not UTF-8", ACCEPT, r"", _fs_invalid_utf8),
        Case("fs-unicode", fs, "file name with non-ASCII letters", ACCEPT, r"", _named("Müller_Zoë_脑.nii.gz")),
        Case("fs-long-name", fs, "file name of 250 bytes", ACCEPT, r"", _named("x" * 243 + ".nii.gz")),
        Case("fs-deep", fs, "image 30 folders deep", ACCEPT, r"", _deep(30)),
        Case("fs-too-deep", fs, "image 40 folders deep (beyond the scan depth)", REFUSE, r"nested more than 32 levels",
             _fs_too_deep),
        Case("fs-hidden", fs, "hidden file (.name)", REFUSE, r"starts with '\.'", _fs_hidden),
        Case("fs-dicomdir", fs, "DICOMDIR media index", REFUSE, r"media index", _fs_dicomdir),
        Case("fs-analyze", fs, "ANALYZE 7.5 .hdr/.img pair", REFUSE, r"convert them to NIfTI", _fs_analyze),
        Case("fs-text", fs, "text file among the images", REFUSE, r"not a NIfTI file or DICOM image", _fs_text),
        Case("fs-duplicate", fs, "two images with one subject key (scan.nii, scan.nii.gz)", REFUSE,
             r"one of 2 inputs for subject sub-[0-9a-f]{10}", _fs_duplicate),
        Case("fs-derivatives", fs, "BIDS derivatives folder", REFUSE, r"copies or results of the raw data",
             _fs_derivatives),
        Case("fs-clutter-in-series", fs, "non-DICOM file inside a series folder", ACCEPT, r"", _fs_clutter_in_series),
    ]
