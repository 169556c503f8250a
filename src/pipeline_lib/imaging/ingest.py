"""Per-subject ingestion: one input (NIfTI file or DICOM series) to a clean volume.

Neither dcm2niix nor ANTs can be trusted to reject broken input (they read
truncated files, zero voxel sizes and NaNs without complaint), so every
volume is validated with nibabel before anything else touches it, then
reoriented to RAS and written as a fresh float32 NIfTI whose header carries
nothing but geometry.

Outputs in ``out_dir``: ``status.json`` always; ``volume.nii.gz`` and
``metadata.json`` (whitelisted technical fields only) on success.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from pipeline_lib.imaging.discovery import dicom_files_in, is_nifti_name
from pipeline_lib.core.io import atomic_path, write_json
from pipeline_lib.core.qc import FAILED, new_status, write_status

log = logging.getLogger(__name__)

STAGE = "ingest"
VOLUME_NAME = "volume.nii.gz"
METADATA_NAME = "metadata.json"
FLOAT32_MAX = float(np.finfo(np.float32).max)
DCM2NIIX_TIMEOUT_S = 600

# DICOM keyword -> metadata key; BIDS sidecars use the same names except the model
_DICOM_FIELDS = {
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "model",
    "MagneticFieldStrength": "field_strength",
}
_BIDS_FIELDS = {
    "Manufacturer": "manufacturer",
    "ManufacturersModelName": "model",
    "MagneticFieldStrength": "field_strength",
}


class IngestFailure(Exception):
    """A bad input: ``reason`` says what is wrong, without paths or header values."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def ingest_subject(source: Path, fmt: str, out_dir: Path, subject: str, *,
                   min_voxel_mm: float = 0.1, max_voxel_mm: float = 10.0) -> dict:
    """Validate and convert one subject's input into ``out_dir``; return the status.

    ``fmt`` is ``"nifti"`` or ``"dicom"`` (a folder holding one series). Bad
    data never raises: the returned (and written) status then says
    ``"failed"`` with the reason, and no data files are left in ``out_dir``.
    :func:`pipeline_lib.core.qc.enforce_on_bad_input` turns a failure into an InputError.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    status = new_status(subject, STAGE, source)
    try:
        image, metadata = _load_input(Path(source), fmt, min_voxel_mm, max_voxel_mm)
        _write_volume(out_dir / VOLUME_NAME, image)
        write_json(out_dir / METADATA_NAME, metadata)
    except IngestFailure as failure:
        # a rerun into the same folder must not leave an earlier success behind
        for name in (VOLUME_NAME, METADATA_NAME):
            (out_dir / name).unlink(missing_ok=True)
        status.update(status=FAILED, reason=failure.reason)
        log.warning("subject %s: ingest failed: %s", subject, failure.reason)
    return write_status(out_dir, status)


# ------------------------------------------------------------------ loading


def _load_input(source: Path, fmt: str, min_voxel_mm: float, max_voxel_mm: float
                ) -> tuple[nib.Nifti1Image, dict]:
    """Return the clean RAS image and its metadata, or raise IngestFailure."""
    if fmt == "nifti":
        image = load_clean_volume(source, min_voxel_mm, max_voxel_mm)
        technical = read_bids_sidecar(source)
    elif fmt == "dicom":
        image, technical = _convert_dicom(source, min_voxel_mm, max_voxel_mm)
    else:
        raise IngestFailure(f"unknown input format '{fmt}' (expected 'nifti' or 'dicom')")
    metadata = {
        "manufacturer": None, "model": None, "field_strength": None, "sequence": None,
        **technical,
        "voxel_size_mm": [round(float(z), 6) for z in image.header.get_zooms()[:3]],
        "shape": [int(n) for n in image.shape],
        "source_format": fmt,
    }
    return image, metadata


def load_clean_volume(path: Path, min_voxel_mm: float = 0.1, max_voxel_mm: float = 10.0
                      ) -> nib.Nifti1Image:
    """Validate a NIfTI file and return it as a fresh float32 RAS image.

    Checks, in order: the file exists and nibabel reads its header and all of
    its data; exactly 3-D (a singleton 4th dimension is dropped); every
    voxel size within ``[min_voxel_mm, max_voxel_mm]`` in header and affine;
    real numeric data that are finite, fit float32 and are not constant.
    Raises IngestFailure with the reason otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise IngestFailure("input file does not exist" if not path.exists() else "input is not a file")
    if not is_nifti_name(path.name):
        raise IngestFailure("input file name does not end in .nii or .nii.gz")
    try:
        image = nib.load(path)
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise IngestFailure(f"not a readable NIfTI file ({_describe(exc, path)})") from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise IngestFailure(f"not a NIfTI file (read as {type(image).__name__})")
    shape = _check_shape(image.shape)
    affine = np.asarray(image.affine, dtype=np.float64)
    _check_geometry(_raw_zooms(image, path), affine, min_voxel_mm, max_voxel_mm)
    data = _read_data(image, path).reshape(shape)
    return _fresh_ras_image(data, affine)


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Return the 3-D shape, dropping a singleton 4th dimension, or fail."""
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        kind = f"{len(shape)}-D" if len(shape) != 4 else f"4-D with {shape[3]} volumes"
        raise IngestFailure(f"image is {kind} (shape {tuple(shape)}); expected one 3-D volume")
    if min(shape) < 2:
        raise IngestFailure(f"image has a dimension of size {min(shape)} (shape {tuple(shape)}); "
                            "a single slice is not a volume")
    return tuple(int(n) for n in shape)


def _raw_zooms(image: nib.Nifti1Image, path: Path) -> list[float]:
    """The voxel sizes exactly as stored on disk.

    nibabel silently turns a zero pixdim into 1 mm when loading (as ANTs
    does), which would hide the broken header; so read it again unfixed.
    """
    try:
        with nib.openers.ImageOpener(path) as handle:
            raw = type(image.header).from_fileobj(handle, check=False)
    except Exception as exc:  # header already parsed once; this is unexpected
        raise IngestFailure(f"NIfTI header cannot be read ({_describe(exc, path)})") from None
    return [float(z) for z in raw["pixdim"][1:4]]


def _check_geometry(zooms, affine: np.ndarray, min_voxel_mm: float, max_voxel_mm: float) -> None:
    """Fail unless header voxel sizes and the affine agree on a sane voxel grid."""
    # some writers store negative pixdims; nibabel and ANTs use their magnitude
    zooms = [abs(float(z)) for z in zooms]
    if not np.all(np.isfinite(zooms)) or any(z == 0 for z in zooms):
        raise IngestFailure(f"voxel size {tuple(zooms)} mm in the header is zero or not finite")
    if not np.all(np.isfinite(affine)):
        raise IngestFailure("affine (orientation matrix) contains NaN or Inf")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing <= 0) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise IngestFailure("affine (orientation matrix) is singular: a voxel size is zero")
    for label, sizes in (("header", zooms), ("affine", spacing)):
        if min(sizes) < min_voxel_mm or max(sizes) > max_voxel_mm:
            pretty = tuple(round(float(s), 4) for s in sizes)
            raise IngestFailure(f"voxel size {pretty} mm ({label}) outside the allowed range "
                                f"[{min_voxel_mm}, {max_voxel_mm}] mm")


def _read_data(image: nib.Nifti1Image, path: Path) -> np.ndarray:
    """Read all voxels as float32, failing on short files and bad values."""
    dtype = image.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise IngestFailure(f"unsupported voxel data type {dtype} (need real numbers)")
    try:
        # float64 first: a value beyond float32 must be reported, not turned into Inf
        data = np.asarray(image.get_fdata(dtype=np.float64))
    except Exception as exc:  # truncated gzip, data offset past the end, short data ...
        raise IngestFailure(f"image data cannot be read completely ({_describe(exc, path)})") from None
    bad = ~np.isfinite(data)
    if bad.any():
        raise IngestFailure(f"image contains {int(bad.sum())} NaN or Inf voxel value(s)")
    if data.size and np.abs(data).max() > FLOAT32_MAX:
        raise IngestFailure("image values exceed the float32 range")
    if data.size == 0 or data.max() == data.min():
        raise IngestFailure("image is constant (every voxel has the same value)")
    return data.astype(np.float32)


def _fresh_ras_image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """Reorient to RAS and rebuild the image so no source header text survives."""
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    ras_affine = canonical.affine
    image = nib.Nifti1Image(np.asarray(canonical.dataobj, dtype=np.float32), ras_affine)
    image.set_data_dtype(np.float32)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(ras_affine, code=1)
    image.set_sform(ras_affine, code=1)
    return image


def _write_volume(path: Path, image: nib.Nifti1Image) -> None:
    """Write ``image`` as .nii.gz atomically and byte-reproducibly.

    gzip.compress with mtime=0 stores neither a timestamp nor a file name in
    the gzip header, so reruns give identical bytes.
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0))


def _describe(exc: BaseException, path: Path) -> str:
    """Name an exception without echoing the input path (it may name the patient)."""
    message = str(exc)
    # longest first: replacing the bare name first would leave its folder behind
    for variant in sorted({str(path), str(path.resolve()), path.name}, key=len, reverse=True):
        if variant:
            message = message.replace(variant, "<input>")
    message = " ".join(message.split())[:200]
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# ------------------------------------------------------------ technical fields


def read_bids_sidecar(nifti_path: Path) -> dict:
    """Return the whitelisted technical fields of the BIDS sidecar next to a NIfTI file.

    A missing or unreadable sidecar gives no fields: the image itself is fine.
    """
    name = nifti_path.name
    stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else name[: -len(".nii")]
    sidecar = nifti_path.with_name(stem + ".json")
    try:
        fields = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(fields, dict):
        return {}
    return _technical_fields(fields, _BIDS_FIELDS)


def read_dicom_fields(dicom_file: Path) -> dict:
    """Return the whitelisted technical fields of one DICOM file (pixels not read)."""
    dataset = pydicom.dcmread(dicom_file, stop_before_pixels=True)
    fields = {keyword: dataset.get(keyword) for keyword in
              (*_DICOM_FIELDS, "ScanningSequence", "SequenceVariant")}
    return _technical_fields(fields, _DICOM_FIELDS)


def _technical_fields(fields: dict, names: dict[str, str]) -> dict:
    """Pick and sanitise the whitelisted fields from a header-like mapping."""
    out: dict = {}
    for source_name, key in names.items():
        value = fields.get(source_name)
        out[key] = _as_float(value) if key == "field_strength" else _as_short_text(value)
    scanning = _coded_string(fields.get("ScanningSequence"))
    variant = _coded_string(fields.get("SequenceVariant"))
    out["sequence"] = "/".join(part for part in (scanning, variant) if part) or None
    return out


def _as_float(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _as_short_text(value) -> str | None:
    """A single printable line of at most 64 characters (the DICOM LO limit)."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    text = "".join(ch for ch in text if ch.isprintable())[:64]
    return text or None


def _coded_string(value) -> str | None:
    """Join DICOM code-string values with '_' (as dcm2niix does), keeping only [A-Z0-9_].

    Code strings are defined terms (GR, IR, SP, ...); restricting the
    alphabet guarantees no free text rides along.
    """
    if value is None:
        return None
    if isinstance(value, str):
        parts = re.split(r"[\\_ ]+", value)
    else:
        parts = [str(v) for v in value]
    parts = [re.sub(r"[^A-Z0-9_]", "", p.upper()) for p in parts]
    return "_".join(p for p in parts if p)[:64] or None


# --------------------------------------------------------------------- DICOM


def find_dcm2niix() -> str:
    """Return the dcm2niix executable: on PATH or beside the running Python (PyPI wheel)."""
    found = shutil.which("dcm2niix")
    if found:
        return found
    beside = Path(sys.executable).parent / "dcm2niix"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise FileNotFoundError("dcm2niix not found: install the 'dcm2niix' package (pip) or put it on PATH")


def _convert_dicom(folder: Path, min_voxel_mm: float, max_voxel_mm: float
                   ) -> tuple[nib.Nifti1Image, dict]:
    """Convert one DICOM series folder with dcm2niix and validate the result."""
    if not folder.is_dir():
        raise IngestFailure("DICOM input does not exist" if not folder.exists()
                            else "DICOM input must be a folder holding one series")
    files = dicom_files_in(folder)
    if not files:
        raise IngestFailure("folder holds no DICOM files")
    expected_slices = _check_series(files)
    technical = read_dicom_fields(files[0])
    with tempfile.TemporaryDirectory(prefix="ingest-dcm-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        _run_dcm2niix(folder, out, home=Path(tmp))
        volumes = sorted(out.glob("*.nii"))
        if len(volumes) != 1:
            raise IngestFailure(
                f"dcm2niix produced {len(volumes)} volumes from this folder, expected exactly 1 "
                "(mixed series, missing slices or irregular slice spacing)")
        try:
            shape = nib.load(volumes[0]).shape
        except Exception as exc:  # a broken conversion, reported without paths
            raise IngestFailure(f"dcm2niix output is unreadable ({type(exc).__name__})") from None
        # dcm2niix stacks slices along the third axis, before our reorientation
        if len(shape) < 3 or shape[2] != expected_slices:
            raise IngestFailure(
                f"series has {expected_slices} slice(s) in {len(files)} DICOM file(s) but dcm2niix "
                f"produced shape {tuple(shape)} (missing, duplicate or unreadable slice)")
        image = load_clean_volume(volumes[0], min_voxel_mm, max_voxel_mm)
    return image, technical


def _check_series(files: list[Path]) -> int:
    """Check the series with pydicom and return how many slices it should give.

    dcm2niix converts many broken series with at most a warning, so the
    things it glosses over are checked here: unreadable or truncated files,
    several series in one folder, and slice positions with a gap (a missing
    file) or a duplicate. Frames of multi-frame files count as slices.
    """
    datasets = [_read_dicom_file(path, index, len(files)) for index, path in enumerate(files)]
    series = {ds.get("SeriesInstanceUID") for ds in datasets}
    if len(series) > 1:
        raise IngestFailure(f"folder holds {len(series)} DICOM series; expected exactly one")
    _check_slice_spacing(datasets)
    return sum(int(ds.get("NumberOfFrames") or 1) for ds in datasets)


def _read_dicom_file(path: Path, index: int, count: int) -> pydicom.Dataset:
    """Read one DICOM file completely, failing when it is unreadable or its pixels are cut short."""
    where = f"DICOM file {index + 1} of {count} (in name order)"
    try:
        dataset = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises several types for broken files
        raise IngestFailure(f"{where} is unreadable ({type(exc).__name__})") from None
    if "PixelData" not in dataset:
        raise IngestFailure(f"{where} holds no pixel data")
    syntax = getattr(dataset, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is not None and not syntax.is_compressed:
        expected = (int(dataset.get("Rows") or 0) * int(dataset.get("Columns") or 0)
                    * int(dataset.get("SamplesPerPixel") or 1) * int(dataset.get("BitsAllocated") or 0)
                    // 8 * int(dataset.get("NumberOfFrames") or 1))
        if len(dataset.PixelData) < expected:
            raise IngestFailure(f"{where} is truncated: {len(dataset.PixelData)} of {expected} "
                                "pixel-data bytes present")
    del dataset.PixelData  # only the header is needed from here on; keeps memory flat
    return dataset


def _check_slice_spacing(datasets: list[pydicom.Dataset]) -> None:
    """Fail when single-frame slices are not evenly spaced along the slice normal."""
    single = [ds for ds in datasets if int(ds.get("NumberOfFrames") or 1) == 1]
    if len(single) < 3 or any("ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds
                               for ds in single):
        return
    orientation = np.asarray(single[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.sort([float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float)))
                         for ds in single])
    steps = np.diff(positions)
    typical = float(np.median(steps))
    if typical <= 1e-3 or np.any(steps <= 1e-3):
        raise IngestFailure("two DICOM files lie at the same slice position "
                            "(duplicate slice or mixed series)")
    irregular = np.flatnonzero(np.abs(steps - typical) > max(0.01 * typical, 1e-3))
    if irregular.size:
        k = int(irregular[0])
        raise IngestFailure(
            f"slice positions are unevenly spaced: {steps[k]:.3g} mm between slices {k + 1} and {k + 2} "
            f"(typical {typical:.3g} mm); a slice is probably missing")


def _run_dcm2niix(folder: Path, out: Path, home: Path) -> None:
    """Run dcm2niix with a fixed output name, discarding its output (it prints paths)."""
    command = [
        find_dcm2niix(),
        "-f", "volume",   # never the default name: it embeds folder names and dates
        "-z", "n",
        "-b", "y", "-ba", "y",
        "-d", "0",        # this folder only: one series per folder
        "-i", "n",
        "-x", "i",        # no crop/rotation: slices must stay on the third axis for the count check
        "-o", str(out),
        str(folder),
    ]
    # a private HOME keeps a user's ~/.dcm2nii.ini from changing these settings
    env = {**os.environ, "HOME": str(home)}
    try:
        result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env, timeout=DCM2NIIX_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise IngestFailure(f"dcm2niix did not finish within {DCM2NIIX_TIMEOUT_S} s") from None
    if result.returncode != 0:
        raise IngestFailure(f"dcm2niix could not convert the series (return code {result.returncode})")
