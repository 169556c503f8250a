"""Read a NIfTI file that may be hostile: every check before the voxels are read.

A header can declare terabytes, a 1 MiB gzip stream can inflate to gigabytes, and
qform and sform can disagree by a mirror image. So, in order:

1. the file is a regular, non-empty file (by ``stat``; nothing else is opened);
2. the header alone is read (through gzip when the file starts with its magic,
   whatever its name): dimensions, data type, offset;
3. the size it declares is checked against ``max_voxels`` and, uncompressed,
   against the file's size; compressed, the stream is inflated in chunks with the
   declared size as a hard limit (a stream that goes on is refused, one that ends
   early is truncated);
4. geometry: voxel sizes in the header (zero, negative, non-finite), which of
   qform/sform says where the anatomy is and whether they agree, shear;
5. the voxels, converted to float32 one slice at a time (finite, within float32,
   not constant), noting whether the input's own integer type holds every scaled value
   exactly (so a copy can be stored in it instead of float32: half or a quarter of the bytes).

Failures raise :class:`NiftiProblem` with a reason a user can act on; no path is
ever part of it. Header text (descrip, aux_file, intent_name, extensions) is never
read into the result: :func:`read_nifti` returns voxels and an affine only.
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
FLOAT32_MAX = float(np.finfo(np.float32).max)
CHUNK = 1 << 20
#: Bytes a compressed stream may hold beyond the declared data (some writers pad).
TRAILING_SLACK = 1 << 16
#: |cosine| between two voxel axes above which the grid counts as sheared (0.06 degrees).
SHEAR_TOLERANCE = 1e-3
#: qform and sform further apart than this (mm, over the image's corners) earn a warning.
QFORM_SFORM_WARN_MM = 0.01


class NiftiProblem(Exception):
    """Why a NIfTI file is refused; the message names no path."""


#: Integers beyond this are not all exact in float32; a volume holding one stays float32, so
#: its stored copy reads back as the very float32 values every later step computes with.
FLOAT32_EXACT_INTEGER = 2 ** 24


@dataclass
class NiftiVolume:
    data: np.ndarray        # float32, 3-D, voxel order as stored
    affine: np.ndarray      # voxel -> RAS+ world (mm), from the sform or qform
    warnings: list[str]
    #: the input's own integer type (native byte order) when it holds every scaled voxel value
    #: exactly, else None (a float input, a non-integer scaling result, or values out of its range)
    integer_dtype: np.dtype | None = None


def read_nifti(path: Path, *, max_voxels: int, min_voxel_mm: float, max_voxel_mm: float) -> NiftiVolume:
    """Validate ``path`` and return its voxels and affine, or raise NiftiProblem."""
    size = _regular_file_size(Path(path))
    with open(path, "rb") as handle:
        compressed = handle.read(2) == GZIP_MAGIC
    warnings: list[str] = []
    if compressed:
        header, buffer = _inflate(Path(path), max_voxels, warnings)
        raw = _raw_array(header, buffer=buffer)
    else:
        header = _parse_header(_read_head(Path(path)))
        shape, dtype, offset, nbytes = _declared(header, max_voxels)
        if size < offset + nbytes:
            raise NiftiProblem(f"file is truncated: the header declares {nbytes} bytes of voxel data from "
                               f"byte {offset}, but the file holds {size} bytes")
        raw = _raw_array(header, path=Path(path))
    affine = _check_geometry(header, raw.shape, min_voxel_mm, max_voxel_mm, warnings)
    data, integral = _float32_voxels(raw, header)
    return NiftiVolume(data, affine, warnings, _integer_dtype(raw.dtype, data) if integral else None)


# ------------------------------------------------------------------ bytes


def _regular_file_size(path: Path) -> int:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise NiftiProblem("input does not exist (moved or deleted since discovery?)") from None
    except OSError as exc:
        raise NiftiProblem(f"input cannot be examined ({os.strerror(exc.errno or 0)})") from None
    if not stat.S_ISREG(info.st_mode):
        raise NiftiProblem("input is not a regular file")
    if info.st_size == 0:
        raise NiftiProblem("file is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise NiftiProblem("file cannot be read (permission denied)")
    return info.st_size


def _read_head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(540)
    except OSError as exc:
        raise NiftiProblem(f"file cannot be read ({os.strerror(exc.errno or 0)})") from None


def _parse_header(head: bytes) -> nib.Nifti1Header:
    """NIfTI-1 or NIfTI-2 header from the first bytes, by ``sizeof_hdr`` in either byte order."""
    if len(head) < 348:
        raise NiftiProblem(f"not a NIfTI file: {len(head)} bytes, shorter than a NIfTI header (348)")
    # the byte order is the one in which sizeof_hdr reads 348 or 540 (nibabel would guess it
    # from dim[0] instead, and read a header with a bad dim[0] byte-swapped)
    found = {(int.from_bytes(head[:4], order), marker) for order, marker in (("little", "<"), ("big", ">"))}
    matches = [(size, marker) for size, marker in found if size in (348, 540)]
    if not matches:
        raise NiftiProblem("not a NIfTI file: the header size field is neither 348 (NIfTI-1) nor 540 (NIfTI-2)")
    size, endianness = matches[0]
    klass = nib.Nifti2Header if size == 540 else nib.Nifti1Header
    if len(head) < size:
        raise NiftiProblem(f"not a NIfTI file: {len(head)} bytes, shorter than its header ({size})")
    try:
        header = klass(binaryblock=head[:size], endianness=endianness, check=False)
    except Exception as exc:  # nibabel raises several types on garbage
        raise NiftiProblem(f"NIfTI header cannot be parsed ({type(exc).__name__})") from None
    magic = bytes(header["magic"]).rstrip(b"\0")
    if magic not in (b"n+1", b"n+2"):
        raise NiftiProblem("not a single-file NIfTI image (magic is not n+1 or n+2; a .hdr/.img pair "
                           "or ANALYZE file): convert it to .nii or .nii.gz")
    return header


def _declared(header: nib.Nifti1Header, max_voxels: int) -> tuple[tuple[int, ...], np.dtype, int, int]:
    """Shape, data type, data offset and byte count the header declares; checked against the cap."""
    dim = [int(d) for d in header["dim"]]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise NiftiProblem(f"header declares {ndim} dimensions (dim[0] must be 1 to 7)")
    shape = tuple(dim[1:ndim + 1])
    if any(n < 1 for n in shape):
        raise NiftiProblem(f"header declares a dimension of size < 1 (shape {shape})")
    voxels = math.prod(shape)
    if voxels > max_voxels:
        raise NiftiProblem(f"header declares {voxels:,} voxels (shape {shape}), more than ingest.max_voxels "
                           f"= {max_voxels:,}; nothing was read")
    try:
        dtype = header.get_data_dtype()
    except Exception:
        raise NiftiProblem(f"unknown voxel data type code {int(header['datatype'])}") from None
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise NiftiProblem(f"unsupported voxel data type {dtype} (need real numbers, not complex or RGB)")
    offset = int(header["vox_offset"])
    if offset < int(header["sizeof_hdr"]):
        raise NiftiProblem(f"voxel data offset {offset} lies inside the header")
    return shape, dtype, offset, voxels * dtype.itemsize


def _inflate(path: Path, max_voxels: int, warnings: list[str]) -> tuple[nib.Nifti1Header, bytearray]:
    """Inflate a gzip-compressed NIfTI with the declared size as a hard limit."""
    try:
        with gzip.open(path, "rb") as stream:
            head = stream.read(540)
            header = _parse_header(head)
            _, _, offset, nbytes = _declared(header, max_voxels)
            limit = offset + nbytes
            buffer = bytearray(head[:limit])
            while len(buffer) < limit:
                chunk = stream.read(min(CHUNK, limit - len(buffer)))
                if not chunk:
                    raise NiftiProblem(f"file is truncated: the compressed data holds {len(buffer)} of the "
                                       f"{limit} bytes the header declares")
                buffer += chunk
            extra = len(stream.read(TRAILING_SLACK + 1))
    except NiftiProblem:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        # BadGzipFile is an OSError; a cut stream raises EOFError
        raise NiftiProblem(f"compressed data is corrupt or cut short ({type(exc).__name__})") from None
    if extra > TRAILING_SLACK:
        raise NiftiProblem(f"compressed data inflates beyond the {limit} bytes the header declares (more than "
                           f"{TRAILING_SLACK} extra bytes): a malformed or malicious file; inflating stopped")
    if extra:
        warnings.append(f"{extra} bytes after the voxel data were ignored")
    return header, buffer


def _raw_array(header: nib.Nifti1Header, *, buffer: bytearray | None = None, path: Path | None = None) -> np.ndarray:
    """The voxels as stored (no copy: a view of the inflated buffer or a read-only memory map)."""
    shape, dtype, offset, _ = _declared(header, np.iinfo(np.int64).max)
    if buffer is not None:
        flat = np.frombuffer(buffer, dtype=dtype, count=math.prod(shape), offset=offset)
        return flat.reshape(shape, order="F")
    try:
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F")
    except (OSError, ValueError) as exc:
        raise NiftiProblem(f"voxel data cannot be mapped ({type(exc).__name__})") from None


# ------------------------------------------------------------------ geometry


def _check_geometry(header: nib.Nifti1Header, shape: tuple[int, ...], min_voxel_mm: float,
                    max_voxel_mm: float, warnings: list[str]) -> np.ndarray:
    """The affine to use, after checking voxel sizes, qform/sform and shear."""
    _check_3d(shape)
    zooms = [float(z) for z in header["pixdim"][1:4]]
    if not all(math.isfinite(z) for z in zooms):
        raise NiftiProblem(f"voxel size {tuple(zooms)} mm in the header is not finite")
    if any(z == 0 for z in zooms):
        raise NiftiProblem(f"voxel size {tuple(zooms)} mm in the header is zero")
    if any(z < 0 for z in zooms):
        raise NiftiProblem(f"voxel size {tuple(zooms)} mm in the header is negative (pixdim[1..3] must be "
                           "positive; a flip belongs in the qform/sform): fix the header or re-export")
    affine = _chosen_affine(header, shape, warnings)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing <= 0) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise NiftiProblem("affine (orientation matrix) is singular: a voxel size is zero")
    _check_shear(affine)
    for label, sizes in (("header", zooms), ("affine", spacing)):
        if min(sizes) < min_voxel_mm or max(sizes) > max_voxel_mm:
            pretty = tuple(round(float(s), 4) for s in sizes)
            raise NiftiProblem(f"voxel size {pretty} mm ({label}) outside the allowed range "
                               f"[{min_voxel_mm}, {max_voxel_mm}] mm (ingest.min_voxel_mm, ingest.max_voxel_mm)")
    return affine


def _check_3d(shape: tuple[int, ...]) -> None:
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        kind = f"{len(shape)}-D" if len(shape) != 4 else f"4-D with {shape[3]} volumes"
        raise NiftiProblem(f"image is {kind} (shape {tuple(shape)}); expected one 3-D volume")
    if min(shape) < 2:
        raise NiftiProblem(f"image has a dimension of size {min(shape)} (shape {tuple(shape)}); "
                           "a single slice is not a volume")


def _chosen_affine(header: nib.Nifti1Header, shape: tuple[int, ...], warnings: list[str]) -> np.ndarray:
    """The sform when set, else the qform (nibabel's and ITK's order); refuse when neither is set,
    when they disagree on orientation, or when either is not finite."""
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    if qcode <= 0 and scode <= 0:
        raise NiftiProblem("orientation unknown: qform_code and sform_code are both 0, so the header "
                           "does not say which side is left; re-export it with its orientation")
    forms = {}
    for name, code in (("sform", scode), ("qform", qcode)):
        if code > 0:
            try:
                matrix = np.asarray(header.get_sform() if name == "sform" else header.get_qform(), float)
            except Exception:
                raise NiftiProblem(f"{name} cannot be computed from the header") from None
            if not np.all(np.isfinite(matrix)):
                raise NiftiProblem(f"{name} (orientation matrix) contains NaN or Inf")
            forms[name] = matrix
    if len(forms) == 2:
        _compare_forms(forms["qform"], forms["sform"], shape[:3], warnings)
    return forms.get("sform", forms.get("qform"))


def _compare_forms(qform: np.ndarray, sform: np.ndarray, shape: tuple[int, ...], warnings: list[str]) -> None:
    try:
        q_axes, s_axes = nib.orientations.aff2axcodes(qform), nib.orientations.aff2axcodes(sform)
    except Exception:
        raise NiftiProblem("qform or sform is degenerate (no axis directions)") from None
    if q_axes != s_axes or np.sign(np.linalg.det(qform[:3, :3])) != np.sign(np.linalg.det(sform[:3, :3])):
        raise NiftiProblem(f"qform and sform disagree on orientation (qform {''.join(map(str, q_axes))}, sform "
                           f"{''.join(map(str, s_axes))}): one of them mirrors or rotates the anatomy and the "
                           "file does not say which; fix the header (e.g. fslorient) or re-export")
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]).T
    distance = float(np.max(np.linalg.norm((qform @ corners - sform @ corners)[:3], axis=0)))
    if distance > QFORM_SFORM_WARN_MM:
        warnings.append(f"qform and sform differ by up to {distance:.3g} mm at the image corners; "
                        "the sform was used")


def _check_shear(affine: np.ndarray) -> None:
    unit = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    cosines = np.abs(unit.T @ unit - np.eye(3))
    worst = float(cosines.max())
    if worst > SHEAR_TOLERANCE:
        angle = math.degrees(math.asin(min(worst, 1.0)))
        raise NiftiProblem(f"voxel axes are not perpendicular (sheared by {angle:.2g} degrees, e.g. a gantry-"
                           "tilted or resampled image): registration needs an orthogonal grid; resample it "
                           "to an orthogonal grid first")


# ------------------------------------------------------------------ voxels


def _float32_voxels(raw: np.ndarray, header: nib.Nifti1Header) -> tuple[np.ndarray, bool]:
    """Scaled voxels as float32, one slice at a time (scaling in float64, as nibabel does), and
    whether the stored type is an integer one and every scaled value an integer exact in float32."""
    stored_slope, stored_inter = float(header["scl_slope"]), float(header["scl_inter"])
    # 0 or NaN means "no scaling" (the standard; nibabel writes NaN); an infinite value is corrupt
    if math.isinf(stored_slope) or (stored_slope not in (0.0,) and not math.isnan(stored_slope)
                                    and math.isinf(stored_inter)):
        raise NiftiProblem(f"intensity scaling (scl_slope {stored_slope}, scl_inter {stored_inter}) is not finite")
    slope, inter = header.get_slope_inter()
    slope = 1.0 if slope is None else float(slope)
    inter = 0.0 if inter is None else float(inter)
    volume = raw.reshape(raw.shape[:3]) if raw.ndim == 4 else raw
    out = np.empty(volume.shape, dtype=np.float32)
    low, high, bad = math.inf, -math.inf, 0
    integral = volume.dtype.kind in "iu"
    try:
        for k in range(volume.shape[2]):
            plane = np.asarray(volume[:, :, k], dtype=np.float64) * slope + inter
            integral = integral and bool(np.all(plane == np.rint(plane)))
            finite = np.isfinite(plane)
            bad += int(plane.size - np.count_nonzero(finite))
            if finite.any():
                low, high = min(low, float(plane[finite].min())), max(high, float(plane[finite].max()))
            out[:, :, k] = plane
    except (OSError, ValueError) as exc:  # a file shrunk under a memory map
        raise NiftiProblem(f"voxel data cannot be read completely ({type(exc).__name__})") from None
    if bad:
        raise NiftiProblem(f"image contains {bad} NaN or Inf voxel value(s)")
    if max(abs(low), abs(high)) > FLOAT32_MAX:
        raise NiftiProblem("image values exceed the float32 range")
    if low == high:
        raise NiftiProblem("image is constant (every voxel has the same value)")
    return out, integral and max(abs(low), abs(high)) <= FLOAT32_EXACT_INTEGER


#: Integer types a stored copy may keep: 64-bit ones crash ITK's readers and stay float32.
KEPT_INTEGER_TYPES = tuple(np.dtype(t) for t in (np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32))


def _integer_dtype(stored: np.dtype, values: np.ndarray) -> np.dtype | None:
    """``stored`` (native byte order) when it is one of :data:`KEPT_INTEGER_TYPES` and holds the
    integer ``values``' range, else None."""
    own = np.dtype(stored).newbyteorder("=")
    if own not in KEPT_INTEGER_TYPES:
        return None
    limits = np.iinfo(own)
    return own if limits.min <= float(values.min()) and float(values.max()) <= limits.max else None
