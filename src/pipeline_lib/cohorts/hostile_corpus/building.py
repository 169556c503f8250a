"""What every case of the hostile corpus is built from: the expected decisions, the :class:`Case`
record, a textured phantom, and writers of NIfTI files and DICOM series carrying planted header text."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pydicom

from pipeline_lib.core.settings import IngestSettings
from pipeline_lib.imaging.dicom import write_dicom_series

REFUSE, ACCEPT, WARN = "refuse", "accept", "accept with warning"
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


def phantom(shape=SHAPE, dtype=np.float32) -> np.ndarray:
    """A smooth head-like blob with texture: not constant, all finite."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid ** 2).sum(0))
    rng = np.random.default_rng(7)
    volume = 800 * np.clip(1 - radius, 0, None) + 40 * rng.random(shape)
    return volume.astype(dtype)


def voxel_affine(zooms=(1.0, 1.0, 1.5)) -> np.ndarray:
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = [-12.0, -14.0, -12.0]
    return affine


def write_nifti(path: Path, data=None, affine=None, klass=nib.Nifti1Image, **header) -> Path:
    image = klass(phantom() if data is None else data, voxel_affine() if affine is None else affine)
    for key, value in header.items():
        image.header[key] = value
    nib.save(image, path)
    return path


def nifti_bytes(data=None, affine=None, **header) -> bytes:
    image = nib.Nifti1Image(phantom() if data is None else data, voxel_affine() if affine is None else affine)
    for key, value in header.items():
        image.header[key] = value
    return image.to_bytes()


def patch_header(path: Path, offset: int, fmt: str, *values) -> None:
    """Overwrite header bytes of an uncompressed NIfTI-1 (little endian) in place."""
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(struct.pack("<" + fmt, *values))


def write_series(folder: Path, volume=None, affine=None, **fields) -> list[Path]:
    args = dict(patient_name=PHI_MARK, patient_id="CORPUS-ID-4711", birth_date="19580317",
                manufacturer="ACME", model_name="Scanny", field_strength=3.0,
                series_description="T1 MPRAGE", uid_seed=str(folder.name))
    args.update(fields)
    # 32 pixels a side: the JPEG 2000 encoder's default decomposition needs them
    return write_dicom_series(phantom((32, 32, 8)).astype(np.float64) if volume is None else volume,
                              voxel_affine((1.0, 1.0, 2.0)) if affine is None else affine, folder, **args)


def edit_dicom(files: list[Path], change: Callable[[pydicom.Dataset, int], None], which=None) -> None:
    for index, path in enumerate(files):
        if which is None or index in which:
            dataset = pydicom.dcmread(path)
            change(dataset, index)
            dataset.save_as(path, enforce_file_format=True)


def compress_dicom(files: list[Path], syntax) -> None:
    edit_dicom(files, lambda ds, i: ds.compress(syntax))
