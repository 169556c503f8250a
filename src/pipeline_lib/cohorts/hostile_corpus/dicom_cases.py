"""Hostile corpus, DICOM cases: transfer syntaxes, what is not an MR volume (CT, localizers,
screenshots, derived images), multi-frame files, missing or contradictory geometry, broken files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
from pydicom import uid as uids

from pipeline_lib.cohorts.hostile_corpus.building import (ACCEPT, PHI_MARK, REFUSE, Case, compress_dicom,
                                                          edit_dicom, phantom, voxel_affine, write_series)
from pipeline_lib.imaging.dicom import write_enhanced_mr

def _dc_good(d: Path) -> str:
    write_series(d / "series")
    return "series"


def _dc_oblique(d: Path) -> str:
    angle = np.radians(17)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = voxel_affine((1.0, 1.0, 2.0))
    affine[:3, :3] = rotation @ affine[:3, :3]
    write_series(d / "series", affine=affine)
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
        edit_dicom(write_series(d / "series"), change, which)
        return "series"
    return build


def _dc_screenshot(d: Path) -> str:
    def rgb(ds: pydicom.Dataset, index: int) -> None:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelData = np.full((ds.Rows, ds.Columns, 3), 128, np.uint8).tobytes()
    edit_dicom(write_series(d / "series"), rgb)
    return "series"


def _dc_multiframe(d: Path) -> str:
    files = write_series(d / "frames")
    datasets = [pydicom.dcmread(p) for p in files]
    first = datasets[0]
    first.NumberOfFrames = len(datasets)
    first.PixelData = b"".join(ds.PixelData for ds in datasets)
    (d / "series").mkdir()
    first.save_as(d / "series" / "MF0001.dcm", enforce_file_format=True)
    shutil.rmtree(d / "frames")
    return "series"


def _dc_enhanced(d: Path, change: Callable[[pydicom.Dataset], None] | None = None) -> str:
    path = write_enhanced_mr(phantom((32, 32, 8)).astype(np.float64), voxel_affine((1.0, 1.0, 2.0)),
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
        compress_dicom(write_series(d / "series"), syntax)
        return "series"
    return build


def _dc_deflated(d: Path) -> str:
    edit_dicom(write_series(d / "series"), lambda ds, i: setattr(ds.file_meta, "TransferSyntaxUID",
                                                         uids.DeflatedExplicitVRLittleEndian))
    return "series"


def _dc_implicit(d: Path) -> str:
    def implicit(ds: pydicom.Dataset, index: int) -> None:
        ds.file_meta.TransferSyntaxUID = uids.ImplicitVRLittleEndian
    edit_dicom(write_series(d / "series"), implicit)
    return "series"


def _dc_unsupported_syntax(d: Path) -> str:
    for path in write_series(d / "series"):
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
    edit_dicom(write_series(d / "series"), huge)
    return "series"


def _dc_orientation_mixed(d: Path) -> str:
    def tilt(ds: pydicom.Dataset, index: int) -> None:
        ds.ImageOrientationPatient = [-1, 0, 0, 0, -0.9, -0.43588989]
    edit_dicom(write_series(d / "series"), tilt, which={5})
    return "series"


def _dc_gap(d: Path) -> str:
    files = write_series(d / "series")
    files[4].unlink()
    return "series"


def _dc_duplicate_position(d: Path) -> str:
    files = write_series(d / "series")
    position = pydicom.dcmread(files[2]).ImagePositionPatient
    edit_dicom(files, _set(ImagePositionPatient=position), which={3})
    return "series"


def _dc_gantry_tilt(d: Path) -> str:
    def drift(ds: pydicom.Dataset, index: int) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.6 * index, z]
    edit_dicom(write_series(d / "series"), drift)
    return "series"


def _dc_two_series(d: Path) -> str:
    write_series(d / "a", uid_seed="a", series_number=1)
    write_series(d / "b", uid_seed="b", series_number=2)
    (d / "series").mkdir()
    for folder in ("a", "b"):
        for path in sorted((d / folder).iterdir()):
            path.rename(d / "series" / f"{folder}-{path.name}")
        (d / folder).rmdir()
    return "series"


def _dc_truncated(d: Path) -> str:
    files = write_series(d / "series")
    raw = files[3].read_bytes()
    files[3].write_bytes(raw[:-300])
    return "series"


def _dc_no_pixels(d: Path) -> str:
    edit_dicom(write_series(d / "series"), _delete("PixelData"), which={0})
    return "series"


def _dc_garbage_file(d: Path) -> str:
    files = write_series(d / "series")
    files[1].write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(3).bytes(200))
    return "series"


def _dc_single_slice(d: Path) -> str:
    files = write_series(d / "series")
    for path in files[1:]:
        path.unlink()
    return "series"


def _dc_header_text(d: Path) -> str:
    def phi(ds: pydicom.Dataset, index: int) -> None:
        ds.ProtocolName = ds.StudyDescription = ds.InstitutionName = ds.OperatorsName = PHI_MARK
        ds.ImageComments = PHI_MARK
    edit_dicom(write_series(d / "series"), phi)
    return "series"


def dicom_cases() -> list[Case]:
    dc = "DICOM"
    return [
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
