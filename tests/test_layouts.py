"""Dataset layouts through discovery (and ingest): generated trees with the real layouts and names of
BraTS (2019, 2020, 2021 and 2023), IXI (three sites), BIDS (participants.tsv, sidecars) and a DICOM study."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import write_tsv
from pipeline_lib.imaging.dicom import write_dicom_series
from pipeline_lib.imaging.discovery import discover_inputs, write_staging
from pipeline_lib.imaging.ingest import ingest_other_sequences, ingest_subject
from pipeline_lib.imaging.label_filters import check_filters_against_subjects

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "samples.schema.yaml"
SALT = "layout-test-salt"


def _nifti(path: Path, value: float = 1.0, shape=(6, 7, 5)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) * value + 1
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    return str(path)


def _discover(root: Path, tmp_path: Path, layout: dict, reference: str | None = None):
    found = discover_inputs(root, SALT, SCHEMA, layout=layout, reference_sequence=reference)
    public = tmp_path / "results"
    write_tsv(public / "subjects.tsv", found.subjects)
    write_tsv(public / "ignored.tsv", found.public_ignored())
    write_staging(found, tmp_path / "private" / "staging")
    return found, public


def _by_key(found) -> dict[str, dict]:
    key_of = dict(zip(found.linkage["subject"], found.linkage["source_key"]))
    return {key_of[row["subject"]]: row for row in found.subjects.to_dict("records")}


def _assert_no_source_names(public: Path, names: list[str]) -> None:
    for path in public.rglob("*"):
        if path.is_file():
            text = path.read_text()
            for name in names:
                assert name not in text, f"{name} leaked into {path.name}"


def test_brats_2019_and_2023_cases_are_subjects_with_four_sequences_a_mask_and_a_grade(tmp_path):
    root = tmp_path / "source"
    cases = [("HGG", "BraTS19_2013_10_1"), ("LGG", "BraTS19_TMC_09043_1")]
    for grade, case in cases:
        for s in ("t1", "t1ce", "t2", "flair", "seg"):
            _nifti(root / "MICCAI_BraTS_2019_Data_Training" / grade / case / f"{case}_{s}.nii.gz")
    for s in ("t1n", "t1c", "t2w", "t2f", "seg"):
        _nifti(root / "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData" / "BraTS-GLI-00000-000"
               / f"BraTS-GLI-00000-000-{s}.nii.gz")
    _nifti(root / "BraTS20_Training_001" / "BraTS20_Training_001_seg.nii.gz")  # a mask without images
    found, public = _discover(root, tmp_path, {"layout": "brats"})
    subjects = _by_key(found)
    assert set(subjects) == {"BraTS19_2013_10_1", "BraTS19_TMC_09043_1", "BraTS-GLI-00000-000"}
    for row in subjects.values():
        assert row["sequence"] == "t1"
        assert row["sequences"] == "t1,t1ce,t2,flair"
        assert row["mask"] == "seg"
        assert row["format"] == "nifti"
    assert subjects["BraTS19_2013_10_1"]["grade"] == "HGG"
    assert subjects["BraTS19_TMC_09043_1"]["grade"] == "LGG"
    assert subjects["BraTS-GLI-00000-000"]["grade"] == ""
    # the segmentation is staged as a mask, never as an image sequence
    staged = tmp_path / "private" / "staging" / found.subjects["subject"][0]
    assert sorted(p.name for p in (staged / "sequences").iterdir()) == ["flair", "t1ce", "t2"]
    assert [p.name for p in (staged / "masks").iterdir()] == ["seg"]
    assert "mask" in found.ignored["reason"].iloc[0] or "only masks" in found.ignored["reason"].iloc[0]
    _assert_no_source_names(public, ["BraTS19", "BraTS-GLI", "BraTS20_Training_001", "MICCAI", "HGG/"])


def _brats_case(root: Path, case: str) -> None:
    for s in ("t1", "t1ce", "t2", "flair", "seg"):
        _nifti(root / case / f"{case}_{s}.nii.gz")


def test_brats_2020_grade_from_name_mapping_csv_passes_the_grade_filter_and_leaks_no_id(tmp_path):
    root = tmp_path / "source" / "MICCAI_BraTS2020_TrainingData"
    (root).mkdir(parents=True)
    (root / "name_mapping.csv").write_text(
        "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,BraTS_2019_subject_ID,"
        "BraTS_2020_subject_ID\n"
        "HGG,Brats17_CBICA_AAB_1,Brats18_CBICA_AAB_1,NA,BraTS19_CBICA_AAB_1,BraTS20_Training_001\n"
        "LGG,Brats17_TCIA_101_1,Brats18_TCIA_101_1,TCGA-FG-6692,BraTS19_TCIA10_101_1,BraTS20_Training_002\n")
    for case in ("BraTS20_Training_001", "BraTS20_Training_002"):
        _brats_case(root, case)
    found, public = _discover(tmp_path / "source", tmp_path, {"layout": "brats"})
    subjects = _by_key(found)
    assert subjects["BraTS20_Training_001"]["grade"] == "HGG"
    assert subjects["BraTS20_Training_002"]["grade"] == "LGG"
    check_filters_against_subjects("t1_128", {"sequence": ("t1",), "grade": ("HGG",)}, found.subjects, "brats")
    with pytest.raises(InputError, match=r"datasets.t1_128.filters: no discovered subject passes"):
        check_filters_against_subjects("t1_128", {"sequence": ("t1",), "grade": ("GBM",)}, found.subjects, "brats")
    _assert_no_source_names(public, ["BraTS20", "TCGA", "Brats17", "CBICA", "MICCAI", "name_mapping"])


def test_brats_2021_without_grade_fails_the_grade_filter_before_registration_saying_what_to_do(tmp_path):
    root = tmp_path / "source" / "RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021"
    for case in ("BraTS2021_00000", "BraTS2021_00002"):
        _brats_case(root, case)
    found, public = _discover(tmp_path / "source", tmp_path, {"layout": "brats"})
    assert "grade" not in found.subjects.columns
    assert len(found.subjects) == 2
    with pytest.raises(InputError) as raised:
        check_filters_against_subjects("concat_128", {"grade": ("HGG",)}, found.subjects, "brats")
    message = str(raised.value)
    assert message.startswith("datasets.concat_128.filters.grade: the BraTS cohort at input.source has no grade")
    assert "Remove the filter" in message
    assert "name_mapping.csv" in message
    assert "BraTS2021_" not in message
    check_filters_against_subjects("concat_128", {"sequence": ("t1", "t2")}, found.subjects, "brats")
    with pytest.raises(InputError, match=r"filters.site: no discovered subject has the label site"):
        check_filters_against_subjects("t1", {"site": ("HH",)}, found.subjects, "brats")
    _assert_no_source_names(public, ["BraTS2021", "MICCAI"])


def test_ixi_three_sites_give_scanner_labels_and_t1_as_reference(tmp_path):
    root = tmp_path / "source"
    for subject, site in (("IXI002-Guys-0828", "Guys"), ("IXI012-HH-1211", "HH"), ("IXI035-IOP-0873", "IOP")):
        for sequence in ("T1", "T2", "PD"):
            _nifti(root / f"IXI-{sequence}" / f"{subject}-{sequence}.nii.gz")
    _nifti(root / "IXI-T1" / "IXI999-Mars-0001-T1.nii.gz")
    found, public = _discover(root, tmp_path, {"layout": "ixi"}, reference="t1")
    subjects = _by_key(found)
    assert set(subjects) == {"IXI002", "IXI012", "IXI035"}
    assert {row["sequences"] for row in subjects.values()} == {"t1,t2,pd"}
    assert subjects["IXI002"]["scanner"] == "Philips Gyroscan Intera 1.5T"
    assert subjects["IXI012"]["scanner"] == "Philips Intera 3T"
    assert subjects["IXI012"]["field_strength"] == "3"
    assert subjects["IXI035"]["manufacturer"] == "GE"
    assert subjects["IXI035"]["site"] == "IOP"
    assert list(found.ignored["kind"]) == ["NIfTI file"]
    _assert_no_source_names(public, ["IXI002", "IXI012", "IXI035", "IXI999", "Guys-0828", "Mars"])


def test_a_subject_without_the_configured_reference_sequence_is_ignored_with_why(tmp_path):
    root = tmp_path / "source"
    _nifti(root / "IXI002-Guys-0828-T1.nii.gz")
    _nifti(root / "IXI002-Guys-0828-T2.nii.gz")
    _nifti(root / "IXI012-HH-1211-T2.nii.gz")
    found, _ = _discover(root, tmp_path, {"layout": "ixi"}, reference="t1")
    assert len(found.subjects) == 1
    assert "has no t1 sequence (registration.reference_sequence)" in found.ignored["reason"].iloc[0]


def test_bids_participants_and_sidecars_become_labels(tmp_path):
    root = tmp_path / "source"
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "SALD", "BIDSVersion": "1.8.0"}))
    (root / "participants.tsv").write_text("participant_id\tage\tsex\nsub-031274\t23\tF\nsub-031275\t61\tM\n")
    (root / "T1w.json").write_text(json.dumps({"Manufacturer": "Siemens", "ManufacturersModelName": "TrioTim",
                                               "MagneticFieldStrength": 3}))
    for sub in ("031274", "031275"):
        _nifti(root / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz")
    _nifti(root / "sub-031275" / "anat" / "sub-031275_acq-fast_T2w.nii.gz")
    _nifti(root / "derivatives" / "sub-031274" / "anat" / "sub-031274_desc-brain_T1w.nii.gz")
    found, public = _discover(root, tmp_path, {"layout": "bids", "labels": {"scanner": "Siemens TrioTim 3T"}})
    subjects = _by_key(found)
    assert set(subjects) == {"sub-031274", "sub-031275"}
    one, two = subjects["sub-031274"], subjects["sub-031275"]
    assert one["sequences"] == "t1w"
    assert two["sequences"] == "t1w,t2w_acq-fast"
    assert (one["age"], one["sex"], two["age"]) == ("23", "F", "61")
    assert one["manufacturer"] == "Siemens"
    assert one["scanner_model"] == "TrioTim"
    assert one["field_strength"] == "3"
    assert one["scanner"] == two["scanner"] == "Siemens TrioTim 3T"
    _assert_no_source_names(public, ["031274", "031275"])


def test_pattern_layout_names_subjects_sequences_and_labels(tmp_path):
    root = tmp_path / "source"
    for site, patient in (("A", "p001"), ("B", "p002")):
        for sequence in ("t1", "flair"):
            _nifti(root / f"site-{site}" / f"{patient}_{sequence}.nii.gz")
    layout = {"layout": "pattern", "pattern": r"site-(?P<site>\w+)/(?P<subject>p\d+)_(?P<sequence>\w+)\.nii"}
    found, public = _discover(root, tmp_path, layout)
    subjects = _by_key(found)
    assert subjects["p002"]["site"] == "B"
    assert subjects["p002"]["sequences"] == "t1,flair"
    _assert_no_source_names(public, ["p001", "p002"])


# ------------------------------------------------------------------ DICOM study


def _set_b_value(folder: Path, b_value: float, series_uid: str, first_instance: int) -> list[Path]:
    """Relabel a written series as b-value images of one DWI series."""
    files = sorted(folder.glob("*.dcm"))
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.DiffusionBValue = b_value
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = "5"
        ds.InstanceNumber = str(first_instance + index)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"]
        ds.save_as(path, enforce_file_format=True)
    return files


def _study(root: Path, patient: str, manufacturer: str, field_strength: float, seed: int) -> Path:
    """A PACS-like study: a localizer, a T1 series and one DWI series holding b0 and b1000 volumes."""
    rng = np.random.default_rng(seed)
    study = root / f"{patient.replace('^', '_')}_19600101"
    shape = (16, 16, 8)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    common = dict(patient_name=patient, patient_id=f"ID{seed}", birth_date="19600101",
                  manufacturer=manufacturer, model_name="Model X", field_strength=field_strength,
                  uid_seed=f"{patient}-study")
    write_dicom_series(rng.random(shape) * 100, affine, study / "series1", series_description="Localizer",
                       series_number=1, **{**common, "uid_seed": f"{patient}-loc"})
    write_dicom_series(rng.random(shape) * 100 + 50, affine, study / "series2",
                       series_description="T1 MPRAGE sag", series_number=2, **{**common, "uid_seed": f"{patient}-t1"})
    # DWI: b0 and b1000 volumes in one series (one folder), as scanners export them
    b0 = write_dicom_series(rng.random(shape) * 400 + 100, affine, study / "dwi_b0",
                            series_description="ep2d_diff DWI", series_number=5, **{**common, "uid_seed": f"{patient}-b0"})
    b1000 = write_dicom_series(np.full(shape, 42.0) + rng.random(shape), affine, study / "dwi_b1000",
                               series_description="ep2d_diff DWI", series_number=5,
                               **{**common, "uid_seed": f"{patient}-b1000"})
    dwi = study / "series5"
    dwi.mkdir()
    uid = pydicom.uid.generate_uid(entropy_srcs=[patient, "dwi"])
    for b_value, files, start in ((0.0, b0, 1), (1000.0, b1000, 100)):
        for path in _set_b_value(files[0].parent, b_value, uid, start):
            path.rename(dwi / f"b{int(b_value)}-{path.name}")
        files[0].parent.rmdir()
    return study


RULES = [{"sequence": "t1", "series_description": "(?i)t1|mprage"},
         {"sequence": "dwi", "series_description": "(?i)diff|dwi", "b_value": 1000}]


def test_dicom_study_selects_series_by_rule_and_the_dwi_b_value(tmp_path):
    root = tmp_path / "source"
    _study(root, "DOE^JANE", "Siemens", 3.0, 1)
    _study(root, "ROE^RICHARD", "GE MEDICAL SYSTEMS", 1.5, 2)
    found, public = _discover(root, tmp_path, {"layout": "dicom_study", "series": RULES})
    subjects = _by_key(found)
    assert set(subjects) == {"DOE_JANE_19600101", "ROE_RICHARD_19600101"}
    jane = subjects["DOE_JANE_19600101"]
    assert jane["sequence"] == "t1"
    assert jane["sequences"] == "t1,dwi"
    assert jane["format"] == "dicom"
    assert (jane["manufacturer"], jane["scanner_model"], jane["field_strength"]) == ("Siemens", "Model X", "3")
    assert subjects["ROE_RICHARD_19600101"]["field_strength"] == "1.5"
    reasons = " | ".join(found.ignored["reason"])
    assert "matches no input.series rule" in reasons
    assert "other b-values than 1000" in reasons
    assert "Localizer" not in reasons
    staged = tmp_path / "private" / "staging" / jane["subject"]
    assert len(list((staged / "input").iterdir())) == 8
    assert len(list((staged / "sequences" / "dwi").iterdir())) == 8  # the b1000 images only
    _assert_no_source_names(public, ["DOE", "JANE", "ROE", "RICHARD", "19600101", "Localizer", "MPRAGE", "ep2d"])

    # ingest converts the b1000 images alone into one volume (dcm2niix), beside the T1
    out = tmp_path / "results" / "ingest" / jane["subject"]
    status = ingest_subject(staged / "input", "dicom", out, jane["subject"], kind=jane["kind"])
    status = ingest_other_sequences(staged, out, status)
    assert status["status"] == "ok"
    assert status["warning"] == ""
    dwi = np.asarray(nib.load(str(out / "sequences" / "dwi" / "volume.nii.gz")).dataobj)
    assert dwi.shape == (16, 16, 8)
    assert 40 < dwi.mean() < 45  # the b1000 volume, not b0 (~300)
    assert json.loads((out / "sequences" / "dwi" / "metadata.json").read_text())["manufacturer"] == "Siemens"


def test_multi_sequence_nifti_subject_ingests_every_sequence_and_the_mask(tmp_path):
    root = tmp_path / "source"
    case = "BraTS20_Training_001"
    for s, value in (("t1", 1.0), ("t2", 2.0), ("seg", 0.01)):
        _nifti(root / case / f"{case}_{s}.nii.gz", value)
    (root / case / f"{case}_flair.nii.gz").write_bytes(b"not a nifti")
    found, _ = _discover(root, tmp_path, {"layout": "brats"})
    subject = found.subjects["subject"][0]
    staged = tmp_path / "private" / "staging" / subject
    out = tmp_path / "ingest" / subject
    status = ingest_other_sequences(staged, out, ingest_subject(staged / "input", "nifti", out, subject))
    assert status["status"] == "ok"
    assert "sequence flair failed" in status["warning"]
    assert (out / "sequences" / "t2" / "volume.nii.gz").is_file()
    assert (out / "masks" / "seg" / "volume.nii.gz").is_file()
    assert not (out / "sequences" / "flair" / "volume.nii.gz").exists()


def test_dicom_study_splits_one_dwi_series_into_b1000_and_b0_sequences(tmp_path):
    """A second b-value rule on the same series takes the b0 images (for brain extraction on the
    b0, preprocessing.brain_extraction_sequence); the b1000 rule keeps its own images."""
    root = tmp_path / "source"
    _study(root, "DOE^JANE", "Siemens", 3.0, 1)
    rules = RULES + [{"sequence": "b0", "series_description": "(?i)diff|dwi", "b_value": 0}]
    found, _ = _discover(root, tmp_path, {"layout": "dicom_study", "series": rules})
    jane = _by_key(found)["DOE_JANE_19600101"]
    assert jane["sequence"] == "t1"
    assert set(jane["sequences"].split(",")) == {"t1", "dwi", "b0"}
    assert "other b-values" not in " | ".join(found.ignored["reason"])
    staged = tmp_path / "private" / "staging" / jane["subject"]
    assert len(list((staged / "sequences" / "dwi").iterdir())) == 8
    assert len(list((staged / "sequences" / "b0").iterdir())) == 8
    out = tmp_path / "results" / "ingest" / jane["subject"]
    status = ingest_other_sequences(staged, out, ingest_subject(staged / "input", "dicom", out, jane["subject"],
                                                                kind=jane["kind"]))
    assert status["status"] == "ok"
    b0 = np.asarray(nib.load(str(out / "sequences" / "b0" / "volume.nii.gz")).dataobj)
    dwi = np.asarray(nib.load(str(out / "sequences" / "dwi" / "volume.nii.gz")).dataobj)
    assert b0.mean() > 100
    assert 40 < dwi.mean() < 45   # b0 ~300, b1000 ~42
