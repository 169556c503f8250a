"""Dataset adapters on generated trees with the real layouts and names of BraTS, IXI and BIDS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.imaging.adapters import LayoutSettings, adapt


def touch(root: Path, relpath: str, text: str = "") -> str:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return relpath


def by_subject(records):
    out = {}
    for r in records:
        out.setdefault(r["subject_key"], {})[r["sequence"]] = r
    return out


def test_brats_2015_to_2021_and_2023_names_give_one_subject_per_case(tmp_path):
    files = [touch(tmp_path, f"MICCAI_BraTS_2019_Data_Training/{grade}/{case}/{case}_{s}.nii.gz")
             for grade, case in (("HGG", "BraTS19_2013_10_1"), ("LGG", "BraTS19_TMC_09043_1"))
             for s in ("t1", "t1ce", "t2", "flair", "seg")]
    files += [touch(tmp_path, f"BraTS-GLI-00000-000/BraTS-GLI-00000-000-{s}.nii.gz")
              for s in ("t1n", "t1c", "t2w", "t2f", "seg")]
    files.append(touch(tmp_path, "README.nii.gz"))
    records, ignored = adapt(files, LayoutSettings("brats"))
    subjects = by_subject(records)
    assert set(subjects) == {"BraTS19_2013_10_1", "BraTS19_TMC_09043_1", "BraTS-GLI-00000-000"}
    for case in subjects.values():
        assert set(case) == {"t1", "t1ce", "t2", "flair", "seg"}
        assert case["seg"]["role"] == "mask"
        assert case["t1"]["role"] == "image"
    assert subjects["BraTS19_2013_10_1"]["t2"]["labels"] == {"grade": "HGG"}
    assert subjects["BraTS19_TMC_09043_1"]["flair"]["labels"] == {"grade": "LGG"}
    assert subjects["BraTS-GLI-00000-000"]["t1ce"]["relpath"].endswith("-t1c.nii.gz")
    assert [i["relpath"] for i in ignored] == ["README.nii.gz"]


BRATS_2020_MAPPING = (
    "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,BraTS_2019_subject_ID,"
    "BraTS_2020_subject_ID\n"
    "HGG,Brats17_CBICA_AAB_1,Brats18_CBICA_AAB_1,NA,BraTS19_CBICA_AAB_1,BraTS20_Training_001\n"
    "LGG,Brats17_TCIA_101_1,Brats18_TCIA_101_1,TCGA-FG-6692,BraTS19_TCIA10_101_1,BraTS20_Training_002\n"
)


def test_brats_2020_grade_comes_from_name_mapping_csv_without_hgg_lgg_folders(tmp_path):
    data = "MICCAI_BraTS2020_TrainingData"
    touch(tmp_path, f"{data}/name_mapping.csv", BRATS_2020_MAPPING)
    files = [touch(tmp_path, f"{data}/{case}/{case}_{s}.nii.gz")
             for case in ("BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_003")
             for s in ("t1", "seg")]
    subjects = by_subject(adapt(files, LayoutSettings("brats"), root=tmp_path)[0])
    assert subjects["BraTS20_Training_001"]["t1"]["labels"] == {"grade": "HGG"}
    assert subjects["BraTS20_Training_002"]["seg"]["labels"] == {"grade": "LGG"}
    assert subjects["BraTS20_Training_003"]["t1"]["labels"] == {}  # not in the table: no grade
    # without the source folder (names only) nothing can be read: no grade, no error
    assert by_subject(adapt(files, LayoutSettings("brats"))[0])["BraTS20_Training_001"]["t1"]["labels"] == {}


def test_brats_mapping_without_grade_gives_no_grade_and_a_bad_table_names_its_line(tmp_path):
    data = "MICCAI_BraTS2020_ValidationData"
    touch(tmp_path, f"{data}/name_mapping_validation_data.csv", "BraTS_2020_subject_ID\nBraTS20_Validation_001\n")
    touch(tmp_path, f"{data}/name_mapping.csv", "BraTS_2020_subject_ID,TCGA_TCIA_subject_ID\nBraTS20_Validation_001,X\n")
    files = [touch(tmp_path, f"{data}/BraTS20_Validation_001/BraTS20_Validation_001_t1.nii.gz")]
    assert adapt(files, LayoutSettings("brats"), root=tmp_path)[0][0]["labels"] == {}
    touch(tmp_path, f"{data}/name_mapping.csv", "Grade,BraTS_2020_subject_ID\nGrade IV glioblastoma (TCGA-XX),BraTS20_Validation_001\n")
    with pytest.raises(InputError, match=r"name_mapping.csv: line 2: the Grade is not a short label") as raised:
        adapt(files, LayoutSettings("brats"), root=tmp_path)
    assert "TCGA" not in str(raised.value)
    touch(tmp_path, f"{data}/name_mapping.csv", "Grade,TCGA_TCIA_subject_ID\nHGG,TCGA-02-0001\n")
    with pytest.raises(InputError, match=r"no BraTS_<year>_subject_ID column"):
        adapt(files, LayoutSettings("brats"), root=tmp_path)


def test_ixi_names_give_site_scanner_and_sequence(tmp_path):
    files = [touch(tmp_path, name) for name in (
        "IXI-T1/IXI002-Guys-0828-T1.nii.gz", "IXI-T2/IXI002-Guys-0828-T2.nii.gz",
        "IXI-T1/IXI012-HH-1211-T1.nii.gz", "IXI-T1/IXI035-IOP-0873-T1.nii.gz",
        "IXI-T1/IXI999-Mars-0001-T1.nii.gz", "IXI-T1/notes.nii.gz")]
    records, ignored = adapt(files, LayoutSettings("ixi"))
    subjects = by_subject(records)
    assert set(subjects) == {"IXI002", "IXI012", "IXI035"}
    assert set(subjects["IXI002"]) == {"t1", "t2"}
    assert subjects["IXI002"]["t1"]["labels"]["scanner"] == "Philips Gyroscan Intera 1.5T"
    assert subjects["IXI012"]["t1"]["labels"]["scanner"] == "Philips Intera 3T"
    assert subjects["IXI035"]["t1"]["labels"]["manufacturer"] == "GE"
    assert {i["relpath"] for i in ignored} == {"IXI-T1/IXI999-Mars-0001-T1.nii.gz", "IXI-T1/notes.nii.gz"}
    assert "unknown IXI site 'Mars'" in ignored[0]["why"] or "unknown IXI site 'Mars'" in ignored[1]["why"]


def test_bids_entities_participants_sidecars_and_a_constant_scanner_label(tmp_path):
    touch(tmp_path, "dataset_description.json", json.dumps({"Name": "SALD-like", "BIDSVersion": "1.8.0"}))
    touch(tmp_path, "participants.tsv", "participant_id\tage\tsex\nsub-01\t23\tF\nsub-02\tn/a\tM\n")
    touch(tmp_path, "T1w.json", json.dumps({"Manufacturer": "Siemens", "MagneticFieldStrength": 3}))
    touch(tmp_path, "sub-02/ses-2/anat/sub-02_ses-2_acq-mprage_T1w.json",
          json.dumps({"ManufacturersModelName": "TrioTim", "MagneticFieldStrength": 1.5}))
    files = [touch(tmp_path, p) for p in (
        "sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/sub-01_T2w.nii.gz",
        "sub-02/ses-2/anat/sub-02_ses-2_acq-mprage_T1w.nii.gz",
        "sub-02/ses-2/anat/sub-02_ses-2_acq-mprage_run-2_T1w.nii.gz",
        "derivatives/fmriprep/sub-01/anat/sub-01_desc-preproc_T1w.nii.gz", "extra/scan.nii.gz")]
    layout = LayoutSettings("bids", constant_labels={"scanner": "Magnetom TrioTim"})
    records, ignored = adapt(files, layout, root=tmp_path)
    subjects = by_subject(records)
    assert set(subjects) == {"sub-01", "sub-02_ses-2"}
    assert set(subjects["sub-01"]) == {"t1w", "t2w"}
    assert set(subjects["sub-02_ses-2"]) == {"t1w_acq-mprage", "t1w_acq-mprage_run-2"}
    one = subjects["sub-01"]["t1w"]["labels"]
    assert one == {"age": "23", "sex": "F", "manufacturer": "Siemens", "field_strength": "3",
                   "scanner": "Magnetom TrioTim"}
    two = subjects["sub-02_ses-2"]["t1w_acq-mprage"]["labels"]
    assert two["field_strength"] == "1.5"
    assert two["scanner_model"] == "TrioTim"
    assert "age" not in two
    assert subjects["sub-01"]["t2w"]["labels"].get("manufacturer") is None  # T1w sidecar is not for T2w
    assert {i["relpath"].split("/")[0] for i in ignored} == {"derivatives", "extra"}


def test_pattern_layout_takes_labels_from_named_groups(tmp_path):
    files = ["site-A/p001_t1.nii.gz", "site-B/p002_t1.nii.gz", "site-B/p002_flair.nii.gz", "other.nii.gz"]
    layout = LayoutSettings("pattern", pattern=r"site-(?P<site>\w+)/(?P<subject>p\d+)_(?P<sequence>\w+)\.nii")
    records, ignored = adapt(files, layout)
    subjects = by_subject(records)
    assert subjects["p002"]["flair"]["labels"] == {"site": "B"}
    assert [i["relpath"] for i in ignored] == ["other.nii.gz"]
    with pytest.raises(InputError, match="named group 'subject'"):
        LayoutSettings("pattern", pattern=r"(?P<id>\w+)")


def test_two_inputs_for_one_subject_and_sequence_are_an_error_naming_both(tmp_path):
    files = ["a/IXI002-Guys-0828-T1.nii.gz", "b/IXI002-Guys-0828-T1.nii.gz"]
    with pytest.raises(InputError, match="two inputs for subject 'IXI002', sequence 't1'"):
        adapt(files, LayoutSettings("ixi"))
