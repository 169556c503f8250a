"""make_demo_cohort: a small cohort (4 head phantoms + 1 with a wrong voxel size + 1 corrupt) built from
the nilearn template."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy import ndimage

from pipeline_lib.cohorts.demo_cohort import (HEAD_LAYERS, WRONG_VOXEL_FACTOR, head_phantom, load_mni_template_image,
                                              make_demo_cohort, scanner_profile, simulate_subject)
from pipeline_lib.core.errors import InputError

N_SUBJECTS = 4
TEMPLATE_SHAPE = (99, 117, 95)  # MNI152 at 2 mm
HEAD_SHAPE = (119, 137, 115)  # plus 20 mm of margin on each side for skull and scalp


@pytest.fixture(scope="module")
def demo_cohort_pair(tmp_path_factory) -> tuple[Path, Path]:
    """The same cohort built twice, in different folders."""
    root = tmp_path_factory.mktemp("demo_cohort")
    for name in ("first", "second"):
        make_demo_cohort(root / name, n_subjects=N_SUBJECTS, seed=0)
    return root / "first", root / "second"


@pytest.fixture(scope="module")
def demo_cohort_dir(demo_cohort_pair) -> Path:
    return demo_cohort_pair[0]


@pytest.fixture(scope="module")
def demo_cohort_sheet(demo_cohort_dir) -> pd.DataFrame:
    return pd.read_csv(demo_cohort_dir / "samples.tsv", sep="\t", dtype=str)


@pytest.fixture(scope="module")
def demo_cohort_phi(demo_cohort_dir) -> dict:
    return json.loads((demo_cohort_dir / "planted_phi.json").read_text())


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _load(folder: Path, row: pd.Series) -> np.ndarray:
    """Voxel array of one readable subject, from NIfTI or from the DICOM slices."""
    path = folder / row["path"]
    if row["format"] == "dicom":
        slices = [pydicom.dcmread(f) for f in sorted(path.glob("*.dcm"))]
        return np.stack([s.pixel_array.T * float(s.RescaleSlope) + float(s.RescaleIntercept) for s in slices], axis=2)
    return nib.load(path).get_fdata()


def test_same_seed_gives_identical_files(demo_cohort_pair):
    first, second = map(_tree, demo_cohort_pair)
    assert sorted(first) == sorted(second)
    assert len(first) > 2 * HEAD_SHAPE[2]  # the DICOM slices are among them
    differing = [name for name in first if first[name] != second[name]]
    assert differing == []


def test_other_seed_gives_other_subject():
    template = np.asarray(load_mni_template_image(2).dataobj)
    scanner = scanner_profile(0)
    a = simulate_subject(template, scanner, seed=0, subject_index=1, voxel_mm=2.0)
    b = simulate_subject(template, scanner, seed=1, subject_index=1, voxel_mm=2.0)
    again = simulate_subject(template, scanner, seed=0, subject_index=1, voxel_mm=2.0)
    np.testing.assert_array_equal(a, again)
    assert np.abs(a - b).mean() > 0.05 * np.abs(a).mean()


def test_sample_sheet_lists_every_format(demo_cohort_dir, demo_cohort_sheet):
    sheet = demo_cohort_sheet
    assert list(sheet.columns) == ["subject", "path", "scanner", "format"]
    assert len(sheet) == N_SUBJECTS + 2  # plus the wrong-geometry and the corrupt file
    assert sheet["subject"].is_unique
    assert all(re.fullmatch(r"demo-\d\d", s) for s in sheet["subject"])
    assert set(sheet["format"]) == {"dicom", "nifti"}
    assert (sheet["format"] == "dicom").sum() == N_SUBJECTS // 2
    nifti_paths = sheet.loc[sheet["format"] == "nifti", "path"]
    assert any(p.endswith(".nii") for p in nifti_paths)
    assert any(p.endswith(".nii.gz") for p in nifti_paths)
    assert set(sheet["scanner"]) == {"scanner-A", "scanner-B"}
    # Each scanner has both a DICOM and a NIfTI subject, so format does not stand in for scanner.
    assert sheet.groupby("scanner")["format"].nunique().min() == 2
    for path in sheet["path"]:
        assert not Path(path).is_absolute()
        assert (demo_cohort_dir / path).exists()
    for row in sheet[sheet["format"] == "dicom"].itertuples():
        assert (demo_cohort_dir / row.path).is_dir()
        assert len(list((demo_cohort_dir / row.path).glob("*.dcm"))) == HEAD_SHAPE[2]


def test_format_and_suffix_do_not_follow_scanner():
    from pipeline_lib.cohorts.demo_cohort import _assign_formats

    formats = _assign_formats(n_subjects=12, n_scanners=2, dicom_fraction=0.5)
    assert formats.count("dicom") == 6
    assert formats.count("nii") == formats.count("nii.gz") == 3
    for scanner in range(2):
        assert set(formats[scanner::2]) == {"dicom", "nii", "nii.gz"}
    assert _assign_formats(3, 1, 0.0) == ["nii.gz", "nii", "nii.gz"]
    assert _assign_formats(3, 2, 1.0) == ["dicom"] * 3


def test_readable_volumes_are_finite_3d(demo_cohort_dir, demo_cohort_sheet, demo_cohort_phi):
    corrupt = set(demo_cohort_phi["corrupt_subjects"])
    readable = demo_cohort_sheet[~demo_cohort_sheet["subject"].isin(corrupt)]
    assert len(readable) == N_SUBJECTS + 1
    for _, row in readable.iterrows():
        volume = _load(demo_cohort_dir, row)
        assert volume.shape == HEAD_SHAPE, row["subject"]
        assert np.all(np.isfinite(volume))
        assert volume.max() > 100 * max(volume.min(), 1e-3)


def test_nifti_and_dicom_share_the_template_world(demo_cohort_dir, demo_cohort_sheet, demo_cohort_phi):
    head_affine = head_phantom(load_mni_template_image(2)).affine
    (wrong,) = demo_cohort_phi["wrong_geometry_subjects"]
    for _, row in demo_cohort_sheet[demo_cohort_sheet["format"] == "nifti"].iterrows():
        image = nib.as_closest_canonical(nib.load(demo_cohort_dir / row["path"]))
        if row["subject"] == wrong:
            # the header claims larger voxels than the data has: a head 1.5 times too large
            np.testing.assert_allclose(image.affine[:3, :3], head_affine[:3, :3] * WRONG_VOXEL_FACTOR, atol=1e-4)
        else:
            np.testing.assert_allclose(image.affine, head_affine, atol=1e-4)
    orientations = {nib.aff2axcodes(nib.load(demo_cohort_dir / p).affine) for p in demo_cohort_sheet["path"] if ".nii" in p}
    assert orientations == {("R", "A", "S"), ("L", "A", "S")}


def test_corrupt_file_fails_to_load(demo_cohort_dir, demo_cohort_sheet, demo_cohort_phi):
    (corrupt,) = demo_cohort_phi["corrupt_subjects"]
    row = demo_cohort_sheet.set_index("subject").loc[corrupt]
    assert row["format"] == "nifti"
    assert row["path"].endswith(".nii.gz")
    image = nib.load(demo_cohort_dir / row["path"])  # the header is intact ...
    assert image.shape == HEAD_SHAPE
    with pytest.raises(Exception):  # ... the voxel data is not
        image.get_fdata()


def test_dicom_headers_carry_planted_phi(demo_cohort_dir, demo_cohort_sheet, demo_cohort_phi):
    dicom_rows = demo_cohort_sheet[demo_cohort_sheet["format"] == "dicom"]
    assert len(dicom_rows) == 2
    for row in dicom_rows.itertuples():
        planted = demo_cohort_phi["subjects"][row.subject]
        assert re.fullmatch(r"Phantom\^[A-Z][a-z]+\^\d+", planted["patient_name"])
        assert re.fullmatch(r"PHI-ID-\d{6}", planted["patient_id"])
        assert re.fullmatch(r"19[3-6]\d(0[1-9]|1[0-2])(0[1-9]|1\d|2[0-8])", planted["birth_date"])
        for f in sorted((demo_cohort_dir / row.path).glob("*.dcm"))[::30]:
            ds = pydicom.dcmread(f)
            assert str(ds.PatientName) == planted["patient_name"]
            assert ds.PatientID == planted["patient_id"]
            assert ds.PatientBirthDate == planted["birth_date"]
            assert ds.InstitutionName == planted["institution_name"]
            assert ds.Manufacturer
            assert ds.ManufacturerModelName
    profiles = {scanner_profile(i).label: scanner_profile(i) for i in range(2)}
    models = {r.scanner: pydicom.dcmread(next((demo_cohort_dir / r.path).glob("*.dcm"))).ManufacturerModelName for r in dicom_rows.itertuples()}
    assert models == {label: profiles[label].model_name for label in models}
    assert len(set(models.values())) == len(models)


def test_planted_phi_is_distinct_and_absent_from_names(demo_cohort_dir, demo_cohort_phi):
    ids = [s["patient_id"] for s in demo_cohort_phi["subjects"].values()]
    assert len(set(ids)) == len(ids) == N_SUBJECTS
    names = [str(p.relative_to(demo_cohort_dir)) for p in demo_cohort_dir.rglob("*")]
    sheet_text = (demo_cohort_dir / "samples.tsv").read_text()
    for planted in demo_cohort_phi["strings"]:
        assert not any(planted in name for name in names)
        assert planted not in sheet_text
    # NIfTI subjects carry identifiers in their description field too.
    nifti = {k: v for k, v in demo_cohort_phi["subjects"].items() if v["planted_in"] == "NIfTI descrip"}
    assert len(nifti) == 2
    for subject, planted in nifti.items():
        (path,) = [p for p in demo_cohort_dir.glob(f"{subject}.nii*")]
        assert planted["patient_id"] in nib.load(path).header["descrip"].item().decode()


def test_head_phantom_wraps_the_brain_in_csf_skull_and_scalp():
    brain = load_mni_template_image(2)
    head = head_phantom(brain)
    data, brain_data = np.asarray(head.dataobj), np.asarray(brain.dataobj)
    assert data.shape == HEAD_SHAPE
    # the brain stays where it was in the world: the same voxel after the affine shift
    centre = np.array(brain_data.shape) // 2
    moved = np.rint(np.linalg.solve(head.affine, brain.affine @ [*centre, 1])[:3]).astype(int)
    assert data[tuple(moved)] == pytest.approx(brain_data[tuple(centre)], abs=1e-6)
    # a ray leaving the brain upwards meets dark CSF, dark bone, bright marrow, bright fat, then air
    column = data[moved[0], moved[1], moved[2]:]
    outside = np.flatnonzero(np.asarray(brain_data[centre[0], centre[1], centre[2]:]) <= 0.05)[0]
    profile = column[outside:]
    fat = max(v for _, v in HEAD_LAYERS)
    assert profile[:2].min() < 0.2
    assert profile.max() > 0.8 * fat
    assert profile[-1] < 0.01
    # skull and scalp add far more volume than the brain has: what brain extraction must remove
    assert (data > 0.05).sum() > 1.8 * (brain_data > 0.05).sum()


def test_scanner_classes_differ_in_noise_and_blur():
    template = np.asarray(load_mni_template_image(2).dataobj)
    a, b = scanner_profile(0), scanner_profile(1)
    noise = {}
    for profile in (a, b):
        clean = simulate_subject(template, dataclasses.replace(profile, noise=0.0), 0, 0, 2.0)
        background = clean < 1e-4 * profile.gain  # air, after deformation and blur
        assert background.mean() > 0.2
        noisy = simulate_subject(template, profile, 0, 0, 2.0)
        noise[profile.label] = noisy[background].std() / profile.gain
    # Rician noise on zero signal is Rayleigh-distributed: std = 0.655 sigma.
    assert noise["scanner-A"] == pytest.approx(0.655 * a.noise, rel=0.1)
    assert noise["scanner-B"] > 2 * noise["scanner-A"]

    def sharpness(profile) -> float:
        clean = simulate_subject(template, dataclasses.replace(profile, noise=0.0, gamma=1.0), 0, 0, 2.0)
        # Mean absolute Laplacian: fine detail, which the point-spread function removes.
        return float(np.mean(np.abs(ndimage.laplace(clean / profile.gain))))

    assert sharpness(a) > 1.5 * sharpness(b)


def test_rebuild_replaces_earlier_cohort_only(tmp_path):
    out = tmp_path / "demo"
    make_demo_cohort(out, n_subjects=1, dicom_fraction=0.0)
    sheet = pd.read_csv(out / "samples.tsv", sep="\t")
    assert list(sheet["format"]) == ["nifti"] * 3
    assert (out / "demo-01.nii.gz").exists()
    make_demo_cohort(out, n_subjects=1, dicom_fraction=1.0)
    assert sorted(p.name for p in out.iterdir()) == ["demo-01", "demo-02.nii.gz", "demo-03.nii.gz",
                                                     "planted_phi.json", "samples.tsv"]

    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="refusing"):
        make_demo_cohort(foreign, n_subjects=1)
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "demo"]  # no half-built folder left


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        (dict(n_subjects=0), "n_subjects"),
        (dict(n_scanners=27), "n_scanners"),
        (dict(dicom_fraction=1.5), "dicom_fraction"),
        (dict(resolution_mm=0), "resolution_mm"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs, problem):
    with pytest.raises(InputError, match=problem):
        make_demo_cohort(tmp_path / "demo", **kwargs)
    assert not (tmp_path / "demo").exists()
