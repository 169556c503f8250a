"""Write a 3-D volume as a DICOM MR image series (used to build the demo cohort), or as one
enhanced (multi-frame) MR file, the form current Siemens XA and Philips exports take.

NIfTI affines map voxel indices to RAS+ world coordinates (x to the Right,
y Anterior, z Superior); DICOM patient coordinates are LPS+ (x to the Left,
y Posterior, z Superior). Every geometry tag written here is therefore the
NIfTI quantity with its first two world components negated.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import atomic_path, replace_directory

__all__ = ["write_dicom_series", "write_enhanced_mr"]

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_UINT16_MAX = 65535
# Fixed acquisition date/time: real-looking headers without making reruns differ.
_STUDY_DATE = "20240115"
_STUDY_TIME = "101500.000000"


def write_dicom_series(
    volume: np.ndarray,
    affine: np.ndarray,
    out_dir: Path,
    *,
    patient_name: str,
    patient_id: str,
    birth_date: str,
    manufacturer: str,
    model_name: str,
    field_strength: float,
    series_description: str,
    series_number: int = 1,
    uid_seed: str = "",
    institution_name: str = "",
) -> list[Path]:
    """Write ``volume`` (x, y, z in the RAS+ world of ``affine``) as an MR Image Storage series.

    One file per z slice (``IM-0001.dcm``, ...) is written into ``out_dir``; pixels are
    uint16 with RescaleSlope/RescaleIntercept mapping them back to the original values.
    UIDs are derived from ``uid_seed`` (or, when it is empty, from the volume, affine and
    patient fields), so writing the same input twice gives byte-identical files. The
    series is written into a temporary sibling folder that replaces ``out_dir`` at the
    end, so ``out_dir`` never holds half a series. Returns the file paths in slice order.
    """
    volume, affine = _check_inputs(volume, affine, out_dir)
    out_dir = Path(out_dir)
    seed = uid_seed or _content_digest(volume, affine, patient_id, series_description)
    slope, intercept = _rescale(volume)
    pixels = _quantise(volume, slope, intercept)
    base = _series_dataset(
        affine,
        volume.shape,
        seed=seed,
        patient_name=patient_name,
        patient_id=patient_id,
        birth_date=birth_date,
        manufacturer=manufacturer,
        model_name=model_name,
        field_strength=field_strength,
        series_description=series_description,
        series_number=series_number,
        institution_name=institution_name,
    )
    base.RescaleSlope = _ds(slope)
    base.RescaleIntercept = _ds(intercept)
    _set_window(base, volume)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    tmp_dir.chmod(0o755)  # mkdtemp's private 0700 would otherwise stick to out_dir
    try:
        names = []
        for k in range(volume.shape[2]):
            ds = _slice_dataset(base, affine, k, pixels[:, :, k], seed)
            name = f"IM-{k + 1:04d}.dcm"
            pydicom.dcmwrite(tmp_dir / name, ds, enforce_file_format=True)
            names.append(name)
        _replace_dir(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return [out_dir / name for name in names]


def write_enhanced_mr(
    volume: np.ndarray,
    affine: np.ndarray,
    path: Path,
    *,
    patient_name: str,
    patient_id: str,
    birth_date: str = "19700101",
    manufacturer: str = "SIEMENS",
    model_name: str = "MAGNETOM",
    field_strength: float = 3.0,
    series_description: str = "t1_mprage",
    series_number: int = 1,
    uid_seed: str = "",
) -> Path:
    """Write ``volume`` (x, y, z in the RAS+ world of ``affine``) as one Enhanced MR Image Storage
    file: one frame per z slice, the orientation, pixel measures and rescale in the shared
    functional groups, each frame's position in its own (the layout of a scanner's enhanced export).
    Pixels, UIDs and determinism are as in :func:`write_dicom_series`; written atomically."""
    volume, affine = _check_inputs(volume, affine, path)
    path = Path(path)
    seed = uid_seed or _content_digest(volume, affine, patient_id, series_description, "enhanced")
    slope, intercept = _rescale(volume)
    pixels = _quantise(volume, slope, intercept)
    ds = _series_dataset(affine, volume.shape, seed=seed, patient_name=patient_name, patient_id=patient_id,
                         birth_date=birth_date, manufacturer=manufacturer, model_name=model_name,
                         field_strength=field_strength, series_description=series_description,
                         series_number=series_number, institution_name="")
    _set_window(ds, volume)
    row_dir, col_dir, normal, sizes = _orientation(affine)
    # classic per-image geometry lives in functional groups in an enhanced file
    for keyword in ("ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
                    "RescaleType", "ScanningSequence", "SequenceVariant", "ScanOptions", "RepetitionTime",
                    "EchoTime", "InversionTime", "NumberOfAverages", "EchoNumbers", "FlipAngle"):
        delattr(ds, keyword)
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = _uid(seed, "instance", series_number)
    ds.InstanceNumber = "1"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.ContentQualification = "PRODUCT"
    ds.PulseSequenceName = "tfl3d1"
    ds.NumberOfFrames = str(volume.shape[2])
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    dimensions = _uid(seed, "dimensions")
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=dimensions)])
    ds.DimensionIndexSequence = Sequence([
        _item(DimensionOrganizationUID=dimensions, DimensionIndexPointer=0x00209056,
              FunctionalGroupPointer=0x00209111),  # StackID in FrameContentSequence
        _item(DimensionOrganizationUID=dimensions, DimensionIndexPointer=0x00209057,
              FunctionalGroupPointer=0x00209111),  # InStackPositionNumber
    ])
    ds.SharedFunctionalGroupsSequence = Sequence([_item(
        PixelMeasuresSequence=Sequence([_item(PixelSpacing=[_ds(sizes[1]), _ds(sizes[0])],
                                              SliceThickness=_ds(sizes[2]), SpacingBetweenSlices=_ds(sizes[2]))]),
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=[_ds(v) for v in (*row_dir, *col_dir)])]),
        PixelValueTransformationSequence=Sequence([_item(RescaleIntercept=_ds(intercept), RescaleSlope=_ds(slope),
                                                         RescaleType="US")]),
        MRTimingAndRelatedParametersSequence=Sequence([_item(RepetitionTime="2300", FlipAngle="9",
                                                             EchoTrainLength="1")]),
        MREchoSequence=Sequence([_item(EffectiveEchoTime=2.98)]),
    )])
    frames = []
    for k in range(volume.shape[2]):
        position = _RAS_TO_LPS @ (affine @ np.array([0.0, 0.0, float(k), 1.0]))[:3]
        frames.append(_item(
            FrameContentSequence=Sequence([_item(StackID="1", InStackPositionNumber=k + 1,
                                                 DimensionIndexValues=[1, k + 1])]),
            PlanePositionSequence=Sequence([_item(ImagePositionPatient=[_ds(v) for v in position])]),
        ))
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    # frame k is slice k, rows (y) by columns (x), as in write_dicom_series
    ds.PixelData = np.ascontiguousarray(pixels.transpose(2, 1, 0)).astype("<u2").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    with atomic_path(path) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    return path


def _item(**elements) -> Dataset:
    """A sequence item with ``elements`` (DICOM keywords)."""
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, value)
    return item


def _check_inputs(volume: np.ndarray, affine: np.ndarray, out_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Validate shape, finiteness and geometry; return float64 copies."""
    volume = np.asarray(volume)
    affine = np.asarray(affine, dtype=np.float64)
    if volume.ndim != 3:
        raise InputError(f"{out_dir}: volume must be 3-D, got shape {volume.shape}")
    if min(volume.shape) < 1 or max(volume.shape[:2]) > _UINT16_MAX:
        raise InputError(f"{out_dir}: unusable volume shape {volume.shape}")
    volume = volume.astype(np.float64)
    if not np.all(np.isfinite(volume)):
        raise InputError(f"{out_dir}: volume contains NaN or Inf")
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(f"{out_dir}: affine must be a finite 4x4 matrix, got {affine.shape}")
    columns = affine[:3, :3]
    norms = np.linalg.norm(columns, axis=0)
    if np.any(norms <= 0):
        raise InputError(f"{out_dir}: affine has a zero voxel size {norms}")
    # DICOM describes a slice stack by two in-plane directions plus positions along
    # their normal, so the slice axis must be perpendicular to the slice plane.
    unit = columns / norms
    if abs(unit[:, 0] @ unit[:, 1]) > 1e-4 or np.linalg.norm(np.cross(unit[:, 0], unit[:, 1])) < 1e-4:
        raise InputError(f"{out_dir}: affine's in-plane axes are not orthogonal (sheared)")
    if abs(abs(np.cross(unit[:, 0], unit[:, 1]) @ unit[:, 2]) - 1.0) > 1e-4:
        raise InputError(f"{out_dir}: affine's slice axis is not perpendicular to the slices (sheared)")
    return volume, affine


def _content_digest(volume: np.ndarray, affine: np.ndarray, *fields: str) -> str:
    """Hash the image and identifying fields: a stable seed when the caller gives none."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(volume).tobytes())
    digest.update(np.ascontiguousarray(affine).tobytes())
    for field in fields:
        digest.update(field.encode("utf-8") + b"\0")
    return digest.hexdigest()


def _uid(seed: str, *parts: object) -> str:
    """Deterministic UID (pydicom's prefix + hash of seed and parts)."""
    return str(generate_uid(entropy_srcs=[seed, *map(str, parts)]))


def _ds(value: float) -> str:
    """Format a number for a DS element (at most 16 characters), dropping float noise."""
    value = float(value)
    if abs(value) < 1e-9:
        return "0"
    for digits in range(10, 3, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot format {value!r} as a DICOM decimal string")


def _rescale(volume: np.ndarray) -> tuple[float, float]:
    """Choose slope and intercept so uint16 pixels span the value range.

    Integer-valued volumes that fit in 16 bits keep slope 1 (lossless); otherwise
    the full 0..65535 range is used. The slope is rounded to what the DS string can
    hold so that quantisation uses exactly the value a reader will apply.
    """
    low, high = float(volume.min()), float(volume.max())
    intercept = float(_ds(low))
    if np.all(volume == np.round(volume)) and high - intercept <= _UINT16_MAX:
        return 1.0, intercept
    span = high - intercept
    if span <= 0:
        return 1.0, intercept
    slope = float(_ds(span / _UINT16_MAX))
    # Rounding the slope down would push the maximum past 65535.
    while (high - intercept) / slope > _UINT16_MAX + 0.5:
        slope = float(_ds(slope * (1 + 1e-9)))
    return slope, intercept


def _quantise(volume: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Stored uint16 values whose rescaled value is nearest to the volume."""
    stored = np.rint((volume - intercept) / slope)
    return np.clip(stored, 0, _UINT16_MAX).astype(np.uint16)


def _set_window(ds: Dataset, volume: np.ndarray) -> None:
    """A display window over the 1st-99th percentile, as scanners provide."""
    low, high = np.percentile(volume, [1, 99])
    ds.WindowCenter = _ds((low + high) / 2)
    ds.WindowWidth = _ds(max(high - low, 1e-3))


def _orientation(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """LPS unit vectors along rows/columns/slices, and the voxel sizes.

    Pixel (row r, column c) of slice k holds voxel (x=c, y=r, z=k), so moving along a
    row follows the affine's first column and moving down a column its second.
    """
    lps = _RAS_TO_LPS @ affine[:3, :3]
    sizes = np.linalg.norm(lps, axis=0)
    unit = lps / sizes
    return unit[:, 0], unit[:, 1], unit[:, 2], sizes


def _series_dataset(affine: np.ndarray, shape: tuple[int, ...], *, seed: str, **fields) -> Dataset:
    """Attributes shared by all slices of the series."""
    row_dir, col_dir, _, sizes = _orientation(affine)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = _STUDY_DATE
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = _STUDY_TIME
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = fields["manufacturer"]
    if fields["institution_name"]:
        ds.InstitutionName = fields["institution_name"]
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "DEMO^BRAIN"
    ds.SeriesDescription = fields["series_description"]
    ds.ManufacturerModelName = fields["model_name"]
    ds.PatientName = fields["patient_name"]
    ds.PatientID = fields["patient_id"]
    ds.PatientBirthDate = fields["birth_date"]
    ds.PatientSex = "O"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = ["SP", "MP"]
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D"
    ds.SliceThickness = _ds(sizes[2])
    ds.RepetitionTime = "2300"
    ds.EchoTime = "2.98"
    ds.InversionTime = "900"
    ds.NumberOfAverages = "1"
    ds.MagneticFieldStrength = _ds(fields["field_strength"])
    ds.SpacingBetweenSlices = _ds(sizes[2])
    ds.EchoNumbers = "1"
    ds.FlipAngle = "9"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = _uid(seed, "study")
    ds.SeriesInstanceUID = _uid(seed, "series", fields["series_number"])
    ds.StudyID = "1"
    ds.SeriesNumber = str(int(fields["series_number"]))
    ds.AcquisitionNumber = "1"
    ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
    ds.FrameOfReferenceUID = _uid(seed, "frame")
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = int(shape[1])
    ds.Columns = int(shape[0])
    # PixelSpacing is (distance between rows, distance between columns).
    ds.PixelSpacing = [_ds(sizes[1]), _ds(sizes[0])]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleType = "US"
    return ds


def _slice_dataset(base: Dataset, affine: np.ndarray, k: int, plane: np.ndarray, seed: str) -> Dataset:
    """One slice: copy of the series attributes plus position, number and pixels."""
    _, _, normal, _ = _orientation(affine)
    position = _RAS_TO_LPS @ (affine @ np.array([0.0, 0.0, float(k), 1.0]))[:3]
    ds = Dataset()
    ds.update(base)
    sop_uid = _uid(seed, "instance", base.SeriesNumber, k)
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = str(k + 1)
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.SliceLocation = _ds(position @ normal)
    # DICOM pixel data is row-major (rows, columns) = (y, x).
    ds.PixelData = np.ascontiguousarray(plane.T).astype("<u2").tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _replace_dir(new: Path, target: Path) -> None:
    """Move the finished folder ``new`` onto ``target``, replacing an older series there."""
    def earlier_series(folder: Path) -> str | None:
        if not folder.is_dir():
            return "exists and is not a folder"
        stale = [p for p in folder.iterdir() if p.suffix != ".dcm"]
        return f"holds files other than a DICOM series ({stale[0].name})" if stale else None

    replace_directory(new, target, ours=earlier_series)

