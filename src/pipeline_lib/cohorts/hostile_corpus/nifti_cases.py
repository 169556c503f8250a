"""Hostile corpus, NIfTI cases: file variants that must be read (NIfTI-2, gzip under either suffix,
big-endian, scaled integers), broken files (truncated, bad checksum, gzip bombs, impossible headers)
and images that are valid files but not usable volumes (orientation, voxel size, values, dimensions)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

from pipeline_lib.cohorts.hostile_corpus.building import (ACCEPT, PHI_MARK, REFUSE, SETTINGS, SHAPE, WARN, Case,
                                                          nifti_bytes, patch_header, phantom, voxel_affine,
                                                          write_nifti)

def _ni_good(d: Path) -> str:
    write_nifti(d / "t1.nii.gz")
    return "t1.nii.gz"


def _ni_plain(d: Path) -> str:
    write_nifti(d / "t1.nii")
    return "t1.nii"


def _ni_nifti2(d: Path) -> str:
    write_nifti(d / "t1.nii.gz", klass=nib.Nifti2Image)
    return "t1.nii.gz"


def _ni_gzip_named_nii(d: Path) -> str:
    (d / "t1.nii").write_bytes(gzip.compress(nifti_bytes()))
    return "t1.nii"


def _ni_plain_named_gz(d: Path) -> str:
    (d / "t1.nii.gz").write_bytes(nifti_bytes())
    return "t1.nii.gz"


def _ni_big_endian(d: Path) -> str:
    image = nib.Nifti1Image(phantom().astype(">f4"), voxel_affine())
    nib.save(image, d / "t1.nii")
    return "t1.nii"


def _ni_scaled_int16(d: Path) -> str:
    image = nib.Nifti1Image(phantom().astype(np.int16), voxel_affine())
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, d / "t1.nii.gz")
    return "t1.nii.gz"


def _ni_header_text(d: Path) -> str:
    image = nib.Nifti1Image(phantom(), voxel_affine())
    image.header["descrip"] = PHI_MARK.encode()
    image.header["aux_file"] = b"CORPUS-ID-4711"
    image.header["intent_name"] = b"CORPUS^PHI"
    image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", PHI_MARK.encode()))
    nib.save(image, d / "t1.nii.gz")
    return "t1.nii.gz"


def _ni_truncated_plain(d: Path) -> str:
    raw = nifti_bytes()
    (d / "t1.nii").write_bytes(raw[: len(raw) // 2])
    return "t1.nii"


def _ni_truncated_gz(d: Path) -> str:
    raw = gzip.compress(nifti_bytes())
    (d / "t1.nii.gz").write_bytes(raw[: len(raw) // 2])
    return "t1.nii.gz"


def _ni_bad_crc(d: Path) -> str:
    raw = bytearray(gzip.compress(nifti_bytes()))
    raw[-8] ^= 0xFF  # the CRC32 of the gzip trailer
    (d / "t1.nii.gz").write_bytes(bytes(raw))
    return "t1.nii.gz"


def _ni_terabytes(d: Path) -> str:
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((32767, 32767, 32767))
    header.set_qform(voxel_affine(), code=1)
    header["vox_offset"] = 352
    (d / "huge.nii").write_bytes(header.binaryblock + b"\0" * 4 + b"\1" * 4096)
    return "huge.nii"


def _ni_gzip_bomb(d: Path) -> str:
    """A small declared image followed by 64 MiB of zeros that compress to ~64 KiB."""
    with gzip.open(d / "bomb.nii.gz", "wb", compresslevel=9) as handle:
        handle.write(nifti_bytes())
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
    header.set_qform(voxel_affine(), code=1)
    header["vox_offset"] = 352
    with gzip.open(d / "zeros.nii.gz", "wb", compresslevel=1) as handle:
        handle.write(header.binaryblock + b"\0" * 4)
        plane = b"\0" * (side * side * 2)
        for _ in range(side):
            handle.write(plane)
    return "zeros.nii.gz"


def _ni_trailing_bytes(d: Path) -> str:
    (d / "t1.nii.gz").write_bytes(gzip.compress(nifti_bytes() + b"padding" * 10))
    return "t1.nii.gz"


def _ni_offset_past_end(d: Path) -> str:
    path = write_nifti(d / "t1.nii")
    patch_header(path, 108, "f", 1e6)  # vox_offset
    return "t1.nii"


def _ni_offset_in_header(d: Path) -> str:
    path = write_nifti(d / "t1.nii")
    patch_header(path, 108, "f", 100.0)
    return "t1.nii"


def _ni_bad_ndim(d: Path) -> str:
    path = write_nifti(d / "t1.nii")
    patch_header(path, 40, "h", 9)  # dim[0]
    return "t1.nii"


def _ni_negative_dim(d: Path) -> str:
    path = write_nifti(d / "t1.nii")
    patch_header(path, 42, "h", -24)  # dim[1]
    return "t1.nii"


def _ni_png(d: Path) -> str:
    (d / "picture.nii").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return "picture.nii"


def _ni_pair_magic(d: Path) -> str:
    path = write_nifti(d / "t1.nii")
    patch_header(path, 344, "4s", b"ni1\0")
    return "t1.nii"


def _ni_complex(d: Path) -> str:
    write_nifti(d / "t1.nii.gz", data=phantom().astype(np.complex64))
    return "t1.nii.gz"


def _ni_rgb(d: Path) -> str:
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    write_nifti(d / "t1.nii.gz", data=rgb)
    return "t1.nii.gz"


def _ni_qform_sform_flip(d: Path) -> str:
    image = nib.Nifti1Image(phantom(), voxel_affine())
    flipped = voxel_affine()
    flipped[0, 0] = -flipped[0, 0]
    image.set_qform(flipped, code=1)
    image.set_sform(voxel_affine(), code=2)
    nib.save(image, d / "t1.nii.gz")
    return "t1.nii.gz"


def _ni_qform_sform_shift(d: Path) -> str:
    image = nib.Nifti1Image(phantom(), voxel_affine())
    shifted = voxel_affine()
    shifted[:3, 3] += [0.5, 0.0, 0.0]
    image.set_qform(shifted, code=1)
    image.set_sform(voxel_affine(), code=1)
    nib.save(image, d / "t1.nii.gz")
    return "t1.nii.gz"


def _ni_no_orientation(d: Path) -> str:
    image = nib.Nifti1Image(phantom(), voxel_affine())
    image.set_qform(None, code=0)
    image.set_sform(None, code=0)
    nib.save(image, d / "t1.nii.gz")
    return "t1.nii.gz"


def _ni_qform_only(d: Path) -> str:
    image = nib.Nifti1Image(phantom(), voxel_affine())
    image.set_qform(voxel_affine(), code=1)
    image.set_sform(None, code=0)
    nib.save(image, d / "t1.nii.gz")
    return "t1.nii.gz"


def _pixdim(values) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        path = write_nifti(d / "t1.nii")
        patch_header(path, 80, "3f", *values)  # pixdim[1..3]
        return "t1.nii"
    return build


def _sform_row(row: int, values) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        affine = voxel_affine()
        affine[row, : len(values)] = values
        image = nib.Nifti1Image(phantom(), voxel_affine())
        image.set_sform(affine, code=2)
        image.set_qform(None, code=0)
        nib.save(image, d / "t1.nii")
        if not np.all(np.isfinite(values)):
            patch_header(d / "t1.nii", 280 + 16 * row, "4f", *affine[row])
        return "t1.nii"
    return build


def _ni_coarse(d: Path) -> str:
    write_nifti(d / "t1.nii.gz", affine=voxel_affine((20.0, 1.0, 1.0)))
    return "t1.nii.gz"


def _ni_nan_values(d: Path) -> str:
    data = phantom()
    data[3, 4, 5] = np.nan
    write_nifti(d / "t1.nii.gz", data=data)
    return "t1.nii.gz"


def _ni_beyond_float32(d: Path) -> str:
    data = phantom().astype(np.float64)
    data[1, 1, 1] = 1e300
    write_nifti(d / "t1.nii.gz", data=data)
    return "t1.nii.gz"


def _ni_constant(d: Path) -> str:
    write_nifti(d / "t1.nii.gz", data=np.full(SHAPE, 3.0, dtype=np.float32))
    return "t1.nii.gz"


def _ni_four_d(d: Path) -> str:
    write_nifti(d / "bold.nii.gz", data=np.stack([phantom()] * 3, axis=-1))
    return "bold.nii.gz"


def _ni_two_d(d: Path) -> str:
    write_nifti(d / "slice.nii.gz", data=phantom()[:, :, 0])
    return "slice.nii.gz"


def _ni_single_slice(d: Path) -> str:
    write_nifti(d / "slice.nii.gz", data=phantom()[:, :, :1])
    return "slice.nii.gz"


def _ni_inf_slope(d: Path) -> str:
    path = write_nifti(d / "t1.nii", data=phantom().astype(np.int16))
    patch_header(path, 112, "f", float("inf"))  # scl_slope
    return "t1.nii"


def nifti_cases() -> list[Case]:
    ni = "NIfTI"
    return [
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
    ]
