"""Check a DICOM series from its headers before any converter reads its pixels.

dcm2niix converts a great deal without complaint: a CT, a localizer, a
screenshot, a series whose files lack geometry (it then invents a grid), a
sheared stack. So every file's header is read here first (pixel data deferred,
never loaded) and the series is refused, with a reason a user can act on, when:

* a file is empty, unreadable, holds no pixel data, or its pixel data is cut short;
* the files belong to several series;
* the modality is not in ``ingest.modalities`` (default MR);
* it is a secondary capture or colour image (a screenshot), a localizer/scout, or a
  derived image (a reformat, map or projection computed from other images);
* a multi-frame file is not enhanced MR (Enhanced or Legacy Converted Enhanced MR Image
  Storage, what current Siemens XA and Philips exports write), or its per-frame functional
  groups do not describe each of its frames, or the folder holds more than one such file;
* its transfer syntax is one neither dcm2niix (which decodes JPEG, JPEG-LS,
  JPEG 2000 and RLE in its PyPI build) nor pydicom (deflate) can decode;
* it declares more voxels than ``ingest.max_voxels``;
* ImagePositionPatient, ImageOrientationPatient or PixelSpacing is missing, not
  finite, or not a valid geometry (zero spacing, orientation vectors that are not
  perpendicular unit vectors);
* slices differ in orientation, lie at the same position, are unevenly spaced
  (a missing slice) or drift sideways (gantry tilt, shear);
* fewer than two slices.

An enhanced file's frames are its slices: each frame's geometry (its plane position, and the
orientation and pixel spacing of its own or the shared functional groups) goes through the same
checks as a classic file's, and dcm2niix converts it.

Header values are read, never returned, except the whitelisted technical fields
the caller asks for. Reasons name files by their rank ("file 3 of 24"), not by name.
"""

from __future__ import annotations

import math
import os
import re
import zlib
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom import uid as uids
from pydicom.multival import MultiValue

#: Transfer syntaxes dcm2niix decodes itself (its PyPI wheel is built with OpenJPEG and CharLS).
CONVERTER_SYNTAXES = frozenset({
    uids.ImplicitVRLittleEndian, uids.ExplicitVRLittleEndian, uids.ExplicitVRBigEndian,
    uids.JPEGBaseline8Bit, uids.JPEGExtended12Bit, uids.JPEGLossless, uids.JPEGLosslessSV1,
    uids.JPEGLSLossless, uids.JPEGLSNearLossless, uids.JPEG2000Lossless, uids.JPEG2000, uids.RLELossless,
})
#: Syntaxes pydicom decodes without plugins; such files are rewritten uncompressed for dcm2niix.
INFLATED_SYNTAXES = frozenset({uids.DeflatedExplicitVRLittleEndian})
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: Multi-frame SOP classes whose frames dcm2niix stacks into a volume (grey-scale enhanced MR).
ENHANCED_MR = frozenset({uids.EnhancedMRImageStorage, uids.LegacyConvertedEnhancedMRImageStorage})
LOCALIZER_WORDS = ("localizer", "localiser", "scout", "survey", "3-plane loc", "3 plane loc")
DEFER_BYTES = 1024
#: Tolerances: orientation vectors (unit, perpendicular), orientation agreement, sideways drift.
UNIT_TOLERANCE, ORIENTATION_TOLERANCE, DRIFT_TOLERANCE = 1e-3, 1e-3, 1e-2


class DicomProblem(Exception):
    """Why a DICOM series is refused; the message names no path and no header text."""


@dataclass
class Series:
    files: list[Path]          # in name order
    n_slices: int              # slices of classic files, frames of an enhanced file
    first: pydicom.Dataset     # header of the first file, pixels not loaded
    inflate: bool              # files must be rewritten uncompressed before conversion


@contextmanager
def quiet_header_reading():
    """pydicom's value checks off while headers are read: its warnings quote the offending value
    (a name in a UID or an over-long field), and warnings reach the job's log."""
    previous = pydicom.config.settings.reading_validation_mode
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        pydicom.config.settings.reading_validation_mode = previous


def check_series(files: list[Path], *, modalities: tuple[str, ...], max_voxels: int) -> Series:
    """Validate a series from its headers; return what conversion needs or raise DicomProblem."""
    with quiet_header_reading():
        return _checked_series(files, modalities=modalities, max_voxels=max_voxels)


def _checked_series(files: list[Path], *, modalities: tuple[str, ...], max_voxels: int) -> Series:
    if not files:
        raise DicomProblem("folder holds no DICOM files")
    # a deflated file may inflate to anything: each file's data set may take 4 bytes per allowed voxel
    limit = 4 * max_voxels + (1 << 24)
    datasets = [_read_header(path, index, len(files), limit) for index, path in enumerate(files)]
    first = datasets[0]
    if len({ds.get("SeriesInstanceUID") for ds in datasets}) > 1:
        count = len({ds.get("SeriesInstanceUID") for ds in datasets})
        raise DicomProblem(f"folder holds {count} DICOM series; expected exactly one (export one series per folder)")
    _check_content(datasets, modalities)
    syntaxes = {str(ds.file_meta.get("TransferSyntaxUID", uids.ImplicitVRLittleEndian)) for ds in datasets}
    unsupported = sorted(s for s in syntaxes if s not in CONVERTER_SYNTAXES | INFLATED_SYNTAXES)
    if unsupported:
        names = ", ".join(f"{uids.UID(s).name} ({s})" for s in unsupported)
        raise DicomProblem(f"transfer syntax {names} cannot be decoded here (dcm2niix decodes uncompressed, JPEG, "
                           "JPEG-LS, JPEG 2000 and RLE; pydicom deflate): decompress the series (e.g. "
                           "gdcmconv --raw) and export it again")
    voxels = sum(int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) * _frame_count(ds) for ds in datasets)
    if voxels > max_voxels:
        raise DicomProblem(f"series declares {voxels:,} voxels, more than ingest.max_voxels = {max_voxels:,}; "
                           "no pixel data was read")
    slices = _slice_geometries(datasets)
    if len(slices) < 2:
        raise DicomProblem("series has a single slice; a single slice is not a volume")
    _check_geometry(slices)
    return Series(files=list(files), n_slices=len(slices), first=first,
                  inflate=bool(syntaxes & INFLATED_SYNTAXES))


def _frame_count(ds: pydicom.Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _is_multi_frame(ds: pydicom.Dataset) -> bool:
    return _frame_count(ds) > 1 or "PerFrameFunctionalGroupsSequence" in ds


def _slice_geometries(datasets: list[pydicom.Dataset]) -> list[tuple[str, pydicom.Dataset]]:
    """(where, data set holding the slice's geometry keywords): a classic file each, an enhanced
    file one per frame, built from the frame's own functional groups or else the shared ones."""
    count = len(datasets)
    multi = [index for index, ds in enumerate(datasets) if _is_multi_frame(ds)]
    if not multi:
        return [(f"DICOM file {index + 1} of {count}", ds) for index, ds in enumerate(datasets)]
    if len(datasets) > 1:
        raise DicomProblem(f"folder holds {count} DICOM files, {len(multi)} of them multi-frame: export one "
                           "enhanced (multi-frame) file per folder, or the series as classic single-frame files")
    ds, where = datasets[0], "DICOM file 1 of 1 (multi-frame)"
    frames = _frame_count(ds)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None:
        raise DicomProblem(f"{where} lacks the per-frame functional groups that give each frame's position: "
                           "not an enhanced MR file (export the series as classic single-frame files)")
    if len(per_frame) != frames:
        raise DicomProblem(f"{where} declares {frames} frames (NumberOfFrames) but its per-frame functional "
                           f"groups describe {len(per_frame)}: a broken or cut-short export")
    shared_groups = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_groups[0] if shared_groups else pydicom.Dataset()
    slices = []
    for index, groups in enumerate(per_frame):
        frame = pydicom.Dataset()
        for group, keywords in (("PlanePositionSequence", ("ImagePositionPatient",)),
                                ("PlaneOrientationSequence", ("ImageOrientationPatient",)),
                                ("PixelMeasuresSequence", ("PixelSpacing",))):
            items = groups.get(group) or shared.get(group)
            for keyword in keywords:
                if items and keyword in items[0]:
                    setattr(frame, keyword, items[0][keyword].value)
        slices.append((f"{where}, frame {index + 1} of {frames}", frame))
    return slices


def _read_header(path: Path, index: int, count: int, inflate_limit: int) -> pydicom.Dataset:
    where = f"DICOM file {index + 1} of {count} (in name order)"
    try:
        size = os.stat(path).st_size
        regular = stat.S_ISREG(os.stat(path).st_mode)
    except OSError as exc:
        raise DicomProblem(f"{where} cannot be examined ({os.strerror(exc.errno or 0)})") from None
    if not regular:
        raise DicomProblem(f"{where} is not a regular file")
    if size == 0:
        raise DicomProblem(f"{where} is empty (0 bytes)")
    try:
        deflated = _inflated_size(path, inflate_limit, where)
        dataset = pydicom.dcmread(path, defer_size=DEFER_BYTES)
    except DicomProblem:
        raise
    except PermissionError:
        raise DicomProblem(f"{where} cannot be read (permission denied)") from None
    except Exception as exc:  # pydicom raises several types for broken files
        raise DicomProblem(f"{where} is unreadable ({type(exc).__name__})") from None
    pixels = dataset.get_item("PixelData", keep_deferred=True) if "PixelData" in dataset else None
    if pixels is None:
        raise DicomProblem(f"{where} holds no pixel data (a report, structured document or presentation state?)")
    if getattr(pixels, "length", None) not in (None, 0xFFFFFFFF):  # undefined length: encapsulated (compressed)
        expected = (int(dataset.get("Rows") or 0) * int(dataset.get("Columns") or 0)
                    * int(dataset.get("SamplesPerPixel") or 1) * int(dataset.get("BitsAllocated") or 0)
                    // 8 * _frame_count(dataset))
        # on disk a deflated file is shorter than its data: only the declared length counts there
        present = int(pixels.length) if deflated else min(int(pixels.length), max(0, size - int(pixels.value_tell or 0)))
        if present < expected:
            raise DicomProblem(f"{where} is truncated: {present} of {expected} pixel-data bytes present")
    return dataset


def _inflated_size(path: Path, limit: int, where: str) -> int | None:
    """For a deflated file, the size its data set inflates to, counted while streaming and
    refused past ``limit`` (pydicom would inflate it whole in memory); None for other files."""
    meta = pydicom.filereader.read_file_meta_info(path)
    if meta.get("TransferSyntaxUID") != uids.DeflatedExplicitVRLittleEndian:
        return None
    length = meta.get("FileMetaInformationGroupLength")
    if length is None:
        raise DicomProblem(f"{where} is deflated but lacks its file meta group length")
    inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    with open(path, "rb") as handle:
        handle.seek(128 + 4 + 12 + int(length))  # preamble, DICM, group-length element, meta group
        while chunk := handle.read(1 << 20):
            total += len(inflater.decompress(chunk, limit + 1 - total))
            if total > limit or inflater.unconsumed_tail:
                raise DicomProblem(f"{where} is deflated and inflates beyond {limit:,} bytes: a malformed or "
                                   "malicious file; inflating stopped")
    return total


def _check_content(datasets: list[pydicom.Dataset], modalities: tuple[str, ...]) -> None:
    """Modality, SOP class, image type, colour and frames: is this an MR acquisition at all?"""
    first = datasets[0]
    found = sorted({str(ds.get("Modality") or "").strip() or "(none)" for ds in datasets})
    wrong = [m for m in found if m not in modalities]
    if wrong:
        raise DicomProblem(f"modality {', '.join(wrong)} is not accepted (ingest.modalities: "
                           f"{', '.join(modalities)})")
    sop_classes = {str(ds.get("SOPClassUID") or "") for ds in datasets}
    if any(s.startswith(SECONDARY_CAPTURE) for s in sop_classes):
        raise DicomProblem("secondary capture (a screenshot or scanned image, not an acquisition)")
    for ds in datasets:
        if int(ds.get("SamplesPerPixel") or 1) != 1 or not str(ds.get("PhotometricInterpretation") or
                                                                "MONOCHROME2").startswith("MONOCHROME"):
            raise DicomProblem(f"colour image ({ds.get('PhotometricInterpretation')}): a screenshot or rendering, "
                               "not a grey-scale acquisition")
    image_type = [str(v).upper() for v in (first.get("ImageType") or [])]
    described = " ".join(str(first.get(k) or "") for k in ("SeriesDescription", "ProtocolName")).lower()
    if "LOCALIZER" in image_type or any(word in described for word in LOCALIZER_WORDS):
        raise DicomProblem("localizer (scout) series: a few low-resolution planning slices, not a volume")
    if image_type and image_type[0] == "DERIVED":
        raise DicomProblem("derived image (ImageType DERIVED: a reformat, map or projection computed from other "
                           "images); ingest the ORIGINAL acquisition")
    classes = {str(ds.get("SOPClassUID") or "") for ds in datasets if _is_multi_frame(ds)}
    if classes - ENHANCED_MR:
        # a UID's digits only: the element could hold any text
        names = ", ".join(sorted(uids.UID(c).name if re.fullmatch(r"[0-9.]{1,64}", c) else "(not a UID)"
                                 for c in classes - ENHANCED_MR))
        raise DicomProblem(f"multi-frame file of SOP class {names}: only enhanced MR multi-frame files are "
                           "converted; export the series as classic single-frame files")


def _vector(ds: pydicom.Dataset, keyword: str, length: int, where: str) -> np.ndarray:
    value = ds.get(keyword)
    values = [] if value is None or value == "" else list(value) if isinstance(value, (list, tuple, MultiValue)) \
        else [value]
    if len(values) != length:
        raise DicomProblem(f"{where} lacks {keyword} (or it has the wrong number of values): the slice "
                           "geometry is unknown")
    try:
        vector = np.asarray([float(v) for v in values])
    except (TypeError, ValueError):
        raise DicomProblem(f"{where}: {keyword} is not numeric") from None
    if not np.all(np.isfinite(vector)):
        raise DicomProblem(f"{where}: {keyword} is not finite")
    return vector


def _check_geometry(slices: list[tuple[str, pydicom.Dataset]]) -> None:
    """Each slice's geometry (``where`` names it in reasons), then the stack's."""
    orientations, positions = [], []
    for where, ds in slices:
        orientation = _vector(ds, "ImageOrientationPatient", 6, where)
        spacing = _vector(ds, "PixelSpacing", 2, where)
        positions.append(_vector(ds, "ImagePositionPatient", 3, where))
        if np.any(spacing <= 0):
            raise DicomProblem(f"{where}: PixelSpacing {tuple(spacing)} is zero or negative")
        row, col = orientation[:3], orientation[3:]
        if (abs(np.linalg.norm(row) - 1) > UNIT_TOLERANCE or abs(np.linalg.norm(col) - 1) > UNIT_TOLERANCE
                or abs(float(row @ col)) > UNIT_TOLERANCE):
            raise DicomProblem(f"{where}: ImageOrientationPatient is not two perpendicular unit vectors "
                               "(sheared or corrupt geometry)")
        orientations.append(orientation)
    if np.max(np.abs(np.asarray(orientations) - orientations[0])) > ORIENTATION_TOLERANCE:
        raise DicomProblem("slices have different orientations (a mixed or reformatted series)")
    normal = np.cross(orientations[0][:3], orientations[0][3:])
    positions = np.asarray(positions)
    along = positions @ normal
    order = np.argsort(along)
    steps = np.diff(along[order])
    typical = float(np.median(steps))
    if typical <= 1e-3 or np.any(steps <= 1e-3):
        what = "frames of the multi-frame file" if "frame" in slices[0][0] else "DICOM files"
        raise DicomProblem(f"two {what} lie at the same slice position (duplicate slice, mixed series, or several "
                           "volumes: echoes, time points or diffusion directions)")
    irregular = np.flatnonzero(np.abs(steps - typical) > max(0.01 * typical, 1e-3))
    if irregular.size:
        k = int(irregular[0])
        raise DicomProblem(f"slice positions are unevenly spaced: {steps[k]:.3g} mm between slices {k + 1} and "
                           f"{k + 2} (typical {typical:.3g} mm); a slice is probably missing")
    sideways = positions[order] - np.outer(along[order], normal)
    drift = float(np.max(np.linalg.norm(sideways - sideways[0], axis=1)))
    extent = float(along[order][-1] - along[order][0])
    if drift > DRIFT_TOLERANCE * extent and drift > 1e-2:
        angle = math.degrees(math.atan2(drift, extent))
        raise DicomProblem(f"the slice stack is sheared: slice positions drift {drift:.3g} mm sideways over "
                           f"{extent:.3g} mm ({angle:.2g} degrees, e.g. gantry tilt); registration needs an "
                           "orthogonal grid: resample it or export an orthogonal reconstruction")
