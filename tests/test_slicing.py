"""Normalisation, axial slicing, resizing, subject-level split and the slice dataset files."""

from __future__ import annotations

import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.imaging.slice_geometry import SliceSelection
from pipeline_lib.imaging.slicing import (SliceSpec, build_slice_dataset, extract_axial_slices, normalise_volume,
                                  resize_slices, split_subjects)

# ------------------------------------------------------------------ normalise_volume


def test_normalise_clips_at_the_percentile_of_all_voxels():
    volume = np.arange(1, 101, dtype=np.float32).reshape(4, 5, 5)  # 1..100
    out = normalise_volume(volume, 95)
    ceiling = np.percentile(np.arange(1, 101), 95)  # 95.05 (linear interpolation)
    assert out.dtype == np.float32
    assert out.max() == 1.0
    assert out.min() >= 0
    flat = out.ravel()
    assert np.all(flat[95:] == 1.0)  # 96..100 clipped
    np.testing.assert_allclose(flat[:95], np.arange(1, 96) / ceiling, rtol=1e-6)


def test_normalise_percentile_counts_background_voxels():
    volume = np.zeros(100, np.float32)
    volume[80:] = np.arange(1, 21)  # 80 background voxels, 20 brain voxels 1..20
    out = normalise_volume(volume, 95)
    # over all voxels the 95th percentile is 15.05, not the 95th of the brain voxels (19.05)
    np.testing.assert_allclose(out[80:85], np.arange(1, 6) / 15.05, rtol=1e-6)
    assert out.max() == 1.0
    assert np.count_nonzero(out == 1.0) == 5


def test_normalise_sets_negative_undershoot_to_zero():
    volume = np.array([-5.0, 0.0, 2.0, 4.0, 8.0], np.float32)
    out = normalise_volume(volume, 100)
    np.testing.assert_allclose(out, [0, 0, 0.25, 0.5, 1.0])


@pytest.mark.parametrize("volume, match", [
    (np.zeros((4, 4, 4)), "all zero"),
    (np.full((4, 4, 4), -3.0), "all zero"),
    (np.array([1.0, np.nan, 2.0]), "NaN"),
    (np.r_[np.zeros(97), 1.0, 2.0, 3.0], "percentile is 0"),
])
def test_normalise_rejects_unusable_volumes(volume, match):
    with pytest.raises(InputError, match=match):
        normalise_volume(volume, 95)


def test_normalise_rejects_bad_percentile():
    with pytest.raises(InputError, match="clip_percentile"):
        normalise_volume(np.ones(10), 0)


# ------------------------------------------------------------------ extract_axial_slices


def test_extract_drops_top_and_bottom_slices():
    volume = np.zeros((6, 5, 10), np.float32)
    volume[..., :] = np.arange(10)  # each axial slice holds its z index
    slices, kept = extract_axial_slices(volume, drop_top=2, drop_bottom=3)
    assert slices.shape == (5, 5, 6)  # (n, H = anterior-posterior, W = left-right)
    assert kept.tolist() == [3, 4, 5, 6, 7]
    assert [float(s.mean()) for s in slices] == [3, 4, 5, 6, 7]


def test_extract_orientation_is_anterior_up_patient_right_on_the_left():
    volume = np.zeros((6, 5, 3), np.float32)  # RAS: x left->right, y posterior->anterior
    volume[5, 4, 1] = 1.0  # right anterior
    volume[0, 0, 1] = 2.0  # left posterior
    slices, _ = extract_axial_slices(volume, 1, 1)
    assert slices.shape == (1, 5, 6)
    assert slices[0, 0, 0] == 1.0  # top left of the image
    assert slices[0, -1, -1] == 2.0  # bottom right


@pytest.mark.parametrize("top, bottom", [(5, 5), (10, 0), (0, 11)])
def test_extract_rejects_dropping_every_slice(top, bottom):
    with pytest.raises(InputError, match="leaves none of the 10"):
        extract_axial_slices(np.ones((4, 4, 10)), top, bottom)


# ------------------------------------------------------------------ resize_slices


def test_resize_shrinks_by_area_averaging():
    rng = np.random.default_rng(0)
    slices = rng.random((3, 8, 8)).astype(np.float32)
    out = resize_slices(slices, 4)
    expected = slices.reshape(3, 4, 2, 4, 2).mean(axis=(2, 4))
    assert out.shape == (3, 4, 4)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_resize_enlarges_bilinearly_within_unit_range():
    slices = np.zeros((2, 4, 4), np.float32)
    slices[:, :, 2:] = 1.0
    out = resize_slices(slices, 16)
    assert out.shape == (2, 16, 16)
    assert out.min() >= 0
    assert out.max() <= 1
    row = out[0, 5]
    assert np.all(np.diff(row) >= 0)
    assert 0 < row[8] < 1  # a smooth ramp, not a hard step


def test_resize_same_size_keeps_values_and_clips():
    slices = np.array([[[0.5, 1.2], [-0.1, 0.25]]], np.float32)
    np.testing.assert_array_equal(resize_slices(slices, 2), [[[0.5, 1.0], [0.0, 0.25]]])


# ------------------------------------------------------------------ split_subjects


SUBJECTS = [f"sub-{i:010x}" for i in range(20)]


def test_split_is_by_subject_deterministic_and_order_independent():
    split = split_subjects(SUBJECTS, 0.25, seed=1)
    assert sorted(split) == sorted(SUBJECTS)
    assert set(split.values()) == {"train", "test"}
    assert sum(v == "test" for v in split.values()) == 5
    shuffled = SUBJECTS[:]
    random.Random(3).shuffle(shuffled)
    assert split_subjects(shuffled, 0.25, seed=1) == split
    assert split_subjects(SUBJECTS, 0.25, seed=1) == split
    assert split_subjects(SUBJECTS, 0.25, seed=2) != split


def test_split_puts_someone_in_each_part():
    assert sorted(split_subjects(["sub-a", "sub-b"], 0.01, 0).values()) == ["test", "train"]
    assert sorted(split_subjects(["sub-a", "sub-b", "sub-c"], 0.99, 0).values()) == ["test", "test", "train"]
    assert split_subjects(["sub-a"], 0.5, 0) == {"sub-a": "train"}


def test_split_rejects_bad_input():
    with pytest.raises(InputError, match="test_fraction"):
        split_subjects(SUBJECTS, 1.0, 0)
    with pytest.raises(InputError, match="sub-a"):
        split_subjects(["sub-a", "sub-b", "sub-a"], 0.5, 0)


# ------------------------------------------------------------------ build_slice_dataset


def _spec(size: int, test_fraction: float) -> SliceSpec:
    """Seed 001's protocol on a 10-slice grid: drop 3 low and 2 high axial slices."""
    return SliceSpec(selection=SliceSelection("drop", low=3, high=2), size=(size, size), test_fraction=test_fraction)


def _write_volume(path: Path, data: np.ndarray, axcodes=("R", "A", "S")) -> Path:
    image = nib.Nifti1Image(data.astype(np.float32), np.diag([2.0, 2.0, 4.0, 1.0]))
    if axcodes != ("R", "A", "S"):
        ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")),
                                               nib.orientations.axcodes2ornt(axcodes))
        image = image.as_reoriented(ornt)
    nib.save(image, str(path))
    return path


@pytest.fixture
def slicing_cohort(tmp_path):
    """Three registered volumes 16x12x10 (one stored LPI) and a label table."""
    rng = np.random.default_rng(4)
    registered = {}
    for i, subject in enumerate(["sub-cc", "sub-aa", "sub-bb"]):
        data = rng.random((16, 12, 10)) * (i + 1) * 100
        registered[subject] = _write_volume(tmp_path / f"{subject}.nii.gz", data,
                                            ("L", "P", "I") if subject == "sub-bb" else ("R", "A", "S"))
    labels = pd.DataFrame({"subject": ["sub-aa", "sub-bb", "sub-cc", "sub-zz"],
                           "format": ["nifti"] * 4, "group": ["x", "y", "x", "y"],
                           "age": ["30", "41", "52", "63"]})
    return registered, labels


def test_build_dataset_rows_match_images_and_carry_labels(slicing_cohort, tmp_path):
    registered, labels = slicing_cohort
    images_path, table_path = tmp_path / "out" / "images.npy", tmp_path / "out" / "slices.tsv"
    table = build_slice_dataset(registered, labels, images_path, table_path, spec=_spec(size=8, test_fraction=0.34))
    images = np.load(images_path)
    assert images.shape == (15, 8, 8)
    assert images.dtype == np.float32
    assert images.min() >= 0
    assert images.max() <= 1
    written = pd.read_csv(table_path, sep="\t", dtype=str)
    assert len(written) == len(table) == len(images)
    assert list(written.columns) == ["row", "subject", "slice_index", "split", "axis", "position_mm", "augmented",
                                     "group", "age", "sequence"]
    assert set(written["sequence"]) == {"image"}
    assert set(written["axis"]) == {"axial"}
    assert set(written["augmented"]) == {"0"}
    assert written["row"].astype(int).tolist() == list(range(15))
    assert written["subject"].tolist() == ["sub-aa"] * 5 + ["sub-bb"] * 5 + ["sub-cc"] * 5
    assert written["slice_index"].astype(int).tolist() == [3, 4, 5, 6, 7] * 3
    assert written.groupby("subject")["age"].first().to_dict() == {"sub-aa": "30", "sub-bb": "41",
                                                                   "sub-cc": "52"}
    per_subject = written.groupby("subject")["split"].nunique()
    assert per_subject.max() == 1
    assert set(written["split"]) == {"train", "test"}
    assert sorted(p.name for p in images_path.parent.iterdir()) == ["images.npy", "slices.tsv"]


def test_build_dataset_rows_are_the_expected_slices(slicing_cohort, tmp_path):
    registered, _ = slicing_cohort
    build_slice_dataset(registered, None, tmp_path / "i.npy", tmp_path / "t.tsv", spec=_spec(size=12, test_fraction=0.5))
    images = np.load(tmp_path / "i.npy")
    # sub-bb is stored LPI on disk: its rows must equal slicing its RAS data directly
    ras = nib.as_closest_canonical(nib.load(str(registered["sub-bb"]))).get_fdata()
    expected, _ = extract_axial_slices(normalise_volume(ras, 95), 2, 3)
    # bit-identical to the single-dataset slicing of before (normalise, drop, resize)
    np.testing.assert_array_equal(images[5:10], resize_slices(expected, 12))
    assert "group" not in pd.read_csv(tmp_path / "t.tsv", sep="\t").columns


def test_build_dataset_names_a_volume_with_too_few_slices(slicing_cohort, tmp_path):
    registered, labels = slicing_cohort
    registered["sub-dd"] = _write_volume(tmp_path / "thin.nii.gz", np.ones((16, 12, 4)))
    labels = pd.concat([labels, pd.DataFrame({"subject": ["sub-dd"]})], ignore_index=True)
    with pytest.raises(InputError, match="thin.nii.gz"):
        build_slice_dataset(registered, labels, tmp_path / "i.npy", tmp_path / "t.tsv", spec=_spec(size=8, test_fraction=0.3))
    assert not (tmp_path / "i.npy").exists()


def test_build_dataset_rejects_labels_missing_a_subject(slicing_cohort, tmp_path):
    registered, labels = slicing_cohort
    with pytest.raises(InputError, match="sub-cc"):
        build_slice_dataset(registered, labels[labels["subject"] != "sub-cc"], tmp_path / "i.npy",
                            tmp_path / "t.tsv", spec=_spec(size=8, test_fraction=0.3))


def test_build_dataset_leaves_no_partial_array_when_a_volume_is_bad(slicing_cohort, tmp_path):
    registered, labels = slicing_cohort
    registered["sub-zz"] = _write_volume(tmp_path / "empty.nii.gz", np.zeros((16, 12, 10)))
    with pytest.raises(InputError, match="empty.nii.gz.*all zero"):
        build_slice_dataset(registered, labels, tmp_path / "out" / "i.npy", tmp_path / "out" / "t.tsv",
                            spec=_spec(size=8, test_fraction=0.3))
    assert list((tmp_path / "out").iterdir()) == []


def test_flagged_registrations_stay_out_of_slicing_unless_kept(tmp_path, caplog):
    import logging

    from pipeline_lib.core.qc import write_status
    from pipeline_lib.imaging.slicing import volumes_to_slice

    folders = []
    for subject, status in [("sub-000000000a", "ok"), ("sub-000000000b", "flagged"), ("sub-000000000c", "failed")]:
        folder = tmp_path / subject
        folder.mkdir()
        write_status(folder, {"subject": subject, "stage": "register", "status": status, "file": "", "reason": ""})
        folders.append(folder)
    with caplog.at_level(logging.INFO):
        excluded = volumes_to_slice(folders)
    assert excluded == {"sub-000000000a": folders[0] / "registered.nii.gz"}
    assert "1 flagged subject(s) left out of slicing" in caplog.text
    assert "sub-000000000b" in caplog.text
    assert sorted(volumes_to_slice(folders, "keep")) == ["sub-000000000a", "sub-000000000b"]


# ------------------------------------------------------------------ datasets: geometry, filters, augmentation


def _marker_volume(path: Path, marker_x: int) -> Path:
    """A 20x24x16 RAS volume (2 mm voxels, origin -20 mm in x) with a bright plane at x index
    ``marker_x`` (world x = -20 + 2 * marker_x mm) on a dim background."""
    data = np.full((20, 24, 16), 10.0, dtype=np.float32)
    data[marker_x] = 100.0
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-20.0, -24.0, -16.0]
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_integrated_geometry_puts_the_marker_at_its_level_and_size(tmp_path):
    """Sagittal slices at mm offsets around a level in world coordinates, non-square output:
    the slice at the marker's world x is the bright one, through build_slice_dataset."""
    registered = {s: {"t1": _marker_volume(tmp_path / f"{s}.nii.gz", 13)} for s in ("sub-aa", "sub-bb")}
    spec = SliceSpec.from_settings({"axis": "sagittal", "size": [12, 8],
                                    "selection": {"mode": "offsets_mm", "level_mm": 4.0,
                                                  "offsets_mm": [-4, -2, 0, 2, 4]},
                                    "test_fraction": 0.5})
    table = build_slice_dataset(registered, None, tmp_path / "i.npy", tmp_path / "t.tsv", spec)
    images = np.load(tmp_path / "i.npy")
    assert images.shape == (10, 12, 8)
    assert table["position_mm"].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0] * 2
    assert table["slice_index"].tolist() == [10, 11, 12, 13, 14] * 2
    means = images.reshape(10, -1).mean(axis=1)
    # world x = 6 mm is index 13, the marker: the 4th slice of each subject is the bright one
    assert np.argmax(means[:5]) == 3
    assert np.argmax(means[5:]) == 3
    assert set(table["sequence"]) == {"t1"}
    assert set(table["axis"]) == {"sagittal"}


def test_filters_keep_sequences_and_the_split_is_the_cohorts(tmp_path):
    """A pooled and a T1-only dataset of the same cohort: the filter keeps the T1 volumes, and every
    subject has the same split in both (drawn over the cohort before filtering)."""
    rng = np.random.default_rng(0)
    registered = {}
    for i in range(6):
        subject = f"sub-{i:02d}"
        registered[subject] = {seq: _write_volume(tmp_path / f"{subject}_{seq}.nii.gz", rng.random((16, 12, 10)) + 0.1)
                               for seq in (("t1", "t2") if i % 2 else ("t2",))}
    pooled = build_slice_dataset(registered, None, tmp_path / "p.npy", tmp_path / "p.tsv",
                                 SliceSpec.from_settings({"size": [8, 8], "selection": {"mode": "central", "n": 4},
                                                          "test_fraction": 0.5}))
    t1 = build_slice_dataset(registered, None, tmp_path / "a.npy", tmp_path / "a.tsv",
                             SliceSpec.from_settings({"size": [8, 8], "selection": {"mode": "central", "n": 4},
                                                      "test_fraction": 0.5, "filters": {"sequence": "t1"}}))
    assert len(pooled) == 4 * 9
    assert len(t1) == 4 * 3
    assert set(t1["sequence"]) == {"t1"}
    assert set(t1["subject"]) == {"sub-01", "sub-03", "sub-05"}
    assert t1["slice_index"].tolist()[:4] == [3, 4, 5, 6]
    split = dict(zip(pooled["subject"], pooled["split"]))
    assert all(split[s] == v for s, v in zip(t1["subject"], t1["split"]))
    with pytest.raises(InputError, match="filters.scanner: no such label column"):
        build_slice_dataset(registered, None, tmp_path / "b.npy", tmp_path / "b.tsv",
                            SliceSpec.from_settings({"filters": {"scanner": "x"}}))


def test_augmented_images_are_training_only_and_stay_out_of_the_reference_sets(tmp_path):
    from pipeline_lib.core.slices import load_split

    registered = {f"sub-{i}": _marker_volume(tmp_path / f"{i}.nii.gz", 10) for i in range(4)}
    spec = SliceSpec.from_settings({"size": [8, 8], "selection": {"mode": "central", "n": 2}, "test_fraction": 0.5,
                                    "augmentation": {"count": 3, "seed": 1}})
    table = build_slice_dataset(registered, None, tmp_path / "i.npy", tmp_path / "t.tsv", spec)
    augmented = table[table["augmented"] == 1]
    assert len(augmented) == 3 * 2
    assert set(augmented["split"]) == {"train"}
    assert len(table) == 4 * 2 + 6
    assert np.load(tmp_path / "i.npy").shape == (14, 8, 8)
    train, rows = load_split(tmp_path / "i.npy", tmp_path / "t.tsv", "train")
    assert len(train) == 4
    assert set(rows["augmented"]) == {0}       # reference sets: real slices only
    train, rows = load_split(tmp_path / "i.npy", tmp_path / "t.tsv", "train", augmented=True)
    assert len(train) == 10                                        # training: real + augmented


# ------------------------------------------------------------------ intensity_scale


def test_cohort_scale_keeps_a_known_gain_that_per_volume_erases(tmp_path):
    """One anatomy seen by scanners of gain 1 and 0.5 (training) and 4 (the test subject).
    per_volume: every copy normalises to the same images, the gain is gone. cohort: the ceiling is
    the brightest training volume's, so gain 0.5 comes out at half the gain-1 images and the test
    subject's gain 4 neither sets the ceiling nor escapes [0, 1]."""
    rng = np.random.default_rng(7)
    anatomy = np.zeros((16, 12, 10), np.float32)
    anatomy[3:13, 2:10, 1:9] = rng.random((10, 8, 8)) * 300 + 50   # a "brain" inside background
    subjects = [f"sub-{i}" for i in range(4)]
    split = split_subjects(subjects, 0.25, 0)
    test_subject = next(s for s in subjects if split[s] == "test")
    training = [s for s in subjects if s != test_subject]
    gains = {test_subject: 4.0, training[0]: 1.0, training[1]: 0.5, training[2]: 0.5}
    registered = {s: _write_volume(tmp_path / f"{s}.nii.gz", anatomy * gains[s]) for s in subjects}

    def images(scale: str) -> dict[str, np.ndarray]:
        spec = SliceSpec.from_settings({"size": [12, 16], "fit": "crop", "selection": {"mode": "central", "n": 4},
                                        "test_fraction": 0.25, "intensity_scale": scale})
        table = build_slice_dataset(registered, None, tmp_path / f"{scale}.npy", tmp_path / f"{scale}.tsv", spec)
        data = np.load(tmp_path / f"{scale}.npy")
        return {s: data[(table["subject"] == s).to_numpy()] for s in subjects}

    per_volume, cohort = images("per_volume"), images("cohort")
    bright, dim = training[0], training[1]
    np.testing.assert_allclose(per_volume[dim], per_volume[bright], atol=1e-6)      # gain erased
    np.testing.assert_allclose(cohort[bright], per_volume[bright], atol=1e-6)       # brightest: as before
    unclipped = cohort[bright] < 1    # the dim copy is not clipped where the bright one is
    np.testing.assert_allclose(cohort[dim][unclipped], 0.5 * cohort[bright][unclipped], atol=1e-6)  # gain kept
    assert unclipped.mean() > 0.9
    assert cohort[dim].max() < 0.6
    assert per_volume[dim].max() == pytest.approx(1.0)
    assert cohort[test_subject].max() == pytest.approx(1.0)
    assert cohort[test_subject].min() >= 0


def test_cohort_scale_is_per_sequence(tmp_path):
    """T2 ten times brighter than T1 on the same scanner: each sequence gets its own ceiling."""
    anatomy = np.zeros((16, 12, 10), np.float32)
    anatomy[3:13, 2:10, 1:9] = np.linspace(10, 200, 640).reshape(10, 8, 8)
    registered = {f"sub-{i}": {"t1": _write_volume(tmp_path / f"{i}_t1.nii.gz", anatomy),
                               "t2": _write_volume(tmp_path / f"{i}_t2.nii.gz", anatomy * 10)} for i in range(3)}
    spec = SliceSpec.from_settings({"size": [12, 16], "fit": "crop", "selection": {"mode": "central", "n": 2},
                                    "test_fraction": 0.34, "intensity_scale": "cohort"})
    table = build_slice_dataset(registered, None, tmp_path / "i.npy", tmp_path / "t.tsv", spec)
    data = np.load(tmp_path / "i.npy")
    t1, t2 = data[(table["sequence"] == "t1").to_numpy()], data[(table["sequence"] == "t2").to_numpy()]
    np.testing.assert_allclose(t1, t2, atol=1e-6)
    assert t1.max() == pytest.approx(1.0)


def test_unknown_intensity_scale_is_a_config_error():
    with pytest.raises(InputError, match="intensity_scale"):
        SliceSpec.from_settings({"intensity_scale": "zscore"})
