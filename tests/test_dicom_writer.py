"""write_dicom_series: real pydicom files, converted back with the real dcm2niix."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from pipeline_lib.imaging.dicom import write_dicom_series
from pipeline_lib.core.errors import InputError

PHI = dict(patient_name="Phantom^Ada^7", patient_id="PHI-ID-314159", birth_date="19470312")
SCANNER = dict(manufacturer="Phantom Imaging", model_name="Demo 3T", field_strength=3.0)


def _dcm2niix() -> str:
    """The dcm2niix binary of the venv's PyPI wheel (or one on PATH)."""
    beside = Path(sys.executable).with_name("dcm2niix")
    found = str(beside) if beside.exists() else shutil.which("dcm2niix")
    assert found, "dcm2niix binary not found (pip package dcm2niix)"
    return found


def _convert(series: Path, out: Path) -> nib.Nifti1Image:
    out.mkdir()
    subprocess.run(
        [_dcm2niix(), "-b", "n", "-z", "n", "-f", "converted", "-o", str(out), str(series)],
        check=True,
        capture_output=True,
    )
    produced = sorted(out.glob("*.nii"))
    assert [p.name for p in produced] == ["converted.nii"]
    return nib.load(produced[0])


def _rotation(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _affine(rotation_deg: float, flip_x: bool) -> np.ndarray:
    """Anisotropic voxels (1.5 x 0.9 x 3.2 mm), origin away from 0, optional LAS storage."""
    zooms = np.diag([-1.5 if flip_x else 1.5, 0.9, 3.2])
    affine = np.eye(4)
    affine[:3, :3] = _rotation(rotation_deg) @ zooms
    affine[:3, 3] = [31.0, -22.5, 14.0]
    return affine


def _volume(shape=(20, 24, 12), seed=0) -> np.ndarray:
    """Smooth structure plus noise, with a distinct value at the first voxel to catch flips."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    vol = 500 * np.exp(-(x**2 + 2 * y**2 + 3 * (z - 0.3) ** 2)) + rng.normal(0, 20, shape)
    vol[0, 0, 0] = 900.0
    return vol.astype(np.float32)


@pytest.mark.parametrize(
    "rotation_deg, flip_x", [(0.0, False), (0.0, True), (12.0, False)], ids=["RAS", "LAS", "oblique"]
)
def test_dcm2niix_recovers_affine_and_values(tmp_path, rotation_deg, flip_x):
    volume, affine = _volume(), _affine(rotation_deg, flip_x)
    files = write_dicom_series(volume, affine, tmp_path / "series", **PHI, **SCANNER, series_description="T1w")
    assert len(files) == volume.shape[2]
    assert all(f.exists() for f in files)

    converted = nib.as_closest_canonical(_convert(tmp_path / "series", tmp_path / "nii"))
    original = nib.as_closest_canonical(nib.Nifti1Image(volume, affine))
    np.testing.assert_allclose(converted.affine, original.affine, atol=1e-3)
    assert converted.shape == original.shape

    slope = float(pydicom.dcmread(files[0]).RescaleSlope)
    error = np.abs(converted.get_fdata() - original.get_fdata()).max()
    assert slope < (volume.max() - volume.min()) / 60000  # the full uint16 range is used
    assert error <= slope / 2 + 1e-5 * np.abs(volume).max()


def test_geometry_and_phi_tags(tmp_path):
    volume, affine = _volume(), _affine(0.0, False)
    files = write_dicom_series(volume, affine, tmp_path / "s", **PHI, **SCANNER, series_description="T1w")
    headers = [pydicom.dcmread(f) for f in files]
    first, last = headers[0], headers[-1]
    assert first.SOPClassUID == pydicom.uid.MRImageStorage
    assert first.pixel_array.dtype == np.uint16
    assert first.pixel_array.shape == (volume.shape[1], volume.shape[0])  # rows = y, columns = x
    assert [float(v) for v in first.PixelSpacing] == [0.9, 1.5]
    assert float(first.SliceThickness) == float(first.SpacingBetweenSlices) == 3.2
    # RAS origin (31, -22.5, 14) is LPS (-31, 22.5, 14); slices advance 3.2 mm superior.
    assert [float(v) for v in first.ImagePositionPatient] == [-31.0, 22.5, 14.0]
    assert [float(v) for v in last.ImagePositionPatient] == pytest.approx([-31.0, 22.5, 14.0 + 3.2 * 11])
    assert [float(v) for v in first.ImageOrientationPatient] == [-1, 0, 0, 0, -1, 0]
    assert [int(h.InstanceNumber) for h in headers] == list(range(1, 13))
    assert len({h.SOPInstanceUID for h in headers}) == 12
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    assert str(first.PatientName) == PHI["patient_name"]
    assert first.PatientID == PHI["patient_id"]
    assert first.PatientBirthDate == PHI["birth_date"]
    assert first.Manufacturer == SCANNER["manufacturer"]
    assert float(first.MagneticFieldStrength) == 3.0
    # Rescaled pixels reproduce the voxel values.
    restored = first.pixel_array.T * float(first.RescaleSlope) + float(first.RescaleIntercept)
    np.testing.assert_allclose(restored, volume[:, :, 0], atol=float(first.RescaleSlope))


def test_integer_volume_is_lossless(tmp_path):
    volume = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3) - 7
    files = write_dicom_series(volume, np.eye(4), tmp_path / "s", **PHI, **SCANNER, series_description="x")
    ds = pydicom.dcmread(files[1])
    assert float(ds.RescaleSlope) == 1.0
    np.testing.assert_array_equal(ds.pixel_array.T + float(ds.RescaleIntercept), volume[:, :, 1])


def test_rewrite_is_byte_identical_and_seed_changes_uids(tmp_path):
    volume, affine = _volume(), _affine(5.0, True)
    kwargs = dict(**PHI, **SCANNER, series_description="T1w", uid_seed="demo-01")
    first = write_dicom_series(volume, affine, tmp_path / "a", **kwargs)
    second = write_dicom_series(volume, affine, tmp_path / "b", **kwargs)
    assert [f.read_bytes() for f in first] == [f.read_bytes() for f in second]
    # Rewriting into the same folder replaces the series in place.
    again = write_dicom_series(volume, affine, tmp_path / "a", **kwargs)
    assert [f.read_bytes() for f in again] == [f.read_bytes() for f in second]

    other = write_dicom_series(volume, affine, tmp_path / "c", **{**kwargs, "uid_seed": "demo-02"})
    assert pydicom.dcmread(other[0]).SeriesInstanceUID != pydicom.dcmread(first[0]).SeriesInstanceUID
    # Without a seed the UIDs still do not depend on the run, but on the content.
    no_seed = {**kwargs, "uid_seed": ""}
    x = write_dicom_series(volume, affine, tmp_path / "x", **no_seed)
    y = write_dicom_series(volume, affine, tmp_path / "y", **no_seed)
    z = write_dicom_series(volume + 1, affine, tmp_path / "z", **no_seed)
    assert x[0].read_bytes() == y[0].read_bytes()
    assert pydicom.dcmread(z[0]).StudyInstanceUID != pydicom.dcmread(x[0]).StudyInstanceUID


@pytest.mark.parametrize(
    "volume, affine, problem",
    [
        (np.zeros((4, 4)), np.eye(4), "3-D"),
        (np.full((4, 4, 2), np.nan), np.eye(4), "NaN"),
        (np.zeros((4, 4, 2)), np.diag([1.0, 1.0, 0.0, 1.0]), "zero voxel size"),
        (np.zeros((4, 4, 2)), np.array([[1, 0, 0.5, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "sheared"),
    ],
)
def test_bad_input_names_folder_and_problem(tmp_path, volume, affine, problem):
    with pytest.raises(InputError, match=problem) as info:
        write_dicom_series(volume, affine, tmp_path / "bad", **PHI, **SCANNER, series_description="x")
    assert str(tmp_path / "bad") in str(info.value)
    assert not (tmp_path / "bad").exists()


def test_refuses_to_replace_foreign_folder(tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="notes.txt"):
        write_dicom_series(np.ones((3, 3, 2)), np.eye(4), target, **PHI, **SCANNER, series_description="x")
    assert (target / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temporary folder left behind
