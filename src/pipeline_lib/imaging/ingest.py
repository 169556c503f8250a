"""Per-subject ingestion: one input (NIfTI file or DICOM series) to a clean volume.

Neither dcm2niix nor ANTs can be trusted to reject broken input (they read
truncated files, zero voxel sizes, CT series and screenshots without complaint),
so every input is validated before anything else touches it: a NIfTI file by
:mod:`~pipeline_lib.imaging.nifti_reader` (sizes, gzip, geometry, voxels, all
before or while reading, within ``ingest.max_voxels``), a DICOM series by
:mod:`~pipeline_lib.imaging.dicom_checks` from its headers and then, converted
by dcm2niix, as a NIfTI file. The volume is reoriented to RAS and written as a
fresh NIfTI whose header carries nothing but geometry: no descrip,
aux_file, intent_name or extension of the source survives. It keeps the input's own
integer type where that holds every value (scl_slope/scl_inter applied exactly, so none is
written), else it is float32: the copy reads back as exactly the float32 values registration
computes with, in half (int16) or a quarter (uint8) of the uncompressed bytes (gzip already
squeezed much of float32's waste: the Han stand-in's .nii.gz copies shrink by about 17 %).

Outputs in ``out_dir``: ``status.json`` always; ``volume.nii.gz`` and
``metadata.json`` (whitelisted technical fields only) on success.

A subject with several sequences (``input.layout``) has its reference sequence staged as
``input`` and ingested as above; :func:`ingest_other_sequences` then ingests every other
sequence into ``sequences/<name>/`` and every mask (the BraTS segmentation) into
``masks/<name>/``, each with its own ``status.json``. The reference's status is the subject's;
another sequence that fails leaves a warning on it.
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
from typing import Any, Mapping

import nibabel as nib
import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from pipeline_lib.core.io import atomic_path, write_json
from pipeline_lib.core.qc import FAILED, new_status, write_status
from pipeline_lib.core.settings import IngestSettings, read_settings
from pipeline_lib.imaging.dicom_checks import DicomProblem, Series, check_series, quiet_header_reading
from pipeline_lib.imaging.discovery import (DICOM_KIND, NIFTI_KIND, STAGED_INPUT, STAGED_MASKS, STAGED_SEQUENCES,
                                            STAGED_SIDECAR, dicom_files_in, is_nifti_name)
from pipeline_lib.imaging.nifti_reader import NiftiProblem, read_nifti

log = logging.getLogger(__name__)

STAGE = "ingest"
VOLUME_NAME = "volume.nii.gz"
METADATA_NAME = "metadata.json"
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


#: The subject's reference sequence (input.layout), for registration: it reads it from the ingest
#: folder rather than from discovery's table, so a cluster job needs no checkpoint output.
REFERENCE_NAME = "reference.json"


def write_reference(out_dir: Path, sequence: str) -> None:
    """Record the reference sequence ("" for a single-sequence input) in the ingest folder."""
    write_json(Path(out_dir) / REFERENCE_NAME, {"sequence": sequence or ""})


def read_reference(ingest_dir: Path) -> str:
    """The reference sequence :func:`write_reference` recorded ("" when none was)."""
    path = Path(ingest_dir) / REFERENCE_NAME
    return str(json.loads(path.read_text()).get("sequence", "")) if path.is_file() else ""


class IngestFailure(Exception):
    """A bad input: ``reason`` says what is wrong, without paths or header values."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def ingest_subject(source: Path, fmt: str, out_dir: Path, subject: str, *, kind: str = "",
                   settings: IngestSettings | Mapping[str, Any] | None = None) -> dict:
    """Validate and convert one subject's input into ``out_dir``; return the status.

    ``source`` is a NIfTI file or a folder holding one DICOM series (in the workflow,
    the subject's staging link); ``fmt`` is ``"nifti"`` or ``"dicom"``; ``kind``
    describes the input for the QC table. Bad data never raises: the returned (and
    written) status then says ``"failed"`` with the reason, and no data files are
    left in ``out_dir``. :func:`pipeline_lib.core.qc.enforce_on_bad_input` turns a
    failure into an InputError.
    """
    settings = read_settings(IngestSettings, settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    status = new_status(subject, STAGE, kind)
    try:
        image, metadata, warnings = _load_input(Path(source), fmt, settings)
        _write_volume(out_dir / VOLUME_NAME, image)
        write_json(out_dir / METADATA_NAME, metadata)
        status["warning"] = "; ".join(warnings)
    except IngestFailure as failure:
        # a rerun into the same folder must not leave an earlier success behind
        for name in (VOLUME_NAME, METADATA_NAME):
            (out_dir / name).unlink(missing_ok=True)
        status.update(status=FAILED, reason=failure.reason)
        log.warning("subject %s: ingest failed: %s", subject, failure.reason)
    return write_status(out_dir, status)


def ingest_job(staged: Path, fmt: str, out_dir: Path, subject: str, *, kind: str = "", reference: str = "",
               settings: IngestSettings | Mapping[str, Any] | None = None) -> dict:
    """A subject's ingest as the workflow runs it (its own job or its batch's): the staged input
    (the link private/staging/<pseudonym>/input, never the source's path), the other sequences and
    masks staged beside it, and the reference sequence's name; returns the status."""
    status = ingest_subject(Path(staged), fmt, Path(out_dir), subject, kind=kind, settings=settings)
    status = ingest_other_sequences(Path(staged).parent, Path(out_dir), status, settings=settings)
    write_reference(Path(out_dir), reference)
    return status


def ingest_other_sequences(staging: Path, out_dir: Path, status: dict, *,
                           settings: IngestSettings | Mapping[str, Any] | None = None) -> dict:
    """Ingest ``staging``'s ``sequences/<name>`` and ``masks/<name>`` into ``out_dir``'s folders of
    the same names; return ``status`` (the reference's) with a warning per failed sequence,
    written again. Nothing is ingested when the reference failed: the subject is out anyway."""
    staging, out_dir = Path(staging), Path(out_dir)
    for folder in (STAGED_SEQUENCES, STAGED_MASKS):
        shutil.rmtree(out_dir / folder, ignore_errors=True)  # a sequence that left leaves nothing
    if status["status"] != "ok":
        return status
    warnings = [status["warning"]] if status["warning"] else []
    for folder in (STAGED_SEQUENCES, STAGED_MASKS):
        for staged in sorted((staging / folder).iterdir()) if (staging / folder).is_dir() else []:
            fmt = "dicom" if staged.is_dir() else "nifti"
            kind = NIFTI_KIND if fmt == "nifti" else f"{DICOM_KIND} ({len(dicom_files_in(staged))} files)"
            one = ingest_subject(staged, fmt, out_dir / folder / staged.name, status["subject"], kind=kind,
                                 settings=settings)
            if one["status"] != "ok":
                warnings.append(f"{folder[:-1]} {staged.name} {one['status']}: {one['reason']}")
    status = {**status, "warning": "; ".join(warnings)}
    return write_status(out_dir, status)


# ------------------------------------------------------------------ loading


def _load_input(source: Path, fmt: str, settings: IngestSettings) -> tuple[nib.Nifti1Image, dict, list[str]]:
    """Return the clean RAS image, its metadata and warnings, or raise IngestFailure."""
    if fmt == "nifti":
        image, warnings = load_clean_volume(source, settings)
        technical = read_bids_sidecar(source)
    elif fmt == "dicom":
        image, technical, warnings = _convert_dicom(source, settings)
    else:
        raise IngestFailure(f"unknown input format '{fmt}' (expected 'nifti' or 'dicom')")
    metadata = {
        "manufacturer": None, "model": None, "field_strength": None, "sequence": None,
        **technical,
        "voxel_size_mm": [round(float(z), 6) for z in image.header.get_zooms()[:3]],
        "shape": [int(n) for n in image.shape],
        "source_format": fmt,
    }
    return image, metadata, warnings


def load_clean_volume(path: Path, settings: IngestSettings | Mapping[str, Any] | None = None
                      ) -> tuple[nib.Nifti1Image, list[str]]:
    """Validate a NIfTI file and return it as a fresh RAS image (the input's integer type where it
    holds every value exactly, else float32), with any warnings.

    The checks and their order are :func:`~pipeline_lib.imaging.nifti_reader.read_nifti`'s;
    a refusal raises IngestFailure with the reason.
    """
    settings = read_settings(IngestSettings, settings)
    path = Path(path)
    staged = path.name == STAGED_INPUT or path.parent.name in (STAGED_SEQUENCES, STAGED_MASKS)
    if not is_nifti_name(path.name) and not staged:
        raise IngestFailure("input file name does not end in .nii or .nii.gz")
    try:
        volume = read_nifti(path, max_voxels=settings.max_voxels, min_voxel_mm=settings.min_voxel_mm,
                            max_voxel_mm=settings.max_voxel_mm)
    except NiftiProblem as problem:
        raise IngestFailure(str(problem)) from None
    dtype = volume.integer_dtype if volume.integer_dtype is not None else np.float32
    return _fresh_ras_image(volume.data, volume.affine, dtype), volume.warnings


def _fresh_ras_image(data: np.ndarray, affine: np.ndarray, dtype: np.dtype | type = np.float32) -> nib.Nifti1Image:
    """Reorient to RAS and rebuild the image so no source header text survives; stored as
    ``dtype`` (an integer type only when every value is an integer it holds, see nifti_reader)."""
    canonical = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    ras_affine = canonical.affine
    image = nib.Nifti1Image(np.asarray(canonical.dataobj, dtype=np.float32).astype(dtype), ras_affine)
    image.set_data_dtype(dtype)
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


# ------------------------------------------------------------ technical fields


def read_bids_sidecar(nifti_path: Path) -> dict:
    """Return the whitelisted technical fields of the BIDS sidecar next to a NIfTI file.

    A missing or unreadable sidecar gives no fields: the image itself is fine. A staged
    input (``<staging>/<pseudonym>/input``) finds its sidecar staged beside it.
    """
    name = nifti_path.name
    if name == STAGED_INPUT:
        sidecar = nifti_path.with_name(STAGED_SIDECAR)
    else:
        stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else name[: -len(".nii")]
        sidecar = nifti_path.with_name(stem + ".json")
    try:
        fields = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(fields, dict):
        return {}
    return _technical_fields(fields, _BIDS_FIELDS)


def read_dicom_fields(dataset: pydicom.Dataset) -> dict:
    """Return the whitelisted technical fields of one DICOM header."""
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


def _convert_dicom(folder: Path, settings: IngestSettings) -> tuple[nib.Nifti1Image, dict, list[str]]:
    """Check one DICOM series folder from its headers, convert it with dcm2niix, validate the result."""
    if not folder.is_dir():
        raise IngestFailure("DICOM input does not exist (moved or deleted since discovery?)" if not folder.exists()
                            else "DICOM input must be a folder holding one series")
    try:
        files = dicom_files_in(folder)
        series = check_series(files, modalities=settings.modalities, max_voxels=settings.max_voxels)
    except DicomProblem as problem:
        raise IngestFailure(str(problem)) from None
    except OSError as exc:
        raise IngestFailure(f"DICOM folder cannot be listed ({os.strerror(exc.errno or 0)})") from None
    with quiet_header_reading():
        technical = read_dicom_fields(series.first)
    with tempfile.TemporaryDirectory(prefix="ingest-dcm-") as tmp:
        inputs, out = Path(tmp) / "in", Path(tmp) / "out"
        inputs.mkdir()
        out.mkdir()
        _stage_series(series, inputs)
        _run_dcm2niix(inputs, out, home=Path(tmp))
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
        if len(shape) < 3 or shape[2] != series.n_slices:
            raise IngestFailure(
                f"series has {series.n_slices} slice(s) in {len(files)} DICOM file(s) but dcm2niix "
                f"produced shape {tuple(shape)} (missing, duplicate or unreadable slice)")
        image, warnings = load_clean_volume(volumes[0], settings)
    return image, technical, warnings


def _stage_series(series: Series, folder: Path) -> None:
    """The checked files, and only those, as links in ``folder`` for dcm2niix (which reads a
    whole folder); deflated files are rewritten uncompressed, which dcm2niix cannot read."""
    for index, path in enumerate(series.files):
        target = folder / f"{index + 1:05d}.dcm"
        if series.inflate:
            try:
                dataset = pydicom.dcmread(path)
                dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                dataset.save_as(target, enforce_file_format=True)
            except Exception as exc:  # pydicom raises several types for broken files
                raise IngestFailure(f"DICOM file {index + 1} of {len(series.files)} cannot be inflated "
                                    f"({type(exc).__name__})") from None
        else:
            os.symlink(os.path.abspath(path), target)


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
