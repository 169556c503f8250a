"""Per-subject ingestion with real nibabel, pydicom and dcm2niix: clean output or a clear failure."""

import gzip
import json
import re
import shutil
from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pytest

from pipeline_lib.imaging.dicom import write_dicom_series
from pipeline_lib.core.errors import InputError
from pipeline_lib.core.qc import enforce_on_bad_input
from pipeline_lib.imaging.ingest import find_dcm2niix, ingest_subject

PHI = {
    "patient_name": "DOE^JANE",
    "patient_id": "PID-8830219",
    "birth_date": "19610203",
}
# every fragment a leak could take (DICOM's ^ separator may be dropped or swapped)
PHI_FRAGMENTS = ["DOE^JANE", "JANE", "PID-8830219", "8830219", "19610203", "Elsewhere"]
WHITELIST = {"manufacturer", "model", "field_strength", "sequence", "voxel_size_mm", "shape",
             "source_format"}
# axes: x flipped (LAS-like), anisotropic voxels, off-centre: reorientation must do real work
SOURCE_AFFINE = np.array([
    [-1.5, 0.0, 0.0, 40.0],
    [0.0, 1.0, 0.0, -30.0],
    [0.0, 0.0, 2.0, -12.0],
    [0.0, 0.0, 0.0, 1.0],
])


def _volume(shape=(20, 24, 12), seed=0) -> np.ndarray:
    # integer values below 2**16 make the DICOM round trip lossless
    return np.random.default_rng(seed).integers(0, 4000, size=shape).astype(np.float64)


def _series(folder: Path, volume=None, *, series_number=1, uid_seed="a") -> list[Path]:
    volume = _volume() if volume is None else volume
    return write_dicom_series(
        volume, SOURCE_AFFINE, folder, **PHI, manufacturer="ACME Medical", model_name="Scanny 3000",
        field_strength=3.0, series_description="T1 MPRAGE of JANE DOE",
        series_number=series_number, uid_seed=uid_seed, institution_name="St Elsewhere Hospital",
    )


def _decompressed(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.name.endswith(".gz") else raw


def _leaks(folder: Path, status: dict) -> list[str]:
    """PHI fragments found (case-insensitively) in any output file or the status."""
    texts = [_decompressed(p).lower() for p in folder.rglob("*") if p.is_file()]
    texts.append(json.dumps(status).lower().encode())
    return [f for f in PHI_FRAGMENTS if any(f.lower().encode() in t for t in texts)]


def _canonical(volume: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    return nib.as_closest_canonical(nib.Nifti1Image(volume.astype(np.float32), affine))


def _assert_failed(status: dict, out: Path, source: Path, reason_pattern: str) -> None:
    assert status["status"] == "failed", status
    assert status["stage"] == "ingest"
    assert set(status) == {"subject", "stage", "status", "kind", "reason", "warning"}
    assert re.search(reason_pattern, status["reason"]), status["reason"]
    assert json.loads((out / "status.json").read_text()) == status
    assert not (out / "volume.nii.gz").exists()
    assert not (out / "metadata.json").exists()


# ------------------------------------------------------------------------ DICOM


def test_dcm2niix_is_available():
    assert Path(find_dcm2niix()).is_file()


def test_dicom_series_converts_without_phi(tmp_path):
    series = tmp_path / "series01"
    files = _series(series)
    assert b"DOE^JANE" in files[0].read_bytes()  # the PHI really is planted

    out = tmp_path / "out"
    status = ingest_subject(series, "dicom", out, "sub-0123456789", kind="DICOM series (12 files)")

    assert status == {"subject": "sub-0123456789", "status": "ok", "stage": "ingest",
                      "kind": "DICOM series (12 files)", "reason": "", "warning": ""}
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "status.json", "volume.nii.gz"]
    assert _leaks(out, status) == []
    metadata = json.loads((out / "metadata.json").read_text())
    assert set(metadata) == WHITELIST
    assert metadata["manufacturer"] == "ACME Medical"
    assert metadata["model"] == "Scanny 3000"
    assert metadata["field_strength"] == 3.0
    assert metadata["sequence"] == "GR/SP_MP"
    assert metadata["source_format"] == "dicom"


def test_dicom_affine_and_values_round_trip(tmp_path):
    volume = _volume()
    _series(tmp_path / "s", volume)
    ingest_subject(tmp_path / "s", "dicom", tmp_path / "out", "sub-x")

    image = nib.load(tmp_path / "out" / "volume.nii.gz")
    expected = _canonical(volume, SOURCE_AFFINE)
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    np.testing.assert_allclose(image.affine, expected.affine, atol=1e-4)
    np.testing.assert_array_equal(image.get_fdata(), expected.get_fdata())
    metadata = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert metadata["shape"] == list(expected.shape)
    np.testing.assert_allclose(metadata["voxel_size_mm"], [1.5, 1.0, 2.0], atol=1e-5)


def test_sagittal_dicom_round_trips(tmp_path):
    # 3-D sagittal series: dcm2niix would rotate these unless told not to
    sagittal = np.array([[0.0, 0.0, 1.5, -10.0], [-1.0, 0.0, 0.0, 20.0],
                         [0.0, 1.2, 0.0, -5.0], [0.0, 0.0, 0.0, 1.0]])
    volume = _volume()
    write_dicom_series(volume, sagittal, tmp_path / "s", **PHI, manufacturer="ACME",
                       model_name="Scanny", field_strength=1.5, series_description="sag T1")
    status = ingest_subject(tmp_path / "s", "dicom", tmp_path / "out", "sub-x")
    assert status["status"] == "ok", status
    image = nib.load(tmp_path / "out" / "volume.nii.gz")
    expected = _canonical(volume, sagittal)
    np.testing.assert_allclose(image.affine, expected.affine, atol=1e-4)
    np.testing.assert_array_equal(image.get_fdata(), expected.get_fdata())


def test_dicom_missing_slice_fails(tmp_path):
    files = _series(tmp_path / "s")
    files[5].unlink()
    out = tmp_path / "out"
    status = ingest_subject(tmp_path / "s", "dicom", out, "sub-x")
    _assert_failed(status, out, tmp_path / "s", r"unevenly spaced.*slice is probably missing")
    assert _leaks(out, status) == []


def test_dicom_truncated_slice_fails(tmp_path):
    files = _series(tmp_path / "s")
    files[3].write_bytes(files[3].read_bytes()[:-200])
    status = ingest_subject(tmp_path / "s", "dicom", tmp_path / "out", "sub-x")
    _assert_failed(status, tmp_path / "out", tmp_path / "s", r"file 4 of 12.*truncated")


def test_dicom_folder_with_two_series_fails(tmp_path):
    _series(tmp_path / "a", uid_seed="a")
    _series(tmp_path / "b", series_number=2, uid_seed="b")
    for path in (tmp_path / "b").iterdir():
        shutil.copy(path, tmp_path / "a" / f"b-{path.name}")
    status = ingest_subject(tmp_path / "a", "dicom", tmp_path / "out", "sub-x")
    _assert_failed(status, tmp_path / "out", tmp_path / "a", r"2 DICOM series")


def test_dicom_single_slice_fails(tmp_path):
    _series(tmp_path / "s", _volume((16, 16, 1)))
    status = ingest_subject(tmp_path / "s", "dicom", tmp_path / "out", "sub-x")
    _assert_failed(status, tmp_path / "out", tmp_path / "s", r"single slice|expected one 3-D volume")


def test_dicom_folder_without_dicom_fails(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("empty export")
    status = ingest_subject(tmp_path / "s", "dicom", tmp_path / "out", "sub-x")
    _assert_failed(status, tmp_path / "out", tmp_path / "s", r"no DICOM files")


# ------------------------------------------------------------------------ NIfTI


def _save(path: Path, data, affine=None, **header_text) -> Path:
    image = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine,
                            dtype=np.asarray(data).dtype)
    for field, value in header_text.items():
        image.header[field] = value
    nib.save(image, path)
    return path


def test_nifti_is_reoriented_with_a_clean_header(tmp_path):
    volume = _volume().astype(np.float32)
    image = nib.Nifti1Image(volume, SOURCE_AFFINE)
    image.header["descrip"] = b"JANE DOE 19610203"
    image.header["aux_file"] = b"PID-8830219"
    image.header["intent_name"] = b"DOE^JANE"
    image.header["db_name"] = b"Elsewhere"
    image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"DOE^JANE PID-8830219"))
    source = tmp_path / "t1.nii.gz"
    nib.save(image, source)
    assert b"PID-8830219" in _decompressed(source)

    out = tmp_path / "out"
    status = ingest_subject(source, "nifti", out, "sub-x")

    assert status["status"] == "ok", status
    assert _leaks(out, status) == []
    result = nib.load(out / "volume.nii.gz")
    expected = _canonical(volume, SOURCE_AFFINE)
    np.testing.assert_allclose(result.affine, expected.affine)
    np.testing.assert_array_equal(result.get_fdata(), expected.get_fdata())
    header = result.header
    assert result.get_data_dtype() == np.float32
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 1)
    for field in ("descrip", "aux_file", "intent_name", "db_name"):
        assert header[field].item() == b"", field
    assert len(header.extensions) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["source_format"] == "nifti"
    assert metadata["manufacturer"] is None


def test_nifti_sidecar_gives_only_whitelisted_fields(tmp_path):
    source = _save(tmp_path / "sub-01_T1w.nii.gz", _volume().astype(np.float32))
    (tmp_path / "sub-01_T1w.json").write_text(json.dumps({
        "Manufacturer": "Siemens", "ManufacturersModelName": "Prisma_fit",
        "MagneticFieldStrength": 3, "ScanningSequence": "GR_IR", "SequenceVariant": ["SK", "SP"],
        "InstitutionName": "St Elsewhere Hospital", "PatientName": "DOE^JANE",
        "SeriesDescription": "T1 for JANE",
    }))
    out = tmp_path / "out"
    status = ingest_subject(source, "nifti", out, "sub-x")
    metadata = json.loads((out / "metadata.json").read_text())
    assert set(metadata) == WHITELIST
    assert (metadata["manufacturer"], metadata["model"], metadata["field_strength"],
            metadata["sequence"]) == ("Siemens", "Prisma_fit", 3.0, "GR_IR/SK_SP")
    assert _leaks(out, status) == []


def test_nifti_odd_but_valid_inputs_are_accepted(tmp_path):
    # uint64 crashes ANTs: it must come out as float32; a singleton 4th axis is squeezed
    big = _save(tmp_path / "u64.nii.gz", _volume().astype(np.uint64))
    single = _save(tmp_path / "s4.nii", _volume()[..., None].astype(np.int16))
    for source, dtype in ((big, np.float32), (single, np.int16)):
        out = tmp_path / source.name.split(".")[0]
        assert ingest_subject(source, "nifti", out, "sub-x")["status"] == "ok"
        result = nib.load(out / "volume.nii.gz")
        assert result.shape == (20, 24, 12)
        assert result.get_data_dtype() == dtype
        np.testing.assert_array_equal(result.get_fdata(), _volume())


def _ingested(tmp_path: Path, name: str, image: nib.Nifti1Image) -> nib.Nifti1Image:
    source = tmp_path / name
    nib.save(image, source)
    out = tmp_path / name.split(".")[0]
    assert ingest_subject(source, "nifti", out, "sub-x")["status"] == "ok"
    return nib.load(out / "volume.nii.gz")


def _as_registration_reads(image: nib.Nifti1Image) -> np.ndarray:
    """The float32 voxels registration computes with (imaging.registration._load_nifti)."""
    return np.asarray(nib.as_closest_canonical(image).dataobj, dtype=np.float32)


def test_an_integer_input_is_stored_in_its_own_type_and_reads_back_as_the_float32_copy_did(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(-1200, 3000, size=(20, 24, 12)).astype(np.int16)
    int16 = _ingested(tmp_path, "i16.nii.gz", nib.Nifti1Image(values, SOURCE_AFFINE, dtype=np.int16))
    assert int16.get_data_dtype() == np.int16
    expected = _canonical(values, SOURCE_AFFINE)
    np.testing.assert_array_equal(np.asarray(int16.dataobj), np.asarray(expected.dataobj).astype(np.int16))
    np.testing.assert_array_equal(_as_registration_reads(int16), np.asarray(expected.dataobj, dtype=np.float32))
    np.testing.assert_allclose(int16.affine, expected.affine)
    # an integer scaling whose results stay integers is applied: the copy holds the true values
    scaled = nib.Nifti1Image(np.abs(values), SOURCE_AFFINE, dtype=np.int16)
    scaled.header.set_slope_inter(2.0, -1024.0)
    kept = _ingested(tmp_path, "scaled.nii.gz", scaled)
    assert kept.get_data_dtype() == np.int16
    assert kept.dataobj.slope == 1.0
    assert kept.dataobj.inter == 0.0
    np.testing.assert_array_equal(_as_registration_reads(kept),
                                  np.asarray(_canonical(np.abs(values) * 2.0 - 1024.0, SOURCE_AFFINE).dataobj))
    # uint8 stays uint8 (a BraTS segmentation): a quarter of float32's bytes
    labels = (np.abs(values) % 5).astype(np.uint8)
    assert _ingested(tmp_path, "seg.nii.gz", nib.Nifti1Image(labels, SOURCE_AFFINE)).get_data_dtype() == np.uint8


def test_a_float_input_or_one_scaled_to_fractions_or_out_of_its_range_stays_float32(tmp_path):
    volume = _volume().astype(np.float32) + 0.25
    as_float = _ingested(tmp_path, "f32.nii.gz", nib.Nifti1Image(volume, SOURCE_AFFINE))
    assert as_float.get_data_dtype() == np.float32
    np.testing.assert_array_equal(_as_registration_reads(as_float), np.asarray(_canonical(volume, SOURCE_AFFINE).dataobj))
    whole = _ingested(tmp_path, "whole.nii.gz", nib.Nifti1Image(np.rint(volume), SOURCE_AFFINE))
    assert whole.get_data_dtype() == np.float32  # integer values in a float type: the type is the input's
    stored = np.arange(20 * 24 * 12, dtype=np.int16).reshape(20, 24, 12) % 300
    for name, slope, inter in (("half.nii.gz", 0.5, 0.0), ("wide.nii.gz", 200.0, 0.0)):
        image = nib.Nifti1Image(stored, SOURCE_AFFINE, dtype=np.int16)
        image.header.set_slope_inter(slope, inter)
        result = _ingested(tmp_path, name, image)
        assert result.get_data_dtype() == np.float32, name  # 0.5 steps; 59,800 > int16's range
        np.testing.assert_array_equal(_as_registration_reads(result),
                                      np.asarray(_canonical(stored * slope + inter, SOURCE_AFFINE).dataobj))


def test_output_is_byte_reproducible(tmp_path):
    source = _save(tmp_path / "a.nii.gz", _volume().astype(np.float32), SOURCE_AFFINE)
    ingest_subject(source, "nifti", tmp_path / "one", "sub-x")
    ingest_subject(source, "nifti", tmp_path / "two", "sub-x")
    first, second = (tmp_path / name / "volume.nii.gz" for name in ("one", "two"))
    assert first.read_bytes() == second.read_bytes()


def _truncated(tmp_path: Path) -> Path:
    path = _save(tmp_path / "trunc.nii.gz", _volume().astype(np.float32))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _nan(tmp_path: Path) -> Path:
    data = _volume().astype(np.float32)
    data[3, 4, 5] = np.nan
    data[1, 1, 1] = np.inf
    return _save(tmp_path / "nan.nii.gz", data)


def _two_d(tmp_path: Path) -> Path:
    return _save(tmp_path / "slice.nii.gz", _volume()[:, :, 0].astype(np.float32))


def _zero_voxel(tmp_path: Path) -> Path:
    image = nib.Nifti1Image(_volume().astype(np.float32), np.eye(4))
    image.header.set_zooms((1.0, 1.0, 0.0))  # ANTs would read this as 1 mm
    nib.save(image, tmp_path / "zero.nii.gz")
    return tmp_path / "zero.nii.gz"


def _png(tmp_path: Path) -> Path:
    matplotlib.image.imsave(tmp_path / "picture.png", _volume()[:, :, 0])
    return (tmp_path / "picture.png").rename(tmp_path / "picture.nii")


def _constant(tmp_path: Path) -> Path:
    return _save(tmp_path / "const.nii.gz", np.full((8, 8, 8), 7.0, dtype=np.float32))


def _four_d(tmp_path: Path) -> Path:
    return _save(tmp_path / "bold.nii.gz", np.stack([_volume()] * 3, axis=-1).astype(np.float32))


def _huge_voxels(tmp_path: Path) -> Path:
    return _save(tmp_path / "coarse.nii.gz", _volume().astype(np.float32), np.diag([12.0, 1, 1, 1]))


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "absent.nii.gz"


@pytest.mark.parametrize("make, reason", [
    (_truncated, r"compressed data is corrupt or cut short"),
    (_nan, r"2 NaN or Inf voxel"),
    (_two_d, r"image is 2-D"),
    (_zero_voxel, r"voxel size .* is zero"),
    (_png, r"not a NIfTI file: the header size field"),
    (_constant, r"constant"),
    (_four_d, r"4-D with 3 volumes"),
    (_huge_voxels, r"voxel size \(12\.0, 1\.0, 1\.0\) mm .* outside the allowed range .*ingest\.max_voxel_mm"),
    (_missing, r"does not exist"),
])
def test_bad_nifti_fails_with_reason(tmp_path, make, reason):
    source = make(tmp_path)
    out = tmp_path / "out"
    status = ingest_subject(source, "nifti", out, "sub-x")
    _assert_failed(status, out, source, reason)
    # the reason must not echo the path (logs are shared; folder names may name patients)
    assert str(tmp_path) not in status["reason"]


def test_failure_replaces_an_earlier_success(tmp_path):
    good = _save(tmp_path / "good.nii.gz", _volume().astype(np.float32))
    out = tmp_path / "out"
    assert ingest_subject(good, "nifti", out, "sub-x")["status"] == "ok"
    bad = _nan(tmp_path)
    status = ingest_subject(bad, "nifti", out, "sub-x")
    _assert_failed(status, out, bad, r"NaN")


def test_on_bad_input_fail_names_subject_kind_and_reason(tmp_path):
    source = _two_d(tmp_path)
    status = ingest_subject(source, "nifti", tmp_path / "out", "sub-x", kind="NIfTI file")
    with pytest.raises(InputError, match=r"^subject sub-x \(NIfTI file\): ingest failed: image is 2-D"):
        enforce_on_bad_input(status, "fail")
    enforce_on_bad_input(status, "skip")  # recorded, the run goes on
    enforce_on_bad_input({"status": "ok", "kind": "x", "reason": ""}, "fail")  # no exception


def test_unknown_format_fails(tmp_path):
    source = _save(tmp_path / "a.nii.gz", _volume().astype(np.float32))
    status = ingest_subject(source, "analyze", tmp_path / "out", "sub-x")
    _assert_failed(status, tmp_path / "out", source, r"unknown input format 'analyze'")


def test_the_reference_sequence_is_recorded_for_registration(tmp_path):
    """Registration reads the subject's reference sequence from the ingest folder (a cluster job has
    no access to discovery's table); a folder without the record means a single-sequence input."""
    from pipeline_lib.imaging.ingest import read_reference, write_reference

    assert read_reference(tmp_path) == ""
    write_reference(tmp_path, "t1ce")
    assert read_reference(tmp_path) == "t1ce"
    write_reference(tmp_path, "")
    assert read_reference(tmp_path) == ""
