"""A corpus of bad and awkward inputs, each with the decision ingestion must reach.

Every :class:`Case` builds one entry (a file, a folder, a link, a pipe, ...) in its own
folder of a corpus tree; :func:`run_corpus` runs discovery over the whole tree and
ingest over every discovered subject in one go, exactly as the workflow does
(staging links included), and :func:`judge` compares each case's outcome with its
expected decision:

* ``refuse``: discovery lists the entry as ignored, or ingest fails it, with a
  reason matching the case's pattern;
* ``accept``: ingested, no warning;
* ``accept with warning``: ingested, with a warning matching the pattern.

Commands (run from the repository root)::

    python -m pipeline_lib.imaging.hostile_corpus --scorecard docs/HOSTILE_INPUTS.md
    python -m pipeline_lib.imaging.hostile_corpus --build DIR     # the tree only, e.g. to benchmark

When run as root, discovery and ingest run in a child process without the
capabilities that let root read any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH),
so the unreadable-file cases mean what they say. Cases that cannot be built here
(a device node needs CAP_MKNOD) are reported as not built.
"""

from __future__ import annotations

import argparse
import ctypes
import gzip
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
from pydicom import uid as uids

from pipeline_lib.core.io import write_json, write_text
from pipeline_lib.core.settings import IngestSettings
from pipeline_lib.imaging.dicom import write_dicom_series, write_enhanced_mr
from pipeline_lib.imaging.discovery import discover_inputs, display_path, write_staging
from pipeline_lib.imaging.ingest import ingest_subject

REFUSE, ACCEPT, WARN = "refuse", "accept", "accept with warning"
SALT = "hostile-corpus-salt"
SAMPLES_SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "samples.schema.yaml"
PHI_MARK = "CORPUS^PHI^19580317"
#: The settings the corpus runs under (a small cap, so the size cases stay small).
SETTINGS = IngestSettings(max_voxels=8_000_000)
SHAPE = (24, 28, 16)


@dataclass(frozen=True)
class Case:
    slug: str
    group: str        # filesystem, NIfTI or DICOM
    kind: str         # what it is, in words
    expected: str     # REFUSE, ACCEPT or WARN
    reason: str       # regular expression the reason (or warning) must match
    build: Callable[[Path], str]  # builds inside its folder; returns the judged entry's name there


# ------------------------------------------------------------------ building blocks


def phantom(shape=SHAPE, dtype=np.float32) -> np.ndarray:
    """A smooth head-like blob with texture: not constant, all finite."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid ** 2).sum(0))
    rng = np.random.default_rng(7)
    volume = 800 * np.clip(1 - radius, 0, None) + 40 * rng.random(shape)
    return volume.astype(dtype)


def _affine(zooms=(1.0, 1.0, 1.5)) -> np.ndarray:
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = [-12.0, -14.0, -12.0]
    return affine


def _nifti(path: Path, data=None, affine=None, klass=nib.Nifti1Image, **header) -> Path:
    image = klass(phantom() if data is None else data, _affine() if affine is None else affine)
    for key, value in header.items():
        image.header[key] = value
    nib.save(image, path)
    return path


def _raw_nifti_bytes(data=None, affine=None, **header) -> bytes:
    image = nib.Nifti1Image(phantom() if data is None else data, _affine() if affine is None else affine)
    for key, value in header.items():
        image.header[key] = value
    return image.to_bytes()


def _patch_header(path: Path, offset: int, fmt: str, *values) -> None:
    """Overwrite header bytes of an uncompressed NIfTI-1 (little endian) in place."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(struct.pack("<" + fmt, *values))


def _series(folder: Path, volume=None, affine=None, **fields) -> list[Path]:
    args = dict(patient_name=PHI_MARK, patient_id="CORPUS-ID-4711", birth_date="19580317",
                manufacturer="ACME", model_name="Scanny", field_strength=3.0,
                series_description="T1 MPRAGE", uid_seed=str(folder.name))
    args.update(fields)
    # 32 pixels a side: the JPEG 2000 encoder's default decomposition needs them
    return write_dicom_series(phantom((32, 32, 8)).astype(np.float64) if volume is None else volume,
                              _affine((1.0, 1.0, 2.0)) if affine is None else affine, folder, **args)


def _edit(files: list[Path], change: Callable[[pydicom.Dataset, int], None], which=None) -> None:
    for index, path in enumerate(files):
        if which is None or index in which:
            dataset = pydicom.dcmread(path)
            change(dataset, index)
            dataset.save_as(path, enforce_file_format=True)


def _compress(files: list[Path], syntax) -> None:
    _edit(files, lambda ds, i: ds.compress(syntax))


# ------------------------------------------------------------------ filesystem cases


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
    target = _nifti(_outside(d) / "elsewhere.nii.gz")
    os.symlink(target, d / "link.nii.gz")
    return "link.nii.gz"


def _fs_outside_folder(d: Path) -> str:
    target = _outside(d) / "other-study"
    target.mkdir(exist_ok=True)
    _nifti(target / "x.nii.gz")
    os.symlink(target, d / "study")
    return "study"


def _fs_dev_zero(d: Path) -> str:
    os.symlink("/dev/zero", d / "zeros.nii.gz")
    return "zeros.nii.gz"


def _fs_folder_link(d: Path) -> str:
    (d / "real").mkdir()
    _nifti(d / "real" / "image.nii.gz")
    os.symlink("real", d / "alias")
    return "alias"


def _fs_annex_link(d: Path) -> str:
    store = d / ".git" / "annex"
    store.mkdir(parents=True)
    (store / "key-1234").write_bytes(gzip.compress(_raw_nifti_bytes()))  # annex objects have no suffix
    os.symlink(".git/annex/key-1234", d / "sub-01_T1w.nii.gz")
    return "sub-01_T1w.nii.gz"


def _fs_fifo(d: Path) -> str:
    os.mkfifo(d / "stream.nii.gz")
    return "stream.nii.gz"


def _fs_fifo_in_series(d: Path) -> str:
    _series(d / "series")
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
    path = _nifti(d / "locked.nii.gz")
    path.chmod(0)
    return "locked.nii.gz"


def _fs_unreadable_folder(d: Path) -> str:
    (d / "locked").mkdir()
    _nifti(d / "locked" / "inside.nii.gz")
    (d / "locked").chmod(0)
    return "locked"


def _fs_unreadable_slice(d: Path) -> str:
    files = _series(d / "series")
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
    files = _series(d / "series")
    files[2].write_bytes(b"")
    return "series"


def _named(name: str) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        _nifti(Path(os.fsdecode(os.fsencode(str(d)) + b"/" + os.fsencode(name))))
        return name
    return build


def _fs_invalid_utf8(d: Path) -> str:
    name = os.fsdecode(b"scan-\xff\xfe-latin1-\xe9.nii.gz")
    _nifti(d / name)
    return name


def _deep(levels: int) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        folder = d.joinpath(*["level"] * levels)
        folder.mkdir(parents=True)
        _nifti(folder / "deep.nii.gz")
        return "/".join(["level"] * levels) + "/deep.nii.gz"
    return build


def _fs_too_deep(d: Path) -> str:
    folder = d.joinpath(*["level"] * 40)
    folder.mkdir(parents=True)
    _nifti(folder / "deep.nii.gz")
    # the folder beyond the limit is what gets ignored (the corpus folder counts as one level)
    return "/".join(["level"] * 32)


def _fs_hidden(d: Path) -> str:
    _nifti(d / ".backup.nii.gz")
    return ".backup.nii.gz"


def _fs_dicomdir(d: Path) -> str:
    files = _series(d / "tmp")
    shutil.copy(files[0], d / "DICOMDIR")
    shutil.rmtree(d / "tmp")
    return "DICOMDIR"


def _fs_analyze(d: Path) -> str:
    nib.save(nib.AnalyzeImage(phantom(), _affine()), d / "old.hdr")
    return "old.hdr"


def _fs_text(d: Path) -> str:
    (d / "README.txt").write_text(f"export of {PHI_MARK}\n")
    return "README.txt"


def _fs_duplicate(d: Path) -> str:
    _nifti(d / "scan.nii")
    _nifti(d / "scan.nii.gz")
    return "scan.nii"


def _fs_derivatives(d: Path) -> str:
    (d / "derivatives").mkdir()
    _nifti(d / "derivatives" / "brain.nii.gz")
    return "derivatives"


def _fs_clutter_in_series(d: Path) -> str:
    _series(d / "series")
    (d / "series" / "Thumbs.db").write_bytes(b"\0" * 512)
    return "series"


# ------------------------------------------------------------------ NIfTI cases


def _ni_good(d: Path) -> str:
    _nifti(d / "t1.nii.gz")
    return "t1.nii.gz"


def _ni_plain(d: Path) -> str:
    _nifti(d / "t1.nii")
    return "t1.nii"


def _ni_nifti2(d: Path) -> str:
    _nifti(d / "t1.nii.gz", klass=nib.Nifti2Image)
    return "t1.nii.gz"


def _ni_gzip_named_nii(d: Path) -> str:
    (d / "t1.nii").write_bytes(gzip.compress(_raw_nifti_bytes()))
    return "t1.nii"


def _ni_plain_named_gz(d: Path) -> str:
    (d / "t1.nii.gz").write_bytes(_raw_nifti_bytes())
    return "t1.nii.gz"


def _ni_big_endian(d: Path) -> str:
    image = nib.Nifti1Image(phantom().astype(">f4"), _affine())
    nib.save(image, d / "t1.nii")
    return "t1.nii"


def _ni_scaled_int16(d: Path) -> str:
    image = nib.Nifti1Image(phantom().astype(np.int16), _affine())
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, d / "t1.nii.gz")
    return "t1.nii.gz"


def _ni_header_text(d: Path) -> str:
    image = nib.Nifti1Image(phantom(), _affine())
    image.header["descrip"] = PHI_MARK.encode()
    image.header["aux_file"] = b"CORPUS-ID-4711"
    image.header["intent_name"] = b"CORPUS^PHI"
    image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", PHI_MARK.encode()))
    nib.save(image, d / "t1.nii.gz")
    return "t1.nii.gz"


def _ni_truncated_plain(d: Path) -> str:
    raw = _raw_nifti_bytes()
    (d / "t1.nii").write_bytes(raw[: len(raw) // 2])
    return "t1.nii"


def _ni_truncated_gz(d: Path) -> str:
    raw = gzip.compress(_raw_nifti_bytes())
    (d / "t1.nii.gz").write_bytes(raw[: len(raw) // 2])
    return "t1.nii.gz"


def _ni_bad_crc(d: Path) -> str:
    raw = bytearray(gzip.compress(_raw_nifti_bytes()))
    raw[-8] ^= 0xFF  # the CRC32 of the gzip trailer
    (d / "t1.nii.gz").write_bytes(bytes(raw))
    return "t1.nii.gz"


def _ni_terabytes(d: Path) -> str:
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((32767, 32767, 32767))
    header.set_qform(_affine(), code=1)
    header["vox_offset"] = 352
    (d / "huge.nii").write_bytes(header.binaryblock + b"\0" * 4 + b"\1" * 4096)
    return "huge.nii"


def _ni_gzip_bomb(d: Path) -> str:
    """A small declared image followed by 64 MiB of zeros that compress to ~64 KiB."""
    with gzip.open(d / "bomb.nii.gz", "wb", compresslevel=9) as handle:
        handle.write(_raw_nifti_bytes())
        zeros = b"\0" * (1 << 20)
        for _ in range(64):
            handle.write(zeros)
    return "bomb.nii.gz"


def _ni_zeros_within_cap(d: Path) -> str:
    """As big as the cap allows, all zeros: inflated under the limit, then refused as constant."""
    side = int(round(SETTINGS.max_voxels ** (1 / 3)))
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((side, side, side))
    header.set_qform(_affine(), code=1)
    header["vox_offset"] = 352
    with gzip.open(d / "zeros.nii.gz", "wb", compresslevel=1) as handle:
        handle.write(header.binaryblock + b"\0" * 4)
        plane = b"\0" * (side * side * 2)
        for _ in range(side):
            handle.write(plane)
    return "zeros.nii.gz"


def _ni_trailing_bytes(d: Path) -> str:
    (d / "t1.nii.gz").write_bytes(gzip.compress(_raw_nifti_bytes() + b"padding" * 10))
    return "t1.nii.gz"


def _ni_offset_past_end(d: Path) -> str:
    path = _nifti(d / "t1.nii")
    _patch_header(path, 108, "f", 1e6)  # vox_offset
    return "t1.nii"


def _ni_offset_in_header(d: Path) -> str:
    path = _nifti(d / "t1.nii")
    _patch_header(path, 108, "f", 100.0)
    return "t1.nii"


def _ni_bad_ndim(d: Path) -> str:
    path = _nifti(d / "t1.nii")
    _patch_header(path, 40, "h", 9)  # dim[0]
    return "t1.nii"


def _ni_negative_dim(d: Path) -> str:
    path = _nifti(d / "t1.nii")
    _patch_header(path, 42, "h", -24)  # dim[1]
    return "t1.nii"


def _ni_png(d: Path) -> str:
    (d / "picture.nii").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return "picture.nii"


def _ni_pair_magic(d: Path) -> str:
    path = _nifti(d / "t1.nii")
    _patch_header(path, 344, "4s", b"ni1\0")
    return "t1.nii"


def _ni_complex(d: Path) -> str:
    _nifti(d / "t1.nii.gz", data=phantom().astype(np.complex64))
    return "t1.nii.gz"


def _ni_rgb(d: Path) -> str:
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    _nifti(d / "t1.nii.gz", data=rgb)
    return "t1.nii.gz"


def _ni_qform_sform_flip(d: Path) -> str:
    image = nib.Nifti1Image(phantom(), _affine())
    flipped = _affine()
    flipped[0, 0] = -flipped[0, 0]
    image.set_qform(flipped, code=1)
    image.set_sform(_affine(), code=2)
    nib.save(image, d / "t1.nii.gz")
    return "t1.nii.gz"


def _ni_qform_sform_shift(d: Path) -> str:
    image = nib.Nifti1Image(phantom(), _affine())
    shifted = _affine()
    shifted[:3, 3] += [0.5, 0.0, 0.0]
    image.set_qform(shifted, code=1)
    image.set_sform(_affine(), code=1)
    nib.save(image, d / "t1.nii.gz")
    return "t1.nii.gz"


def _ni_no_orientation(d: Path) -> str:
    image = nib.Nifti1Image(phantom(), _affine())
    image.set_qform(None, code=0)
    image.set_sform(None, code=0)
    nib.save(image, d / "t1.nii.gz")
    return "t1.nii.gz"


def _ni_qform_only(d: Path) -> str:
    image = nib.Nifti1Image(phantom(), _affine())
    image.set_qform(_affine(), code=1)
    image.set_sform(None, code=0)
    nib.save(image, d / "t1.nii.gz")
    return "t1.nii.gz"


def _pixdim(values) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        path = _nifti(d / "t1.nii")
        _patch_header(path, 80, "3f", *values)  # pixdim[1..3]
        return "t1.nii"
    return build


def _sform_row(row: int, values) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        affine = _affine()
        affine[row, : len(values)] = values
        image = nib.Nifti1Image(phantom(), _affine())
        image.set_sform(affine, code=2)
        image.set_qform(None, code=0)
        nib.save(image, d / "t1.nii")
        if not np.all(np.isfinite(values)):
            _patch_header(d / "t1.nii", 280 + 16 * row, "4f", *affine[row])
        return "t1.nii"
    return build


def _ni_coarse(d: Path) -> str:
    _nifti(d / "t1.nii.gz", affine=_affine((20.0, 1.0, 1.0)))
    return "t1.nii.gz"


def _ni_nan_values(d: Path) -> str:
    data = phantom()
    data[3, 4, 5] = np.nan
    _nifti(d / "t1.nii.gz", data=data)
    return "t1.nii.gz"


def _ni_beyond_float32(d: Path) -> str:
    data = phantom().astype(np.float64)
    data[1, 1, 1] = 1e300
    _nifti(d / "t1.nii.gz", data=data)
    return "t1.nii.gz"


def _ni_constant(d: Path) -> str:
    _nifti(d / "t1.nii.gz", data=np.full(SHAPE, 3.0, dtype=np.float32))
    return "t1.nii.gz"


def _ni_four_d(d: Path) -> str:
    _nifti(d / "bold.nii.gz", data=np.stack([phantom()] * 3, axis=-1))
    return "bold.nii.gz"


def _ni_two_d(d: Path) -> str:
    _nifti(d / "slice.nii.gz", data=phantom()[:, :, 0])
    return "slice.nii.gz"


def _ni_single_slice(d: Path) -> str:
    _nifti(d / "slice.nii.gz", data=phantom()[:, :, :1])
    return "slice.nii.gz"


def _ni_inf_slope(d: Path) -> str:
    path = _nifti(d / "t1.nii", data=phantom().astype(np.int16))
    _patch_header(path, 112, "f", float("inf"))  # scl_slope
    return "t1.nii"


# ------------------------------------------------------------------ DICOM cases


def _dc_good(d: Path) -> str:
    _series(d / "series")
    return "series"


def _dc_oblique(d: Path) -> str:
    angle = np.radians(17)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = _affine((1.0, 1.0, 2.0))
    affine[:3, :3] = rotation @ affine[:3, :3]
    _series(d / "series", affine=affine)
    return "series"


def _set(**values) -> Callable[[pydicom.Dataset, int], None]:
    def change(dataset: pydicom.Dataset, index: int) -> None:
        for key, value in values.items():
            setattr(dataset, key, value)
    return change


def _delete(keyword: str) -> Callable[[pydicom.Dataset, int], None]:
    def change(dataset: pydicom.Dataset, index: int) -> None:
        delattr(dataset, keyword)
    return change


def _edited(change, which=None) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        _edit(_series(d / "series"), change, which)
        return "series"
    return build


def _dc_screenshot(d: Path) -> str:
    def rgb(ds: pydicom.Dataset, index: int) -> None:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelData = np.full((ds.Rows, ds.Columns, 3), 128, np.uint8).tobytes()
    _edit(_series(d / "series"), rgb)
    return "series"


def _dc_multiframe(d: Path) -> str:
    files = _series(d / "frames")
    datasets = [pydicom.dcmread(p) for p in files]
    first = datasets[0]
    first.NumberOfFrames = len(datasets)
    first.PixelData = b"".join(ds.PixelData for ds in datasets)
    (d / "series").mkdir()
    first.save_as(d / "series" / "MF0001.dcm", enforce_file_format=True)
    shutil.rmtree(d / "frames")
    return "series"


def _dc_enhanced(d: Path, change: Callable[[pydicom.Dataset], None] | None = None) -> str:
    path = write_enhanced_mr(phantom((32, 32, 8)).astype(np.float64), _affine((1.0, 1.0, 2.0)),
                             d / "series" / "MF0001.dcm", patient_name=PHI_MARK, patient_id="CORPUS-ID-4711",
                             birth_date="19580317", uid_seed=d.name)
    if change is not None:
        dataset = pydicom.dcmread(path)
        change(dataset)
        dataset.save_as(path, enforce_file_format=True)
    return "series"


def _dc_enhanced_short_groups(d: Path) -> str:
    def drop_last(ds: pydicom.Dataset) -> None:
        ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:-1]
    return _dc_enhanced(d, drop_last)


def _compressed(syntax) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        _compress(_series(d / "series"), syntax)
        return "series"
    return build


def _dc_deflated(d: Path) -> str:
    _edit(_series(d / "series"), lambda ds, i: setattr(ds.file_meta, "TransferSyntaxUID",
                                                         uids.DeflatedExplicitVRLittleEndian))
    return "series"


def _dc_implicit(d: Path) -> str:
    def implicit(ds: pydicom.Dataset, index: int) -> None:
        ds.file_meta.TransferSyntaxUID = uids.ImplicitVRLittleEndian
    _edit(_series(d / "series"), implicit)
    return "series"


def _dc_unsupported_syntax(d: Path) -> str:
    for path in _series(d / "series"):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = uids.HTJ2KLossless
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 64])
        ds.save_as(path, enforce_file_format=True)
    return "series"


def _dc_huge_declared(d: Path) -> str:
    def huge(ds: pydicom.Dataset, index: int) -> None:
        ds.file_meta.TransferSyntaxUID = uids.RLELossless
        ds.Rows = ds.Columns = 65535
        ds.PixelData = pydicom.encaps.encapsulate([b"\0" * 64])
    _edit(_series(d / "series"), huge)
    return "series"


def _dc_orientation_mixed(d: Path) -> str:
    def tilt(ds: pydicom.Dataset, index: int) -> None:
        ds.ImageOrientationPatient = [-1, 0, 0, 0, -0.9, -0.43588989]
    _edit(_series(d / "series"), tilt, which={5})
    return "series"


def _dc_gap(d: Path) -> str:
    files = _series(d / "series")
    files[4].unlink()
    return "series"


def _dc_duplicate_position(d: Path) -> str:
    files = _series(d / "series")
    position = pydicom.dcmread(files[2]).ImagePositionPatient
    _edit(files, _set(ImagePositionPatient=position), which={3})
    return "series"


def _dc_gantry_tilt(d: Path) -> str:
    def drift(ds: pydicom.Dataset, index: int) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.6 * index, z]
    _edit(_series(d / "series"), drift)
    return "series"


def _dc_two_series(d: Path) -> str:
    _series(d / "a", uid_seed="a", series_number=1)
    _series(d / "b", uid_seed="b", series_number=2)
    (d / "series").mkdir()
    for folder in ("a", "b"):
        for path in sorted((d / folder).iterdir()):
            path.rename(d / "series" / f"{folder}-{path.name}")
        (d / folder).rmdir()
    return "series"


def _dc_truncated(d: Path) -> str:
    files = _series(d / "series")
    raw = files[3].read_bytes()
    files[3].write_bytes(raw[:-300])
    return "series"


def _dc_no_pixels(d: Path) -> str:
    _edit(_series(d / "series"), _delete("PixelData"), which={0})
    return "series"


def _dc_garbage_file(d: Path) -> str:
    files = _series(d / "series")
    files[1].write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(3).bytes(200))
    return "series"


def _dc_single_slice(d: Path) -> str:
    files = _series(d / "series")
    for path in files[1:]:
        path.unlink()
    return "series"


def _dc_header_text(d: Path) -> str:
    def phi(ds: pydicom.Dataset, index: int) -> None:
        ds.ProtocolName = ds.StudyDescription = ds.InstitutionName = ds.OperatorsName = PHI_MARK
        ds.ImageComments = PHI_MARK
    _edit(_series(d / "series"), phi)
    return "series"


# ------------------------------------------------------------------ the cases


def cases() -> list[Case]:
    fs, ni, dc = "filesystem", "NIfTI", "DICOM"
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
        Case("ni-good", ni, "NIfTI-1, gzip-compressed", ACCEPT, r"", _ni_good),
        Case("ni-plain", ni, "NIfTI-1, uncompressed", ACCEPT, r"", _ni_plain),
        Case("ni-nifti2", ni, "NIfTI-2", ACCEPT, r"", _ni_nifti2),
        Case("ni-gzip-named-nii", ni, "gzip-compressed content named .nii", ACCEPT, r"", _ni_gzip_named_nii),
        Case("ni-plain-named-gz", ni, "uncompressed content named .nii.gz", ACCEPT, r"", _ni_plain_named_gz),
        Case("ni-big-endian", ni, "big-endian float32", ACCEPT, r"", _ni_big_endian),
        Case("ni-scaled-int16", ni, "int16 with scl_slope/scl_inter", ACCEPT, r"", _ni_scaled_int16),
        Case("ni-header-text", ni, "patient name in descrip, aux_file, intent_name and an extension", ACCEPT, r"",
             _ni_header_text),
        Case("ni-trailing-bytes", ni, "70 bytes after the voxel data", WARN, r"70 bytes after the voxel data",
             _ni_trailing_bytes),
        Case("ni-qform-sform-shift", ni, "qform and sform 0.5 mm apart", WARN, r"qform and sform differ by up to 0\.5 mm",
             _ni_qform_sform_shift),
        Case("ni-qform-only", ni, "qform only (sform_code 0)", ACCEPT, r"", _ni_qform_only),
        Case("ni-float-noise-shear", ni, "sform with float rounding noise (1e-6)", ACCEPT, r"",
             _sform_row(0, [1.0, 1e-6, 0.0])),
        Case("ni-truncated-plain", ni, "truncated .nii", REFUSE, r"truncated: the header declares", _ni_truncated_plain),
        Case("ni-truncated-gz", ni, "truncated .nii.gz", REFUSE, r"corrupt or cut short|truncated", _ni_truncated_gz),
        Case("ni-bad-crc", ni, "gzip stream with a wrong checksum", REFUSE, r"corrupt or cut short", _ni_bad_crc),
        Case("ni-terabytes", ni, "header declaring 65 TiB (32767^3 int16) in a 4 KiB file", REFUSE,
             r"declares 35,181,150,961,663 voxels .* more than ingest\.max_voxels", _ni_terabytes),
        Case("ni-gzip-bomb", ni, "gzip bomb: a small image followed by 64 MiB of zeros (64 KiB compressed)", REFUSE,
             r"inflates beyond", _ni_gzip_bomb),
        Case("ni-zeros-at-cap", ni, "compressed zeros as large as ingest.max_voxels allows", REFUSE, r"constant",
             _ni_zeros_within_cap),
        Case("ni-offset-past-end", ni, "voxel offset beyond the end of the file", REFUSE, r"truncated",
             _ni_offset_past_end),
        Case("ni-offset-in-header", ni, "voxel offset inside the header", REFUSE, r"lies inside the header",
             _ni_offset_in_header),
        Case("ni-bad-ndim", ni, "dim[0] = 9", REFUSE, r"declares 9 dimensions", _ni_bad_ndim),
        Case("ni-negative-dim", ni, "negative dimension", REFUSE, r"dimension of size < 1", _ni_negative_dim),
        Case("ni-png", ni, "PNG renamed .nii", REFUSE, r"not a NIfTI file", _ni_png),
        Case("ni-pair-magic", ni, "header of a .hdr/.img pair (magic ni1) in a .nii", REFUSE,
             r"not a single-file NIfTI", _ni_pair_magic),
        Case("ni-complex", ni, "complex voxels", REFUSE, r"unsupported voxel data type", _ni_complex),
        Case("ni-rgb", ni, "RGB voxels", REFUSE, r"unsupported voxel data type", _ni_rgb),
        Case("ni-qform-sform-flip", ni, "qform and sform disagree by a left-right flip", REFUSE,
             r"disagree on orientation \(qform LAS, sform RAS\)", _ni_qform_sform_flip),
        Case("ni-no-orientation", ni, "qform_code and sform_code both 0", REFUSE, r"orientation unknown",
             _ni_no_orientation),
        Case("ni-zero-voxel", ni, "zero voxel size", REFUSE, r"is zero", _pixdim([1.0, 0.0, 1.5])),
        Case("ni-negative-voxel", ni, "negative voxel size", REFUSE, r"is negative", _pixdim([-1.0, 1.0, 1.5])),
        Case("ni-nan-voxel", ni, "NaN voxel size", REFUSE, r"not finite", _pixdim([float("nan"), 1.0, 1.5])),
        Case("ni-inf-sform", ni, "Inf in the sform", REFUSE, r"NaN or Inf", _sform_row(1, [0.0, float("inf")])),
        Case("ni-sheared", ni, "sheared sform (10 degrees)", REFUSE, r"not perpendicular \(sheared by 10 degrees",
             _sform_row(0, [1.0, np.tan(np.radians(10)), 0.0])),
        Case("ni-coarse", ni, "20 mm voxels", REFUSE, r"outside the allowed range", _ni_coarse),
        Case("ni-nan-values", ni, "a NaN voxel", REFUSE, r"1 NaN or Inf voxel", _ni_nan_values),
        Case("ni-beyond-float32", ni, "a value beyond the float32 range", REFUSE, r"float32 range", _ni_beyond_float32),
        Case("ni-constant", ni, "constant image", REFUSE, r"constant", _ni_constant),
        Case("ni-four-d", ni, "4-D series of 3 volumes", REFUSE, r"4-D with 3 volumes", _ni_four_d),
        Case("ni-two-d", ni, "2-D image", REFUSE, r"image is 2-D", _ni_two_d),
        Case("ni-single-slice", ni, "3-D image one slice thick", REFUSE, r"single slice", _ni_single_slice),
        Case("ni-inf-slope", ni, "infinite scl_slope", REFUSE, r"scaling", _ni_inf_slope),
        Case("dc-good", dc, "MR series, uncompressed", ACCEPT, r"", _dc_good),
        Case("dc-oblique", dc, "oblique MR series (17 degrees)", ACCEPT, r"", _dc_oblique),
        Case("dc-implicit", dc, "implicit VR little endian", ACCEPT, r"", _dc_implicit),
        Case("dc-rle", dc, "RLE lossless", ACCEPT, r"", _compressed(uids.RLELossless)),
        Case("dc-jpeg2000", dc, "JPEG 2000 lossless", ACCEPT, r"", _compressed(uids.JPEG2000Lossless)),
        Case("dc-jpegls", dc, "JPEG-LS lossless", ACCEPT, r"", _compressed(uids.JPEGLSLossless)),
        Case("dc-deflated", dc, "deflated explicit VR (dcm2niix cannot; pydicom inflates it)", ACCEPT, r"",
             _dc_deflated),
        Case("dc-header-text", dc, "patient name in protocol, study, institution, operator and comments", ACCEPT,
             r"", _dc_header_text),
        Case("dc-unsupported-syntax", dc, "High-Throughput JPEG 2000 (no decoder here)", REFUSE,
             r"High-Throughput JPEG 2000 .* cannot be decoded",
             _dc_unsupported_syntax),
        Case("dc-ct", dc, "CT series", REFUSE, r"modality CT is not accepted", _edited(_set(Modality="CT"))),
        Case("dc-no-modality", dc, "series without Modality", REFUSE, r"modality \(none\)", _edited(_delete("Modality"))),
        Case("dc-localizer", dc, "localizer (ImageType LOCALIZER)", REFUSE, r"localizer",
             _edited(_set(ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]))),
        Case("dc-localizer-named", dc, "localizer named so (3-plane localizer)", REFUSE, r"localizer",
             _edited(_set(SeriesDescription="AAHead_Scout 3-plane localizer"))),
        Case("dc-secondary-capture", dc, "secondary capture", REFUSE, r"secondary capture",
             _edited(_set(SOPClassUID=uids.SecondaryCaptureImageStorage))),
        Case("dc-screenshot", dc, "RGB screenshot", REFUSE, r"colour image", _dc_screenshot),
        Case("dc-derived", dc, "derived image (a reformat)", REFUSE, r"derived image",
             _edited(_set(ImageType=["DERIVED", "SECONDARY", "MPR"]))),
        Case("dc-multiframe", dc, "multi-frame file of the classic MR class (no per-frame geometry)", REFUSE,
             r"multi-frame", _dc_multiframe),
        Case("dc-enhanced", dc, "enhanced MR: one multi-frame file (Siemens XA, Philips)", ACCEPT, r"", _dc_enhanced),
        Case("dc-enhanced-frame-count", dc, "enhanced MR whose frame count disagrees with its per-frame groups",
             REFUSE, r"declares 8 frames .* describe 7", _dc_enhanced_short_groups),
        Case("dc-huge-declared", dc, "series declaring 65535 x 65535 pixels per slice", REFUSE,
             r"more than ingest\.max_voxels", _dc_huge_declared),
        Case("dc-no-position", dc, "no ImagePositionPatient", REFUSE, r"lacks ImagePositionPatient",
             _edited(_delete("ImagePositionPatient"))),
        Case("dc-no-orientation", dc, "no ImageOrientationPatient", REFUSE, r"lacks ImageOrientationPatient",
             _edited(_delete("ImageOrientationPatient"))),
        Case("dc-no-spacing", dc, "no PixelSpacing", REFUSE, r"lacks PixelSpacing", _edited(_delete("PixelSpacing"))),
        Case("dc-zero-spacing", dc, "zero PixelSpacing", REFUSE, r"PixelSpacing .* zero",
             _edited(_set(PixelSpacing=[0, 1]))),
        Case("dc-nonorthogonal", dc, "orientation vectors not perpendicular", REFUSE, r"not two perpendicular",
             _edited(_set(ImageOrientationPatient=[1, 0, 0, 0.3, 0.95393920, 0]))),
        Case("dc-mixed-orientation", dc, "one slice with another orientation", REFUSE, r"different orientations",
             _dc_orientation_mixed),
        Case("dc-gap", dc, "a missing slice", REFUSE, r"unevenly spaced", _dc_gap),
        Case("dc-duplicate-position", dc, "two slices at one position", REFUSE, r"same slice position",
             _dc_duplicate_position),
        Case("dc-gantry-tilt", dc, "slice positions drifting sideways (gantry tilt)", REFUSE, r"sheared",
             _dc_gantry_tilt),
        Case("dc-two-series", dc, "two series in one folder", REFUSE, r"2 DICOM series", _dc_two_series),
        Case("dc-truncated", dc, "a truncated file", REFUSE, r"truncated", _dc_truncated),
        Case("dc-no-pixels", dc, "a file without pixel data", REFUSE, r"no pixel data", _dc_no_pixels),
        Case("dc-garbage", dc, "a garbage file with the DICM magic", REFUSE, r"unreadable|no pixel data", _dc_garbage_file),
        Case("dc-single-slice", dc, "a one-slice series", REFUSE, r"single slice", _dc_single_slice),
    ]


# ------------------------------------------------------------------ running


def build_corpus(root: Path, selected: list[Case] | None = None) -> dict[str, str]:
    """Build every case under ``root`` (``NN-slug/``); return slug -> why it was not built."""
    root = Path(root)
    root.mkdir(parents=True)
    skipped = {}
    judged = {}
    for index, case in enumerate(selected or cases()):
        folder = root / f"{index + 1:03d}-{case.slug}"
        folder.mkdir()
        try:
            judged[case.slug] = f"{folder.name}/{case.build(folder)}"
        except PermissionError as exc:
            skipped[case.slug] = f"cannot be built here ({os.strerror(exc.errno or 0)})"
            shutil.rmtree(folder, ignore_errors=True)
    write_json(root.parent / f"{root.name}.judged.json", judged)
    return skipped


def run_corpus(root: Path, work: Path) -> pd.DataFrame:
    """Discovery over ``root`` and ingest of every subject, as the workflow does; one row per outcome."""
    root, work = Path(root), Path(work)
    found = discover_inputs(root, SALT, SAMPLES_SCHEMA)
    write_staging(found, work / "staging")
    rows = [{"path": path, "stage": "discovery", "decision": REFUSE, "reason": reason, "warning": "",
             "kind": kind} for path, kind, reason in found.ignored[["path", "kind", "reason"]].itertuples(index=False)]
    linkage = found.linkage.set_index("subject")
    for subject, fmt, kind in found.subjects[["subject", "format", "kind"]].itertuples(index=False):
        status = ingest_subject(work / "staging" / subject / "input", fmt, work / "ingest" / subject, subject,
                                kind=kind, settings=SETTINGS)
        decision = REFUSE if status["status"] != "ok" else WARN if status["warning"] else ACCEPT
        rows.append({"path": linkage.loc[subject, "path"], "stage": "ingest", "decision": decision,
                     "reason": status["reason"], "warning": status["warning"], "kind": kind,
                     "output": str(work / "ingest" / subject)})
    return pd.DataFrame(rows)


def judge(root: Path, outcomes: pd.DataFrame, selected: list[Case] | None = None,
          skipped: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per case: expected and actual decision, the stage, the reason and whether it matches."""
    root = Path(root)
    judged = json.loads((root.parent / f"{root.name}.judged.json").read_text())
    by_path = {row.path: row for row in outcomes.itertuples(index=False)}
    rows = []
    for case in selected or cases():
        if case.slug in (skipped or {}):
            rows.append({"slug": case.slug, "group": case.group, "kind": case.kind, "expected": case.expected,
                         "decision": "not built", "stage": "", "reason": skipped[case.slug], "ok": None})
            continue
        outcome = by_path.get(display_path(os.path.abspath(root / judged[case.slug])))
        if outcome is None:
            rows.append({"slug": case.slug, "group": case.group, "kind": case.kind, "expected": case.expected,
                         "decision": "no outcome", "stage": "", "reason": "", "ok": False})
            continue
        text = outcome.warning if case.expected == WARN else outcome.reason
        ok = outcome.decision == case.expected and bool(re.search(case.reason, text)) \
            and (case.expected != REFUSE or len(text) > 10)
        rows.append({"slug": case.slug, "group": case.group, "kind": case.kind, "expected": case.expected,
                     "decision": outcome.decision, "stage": outcome.stage,
                     "reason": outcome.reason or outcome.warning, "ok": ok,
                     "output": getattr(outcome, "output", "")})
    return pd.DataFrame(rows)


def run_without_dac_override(root: Path, work: Path) -> pd.DataFrame:
    """:func:`run_corpus` in a child process that cannot bypass file permissions (when root)."""
    result = Path(work) / "outcomes.json"
    command = [sys.executable, "-m", "pipeline_lib.imaging.hostile_corpus", "--run", str(root), "--work", str(work)]
    preexec = _drop_dac_capabilities if os.geteuid() == 0 else None
    done = subprocess.run(command, preexec_fn=preexec, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"corpus run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return pd.read_json(result, orient="records", dtype=False)


def _drop_dac_capabilities() -> None:
    """Remove CAP_DAC_OVERRIDE (1) and CAP_DAC_READ_SEARCH (2) from the bounding set; root's
    capabilities are recomputed from it at exec, so the child program runs without them."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def scorecard(table: pd.DataFrame) -> str:
    """The Markdown scorecard: one row per case."""
    counts = table["decision"].value_counts().to_dict()
    lines = [
        "# Hostile and awkward inputs: the scorecard",
        "",
        "Generated by `python -m pipeline_lib.imaging.hostile_corpus --scorecard docs/HOSTILE_INPUTS.md`",
        "from the corpus that `tests/test_hostile_corpus.py` builds and checks (every row must match its",
        "expected decision). Each case is one entry in its own folder of one input tree; discovery runs over",
        "the whole tree and ingest over every subject it finds, in one go, with `ingest.max_voxels` set to",
        f"{SETTINGS.max_voxels:,}. *Stage* says where the decision fell: discovery lists ignored entries (with",
        "kind and reason) in the ingest QC table; ingest refuses a subject with its reason. Reasons are",
        "quoted as the QC table shows them.",
        "",
        f"{len(table)} cases: " + ", ".join(f"{n} {decision}" for decision, n in sorted(counts.items())) + ".",
        "",
        "| # | input | expected | decision | stage | reason or warning |",
        "|---|---|---|---|---|---|",
    ]
    for index, row in enumerate(table.itertuples(index=False)):
        mark = "" if row.ok in (True, None) else " **(unexpected)**"
        reason = str(row.reason).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {index + 1} | {row.group}: {row.kind} | {row.expected} | {row.decision}{mark} | "
                     f"{row.stage} | {reason} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The hostile-input corpus: build, run, score.")
    parser.add_argument("--scorecard", type=Path, help="build and run the corpus, write the Markdown scorecard here")
    parser.add_argument("--build", type=Path, help="only build the corpus tree into this (new) folder")
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        run_corpus(args.run, args.work).to_json(args.work / "outcomes.json", orient="records")
        return
    if args.build:
        skipped = build_corpus(args.build)
        print(f"built {len(cases()) - len(skipped)} cases in {args.build}; not built: {skipped or 'none'}")
        return
    if args.scorecard:
        with tempfile.TemporaryDirectory(prefix="hostile-corpus-") as tmp:
            root, work = Path(tmp) / "corpus", Path(tmp) / "work"
            skipped = build_corpus(root)
            work.mkdir()
            table = judge(root, run_without_dac_override(root, work), skipped=skipped)
        write_text(args.scorecard, scorecard(table))
        bad = table[table["ok"] == False]  # noqa: E712 (None means not built)
        print(f"{len(table)} cases, {len(bad)} unexpected; scorecard written to {args.scorecard}")
        if len(bad):
            raise SystemExit(1)
        return
    parser.print_help()


if __name__ == "__main__":
    main()
