"""Input discovery: sample-sheet validation, directory scans, pseudonym tables."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline_lib.imaging.dicom import write_dicom_series
from pipeline_lib.imaging.discovery import discover_inputs, is_dicom_file, load_schema, write_staging
from pipeline_lib.core.errors import InputError
from pipeline_lib.imaging.pseudonym import pseudonymise

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "samples.schema.yaml"
SALT = "test-salt"


def _nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _dicom_series(folder: Path) -> Path:
    volume = np.arange(6 * 6 * 3, dtype=np.float64).reshape(6, 6, 3)
    write_dicom_series(volume, np.eye(4), folder, patient_name="ROE^RICHARD", patient_id="X99",
                       birth_date="19700101", manufacturer="ACME", model_name="M1",
                       field_strength=1.5, series_description="T1", uid_seed=str(folder))
    return folder


def _sheet(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------ sample sheet


def test_schema_is_valid_draft_2020_12():
    schema = load_schema(SCHEMA)
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["required"]) == {"subject", "path"}


def test_sample_sheet_resolves_paths_and_keeps_labels(tmp_path):
    _nifti(tmp_path / "data" / "a.nii.gz")
    _dicom_series(tmp_path / "data" / "b_series")
    sheet = _sheet(tmp_path / "samples.tsv",
                   "subject\tpath\tscanner\tdiagnosis\n"
                   "HOSP-001\tdata/a.nii.gz\tprisma\tcontrol\n"
                   "HOSP-002\tdata/b_series\tskyra\tpatient\n"
                   "HOSP-003\tdata/missing.nii\tprisma\t\n")

    found = discover_inputs(sheet, SALT, SCHEMA)
    linkage, subjects = found.linkage, found.subjects

    assert list(linkage.columns) == ["subject", "source_key", "path", "format", "kind", "sequence"]
    assert list(subjects.columns) == ["subject", "format", "kind", "scanner", "diagnosis"]
    assert list(linkage["subject"]) == sorted(linkage["subject"])
    assert list(subjects["subject"]) == list(linkage["subject"])
    row = linkage.set_index("source_key")
    assert row.loc["HOSP-001", "subject"] == pseudonymise("HOSP-001", SALT)
    assert row.loc["HOSP-001", "path"] == str((tmp_path / "data" / "a.nii.gz").resolve())
    assert row.loc["HOSP-001", "format"] == "nifti"
    assert row.loc["HOSP-002", "format"] == "dicom"
    # a missing file is recorded, not fatal: ingest reports it per subject
    assert row.loc["HOSP-001", "kind"] == "NIfTI file"
    assert row.loc["HOSP-003", "kind"] == "missing input"
    assert row.loc["HOSP-002", "kind"] == "DICOM series (3 files)"
    assert found.ignored.empty
    labels = subjects.set_index("subject").loc[pseudonymise("HOSP-002", SALT)]
    assert (labels["scanner"], labels["diagnosis"], labels["format"]) == ("skyra", "patient", "dicom")


def test_subjects_table_holds_no_key_or_path(tmp_path):
    _nifti(tmp_path / "SMITH_JOHN.nii.gz")
    sheet = _sheet(tmp_path / "s.tsv", "subject\tpath\tsite\nMRN-4711\tSMITH_JOHN.nii.gz\tnorth\n")
    found = discover_inputs(sheet, SALT, SCHEMA)
    text = found.subjects.to_csv(sep="\t") + found.public_ignored().to_csv(sep="\t")
    for secret in ("MRN-4711", "SMITH", str(tmp_path)):
        assert secret not in text
    assert "source_key" not in found.subjects.columns
    assert "path" not in found.subjects.columns


def test_sheet_missing_column_names_sheet_and_column(tmp_path):
    sheet = _sheet(tmp_path / "bad.tsv", "subject\tfile\nA\ta.nii\n")
    with pytest.raises(InputError, match=r"bad\.tsv.*required column.*path"):
        discover_inputs(sheet, SALT, SCHEMA)


def test_sheet_duplicate_subject_names_lines(tmp_path):
    sheet = _sheet(tmp_path / "dup.tsv", "subject\tpath\nA\ta.nii\nB\tb.nii\nA\tc.nii\n")
    with pytest.raises(InputError, match=r"dup\.tsv: lines 2, 4: duplicate subject"):
        discover_inputs(sheet, SALT, SCHEMA)


def test_sheet_row_errors_name_line_and_column(tmp_path):
    sheet = _sheet(tmp_path / "rows.tsv",
                   "subject\tpath\tformat\nA\ta.nii\tnifti\nB\t\tdicom\nC\tc.nii\tanalyze\n")
    with pytest.raises(InputError) as caught:
        discover_inputs(sheet, SALT, SCHEMA)
    message = str(caught.value)
    assert "rows.tsv: line 3: column 'path'" in message  # empty path
    assert "rows.tsv: line 4: column 'format'" in message
    assert "analyze" in message
    assert "line 2" not in message


def test_sheet_reserved_label_column_is_rejected(tmp_path):
    sheet = _sheet(tmp_path / "r.tsv", "subject\tpath\tsplit\nA\ta.nii\ttrain\n")
    with pytest.raises(InputError, match=r"r\.tsv: column name\(s\) not allowed: split"):
        discover_inputs(sheet, SALT, SCHEMA)


def test_empty_sheet_and_missing_source_are_errors(tmp_path):
    with pytest.raises(InputError, match="no rows"):
        discover_inputs(_sheet(tmp_path / "e.tsv", "subject\tpath\n"), SALT, SCHEMA)
    with pytest.raises(InputError, match="input.source: .*nowhere does not exist"):
        discover_inputs(tmp_path / "nowhere", SALT, SCHEMA)


# -------------------------------------------------------------------- directory


@pytest.fixture()
def cohort_dir(tmp_path) -> Path:
    """A mixed tree: BIDS NIfTI (with and without session), plain NIfTI, DICOM folders, clutter."""
    root = tmp_path / "cohort"
    _nifti(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    (root / "sub-01" / "anat" / "sub-01_T1w.json").write_text('{"MagneticFieldStrength": 3}')
    _nifti(root / "sub-02" / "ses-pre" / "anat" / "sub-02_ses-pre_T1w.nii")
    _nifti(root / "flat" / "sub-03_T1w.nii.gz")  # BIDS entities in the file name only
    _nifti(root / "site1" / "scan7.nii.gz")
    _dicom_series(root / "sub-04" / "dicom")
    _dicom_series(root / "pacs" / "export" / "series3")
    _nifti(root / "derivatives" / "sub-01" / "sub-01_T1w_brain.nii.gz")  # processed copy
    _nifti(root / ".hidden" / "x.nii.gz")
    (root / ".DS_Store").write_bytes(b"\0" * 200)
    (root / "site1" / "notes.txt").write_text("not an image")
    (root / "site1" / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)
    return root


def test_directory_scan_finds_bids_nifti_and_dicom(cohort_dir):
    discovered = discover_inputs(cohort_dir, SALT, SCHEMA)
    linkage, subjects = discovered.linkage, discovered.subjects

    found = dict(zip(linkage["source_key"], linkage["format"]))
    assert found == {
        "sub-01": "nifti",
        "sub-02_ses-pre": "nifti",
        "sub-03": "nifti",
        "site1/scan7": "nifti",
        "sub-04": "dicom",
        "pacs/export/series3": "dicom",
    }
    paths = dict(zip(linkage["source_key"], linkage["path"]))
    assert paths["sub-04"] == str((cohort_dir / "sub-04" / "dicom").resolve())
    assert paths["sub-01"] == str((cohort_dir / "sub-01" / "anat" / "sub-01_T1w.nii.gz").resolve())
    assert list(linkage["subject"]) == sorted(linkage["subject"])
    assert list(subjects.columns) == ["subject", "format", "kind"]
    assert set(subjects["subject"]) == {pseudonymise(k, SALT) for k in found}
    # everything else is listed with its reason; the BIDS sidecar belongs to its image
    ignored = dict(zip(discovered.ignored["path"], discovered.ignored["kind"]))
    assert ignored == {
        str(cohort_dir / "derivatives"): "BIDS derivatives folder",
        str(cohort_dir / ".hidden"): "hidden folder",
        str(cohort_dir / ".DS_Store"): "hidden file",
        str(cohort_dir / "site1" / "notes.txt"): "other file",
        str(cohort_dir / "site1" / "picture.png"): "other file",
    }
    assert all(discovered.ignored["entry"].str.fullmatch(r"entry-[0-9a-f]{10}"))


def test_directory_scan_is_stable_and_salted(cohort_dir):
    first = discover_inputs(cohort_dir, SALT, SCHEMA).linkage
    again = discover_inputs(cohort_dir, SALT, SCHEMA).linkage
    other = discover_inputs(cohort_dir, "another-salt", SCHEMA).linkage
    assert first.equals(again)
    assert set(first["subject"]).isdisjoint(other["subject"])
    with pytest.raises(InputError, match="salt"):
        discover_inputs(cohort_dir, "", SCHEMA)


def test_two_images_for_one_bids_subject_are_both_set_aside(tmp_path):
    _nifti(tmp_path / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    _nifti(tmp_path / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    _nifti(tmp_path / "sub-02" / "anat" / "sub-02_T1w.nii.gz")
    found = discover_inputs(tmp_path, SALT, SCHEMA)
    assert list(found.linkage["source_key"]) == ["sub-02"]
    assert len(found.ignored) == 2
    assert found.ignored["reason"].str.contains(
        f"one of 2 inputs for subject {pseudonymise('sub-01', SALT)}.*sample sheet").all()


def test_directory_without_images_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(InputError, match=r"input.source: no NIfTI file or DICOM series found \(ignored: 1 other file\)"):
        discover_inputs(tmp_path, SALT, SCHEMA)


def test_dicom_detection_by_preamble_and_suffix(tmp_path):
    series = _dicom_series(tmp_path / "s")
    first = sorted(series.iterdir())[0]
    renamed = tmp_path / "no_suffix"
    renamed.write_bytes(first.read_bytes())
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "DICOMDIR").write_bytes(first.read_bytes())
    (tmp_path / "plain").write_bytes(b"x" * 300)
    assert is_dicom_file(first)
    assert is_dicom_file(renamed)
    assert is_dicom_file(tmp_path / "empty.dcm")  # suffix rule; ingest rejects it later
    assert not is_dicom_file(tmp_path / "DICOMDIR")
    assert not is_dicom_file(tmp_path / "plain")


# -------------------------------------------------------------------- staging


def test_staging_links_hold_only_accepted_files_and_their_sources_times(tmp_path):
    root = tmp_path / "in"
    _nifti(root / "a.nii.gz")
    (root / "a.json").write_text('{"MagneticFieldStrength": 3}')
    _dicom_series(root / "s")
    os.mkfifo(root / "s" / "pipe.dcm")
    os.symlink("/etc/hostname", root / "s" / "outside.dcm")
    found = discover_inputs(root, SALT, SCHEMA)
    write_staging(found, tmp_path / "staging")

    link = tmp_path / "staging" / pseudonymise("a", SALT) / "input"
    assert os.readlink(link) == str((root / "a.nii.gz").resolve())
    assert os.lstat(link).st_mtime_ns == os.stat(root / "a.nii.gz").st_mtime_ns
    assert (link.parent / "sidecar.json").read_text() == '{"MagneticFieldStrength": 3}'
    series = tmp_path / "staging" / pseudonymise("s", SALT) / "input"
    assert not series.is_symlink()
    assert sorted(p.name for p in series.iterdir()) == ["00001.dcm", "00002.dcm", "00003.dcm"]
    assert [os.readlink(p) for p in sorted(series.iterdir())] == [str(p.resolve()) for p in sorted(
        (root / "s").glob("IM-*.dcm"))]
    assert sorted(found.ignored["kind"]) == ["named pipe (FIFO)", "symbolic link"]
    assert found.linkage.set_index("source_key").loc["s", "kind"] == "DICOM series (3 files)"
