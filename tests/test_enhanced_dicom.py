"""Enhanced (multi-frame) MR DICOM, as current Siemens XA and Philips exports write it: converted
by dcm2niix after the same header checks as a classic series, each frame's geometry checked as a
classic file's; a broken file is refused with a reason that names it by rank, never by a header
value."""

from __future__ import annotations

import gzip
import json
import logging
import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from pipeline_lib.imaging.dicom import write_enhanced_mr
from pipeline_lib.imaging.discovery import discover_inputs, write_staging
from pipeline_lib.imaging.ingest import ingest_subject

REPO = Path(__file__).resolve().parents[1]
PHI = {"patient_name": "DOE^JANE", "patient_id": "PID-8830219", "birth_date": "19610203"}
PHI_FRAGMENTS = ["DOE^JANE", "JANE", "PID-8830219", "8830219", "19610203"]
SHAPE = (20, 24, 12)
# x flipped, anisotropic voxels, off-centre: reorientation to RAS must do real work
AXIAL = np.array([[-1.5, 0.0, 0.0, 40.0], [0.0, 1.0, 0.0, -30.0], [0.0, 0.0, 2.0, -12.0], [0.0, 0.0, 0.0, 1.0]])
SAGITTAL = np.array([[0.0, 0.0, 1.5, -10.0], [-1.0, 0.0, 0.0, 20.0], [0.0, 1.2, 0.0, -5.0], [0.0, 0.0, 0.0, 1.0]])


def pattern() -> np.ndarray:
    """Every voxel's value says where it is (x + 100 y + 3000 z): a swapped, flipped or shifted
    axis changes values, and integers below 2**16 survive the uint16 round trip exactly."""
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    return (x + 100 * y + 3000 * z + 7).astype(np.float64)


def enhanced(folder: Path, affine=AXIAL, name: str = "MF0001.dcm") -> Path:
    return write_enhanced_mr(pattern(), affine, folder / name, **PHI, manufacturer="ACME Medical",
                             model_name="Scanny 3000", series_description="t1 of JANE DOE")


def edit(path: Path, change) -> None:
    dataset = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid values are planted on purpose
        change(dataset)
        dataset.save_as(path, enforce_file_format=True)


def expected_image(affine) -> nib.Nifti1Image:
    return nib.as_closest_canonical(nib.Nifti1Image(pattern().astype(np.float32), affine))


def failure(tmp_path: Path, change) -> str:
    edit(enhanced(tmp_path / "s"), change)
    out = tmp_path / "out"
    status = ingest_subject(tmp_path / "s", "dicom", out, "sub-x")
    assert status["status"] == "failed", status
    assert not (out / "volume.nii.gz").exists()
    assert not any(f.lower() in status["reason"].lower() for f in PHI_FRAGMENTS), status["reason"]
    return status["reason"]


def test_the_written_file_is_enhanced_mr_with_per_frame_positions(tmp_path):
    dataset = pydicom.dcmread(enhanced(tmp_path))
    assert dataset.SOPClassUID == pydicom.uid.EnhancedMRImageStorage
    assert int(dataset.NumberOfFrames) == SHAPE[2] == len(dataset.PerFrameFunctionalGroupsSequence)
    assert "ImagePositionPatient" not in dataset
    assert "PixelSpacing" not in dataset
    assert dataset.pixel_array.shape == (SHAPE[2], SHAPE[1], SHAPE[0])


@pytest.mark.parametrize("affine", [AXIAL, SAGITTAL], ids=["axial", "sagittal"])
def test_enhanced_mr_converts_with_its_geometry_and_values(tmp_path, affine):
    enhanced(tmp_path / "s", affine)
    out = tmp_path / "out"
    status = ingest_subject(tmp_path / "s", "dicom", out, "sub-0123456789", kind="DICOM series (1 file)")
    assert status["status"] == "ok", status
    image, expected = nib.load(out / "volume.nii.gz"), expected_image(affine)
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    np.testing.assert_allclose(image.affine, expected.affine, atol=1e-4)
    np.testing.assert_array_equal(image.get_fdata(), expected.get_fdata())
    metadata = json.loads((out / "metadata.json").read_text())
    np.testing.assert_allclose(metadata["voxel_size_mm"], expected.header.get_zooms(), atol=1e-5)
    assert metadata["shape"] == list(expected.shape)
    assert metadata["manufacturer"] == "ACME Medical"
    assert metadata["source_format"] == "dicom"
    written = b"".join(p.read_bytes() for p in out.iterdir()).lower() + json.dumps(status).lower().encode()
    written += gzip.decompress((out / "volume.nii.gz").read_bytes()).lower()
    assert not [f for f in PHI_FRAGMENTS if f.lower().encode() in written]


def test_discovery_stages_a_folder_with_one_enhanced_file_as_a_series(tmp_path):
    enhanced(tmp_path / "export" / "patient-folder" / "t1")
    found = discover_inputs(tmp_path / "export", "salt", REPO / "workflow/schemas/samples.schema.yaml")
    assert len(found.subjects) == 1
    assert found.subjects["format"].iloc[0] == "dicom"
    write_staging(found, tmp_path / "staging")
    subject = found.subjects["subject"].iloc[0]
    status = ingest_subject(tmp_path / "staging" / subject / "input", "dicom", tmp_path / "out", subject)
    assert status["status"] == "ok", status


def test_frame_count_disagreeing_with_the_per_frame_groups_is_refused(tmp_path):
    def drop_last_group(ds):
        ds.PerFrameFunctionalGroupsSequence = ds.PerFrameFunctionalGroupsSequence[:-1]
    reason = failure(tmp_path, drop_last_group)
    assert reason == ("DICOM file 1 of 1 (multi-frame) declares 12 frames (NumberOfFrames) but its per-frame "
                      "functional groups describe 11: a broken or cut-short export")


def test_pixel_data_shorter_than_the_declared_frames_is_refused(tmp_path):
    def one_more_frame(ds):
        ds.NumberOfFrames = SHAPE[2] + 1
    assert "DICOM file 1 of 1 (in name order) is truncated" in failure(tmp_path, one_more_frame)


def test_a_frame_without_position_is_refused_naming_the_frame(tmp_path):
    def forget_position(ds):
        del ds.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence
    assert failure(tmp_path, forget_position).startswith(
        "DICOM file 1 of 1 (multi-frame), frame 3 of 12 lacks ImagePositionPatient")


def test_a_file_holding_two_volumes_is_refused(tmp_path):
    def repeat_positions(ds):  # two echoes or time points at the same six positions
        groups = ds.PerFrameFunctionalGroupsSequence
        for k in range(6, 12):
            groups[k].PlanePositionSequence[0].ImagePositionPatient = \
                groups[k - 6].PlanePositionSequence[0].ImagePositionPatient
    assert "frames of the multi-frame file lie at the same slice position" in failure(tmp_path, repeat_positions)


def test_a_missing_shared_orientation_is_refused(tmp_path):
    def forget_orientation(ds):
        del ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
    assert "frame 1 of 12 lacks ImageOrientationPatient" in failure(tmp_path, forget_orientation)


def test_multi_frame_file_of_a_classic_class_is_refused(tmp_path):
    def classic(ds):
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
    assert failure(tmp_path, classic).startswith("multi-frame file of SOP class MR Image Storage")


def test_two_enhanced_files_in_one_folder_are_refused(tmp_path):
    enhanced(tmp_path / "s", name="MF0002.dcm")
    reason = failure(tmp_path, lambda ds: None)
    assert reason.startswith("folder holds 2 DICOM files, 2 of them multi-frame")


def test_reasons_never_hold_the_file_name(tmp_path):
    folder = tmp_path / "s"
    path = enhanced(folder, name="DOE_JANE_T1.dcm")
    edit(path, lambda ds: setattr(ds, "NumberOfFrames", 13))
    status = ingest_subject(folder, "dicom", tmp_path / "out", "sub-x")
    assert status["status"] == "failed", status
    assert "DOE" not in status["reason"], status
    assert os.path.basename(path) not in json.dumps(status)


def test_an_odd_sop_class_is_quoted_nowhere(tmp_path, caplog):
    """Neither the reason nor a warning or log line (pydicom's value checks quote the value) shows it."""
    edit(enhanced(tmp_path / "s"), lambda ds: setattr(ds, "SOPClassUID", "DOE^JANE"))
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = ingest_subject(tmp_path / "s", "dicom", tmp_path / "out", "sub-x")
    assert status["reason"].startswith("multi-frame file of SOP class (not a UID)"), status
    assert not [w for w in caught if "JANE" in str(w.message)]
    assert "JANE" not in caplog.text

