"""Stacked (multi-channel) slice datasets: ``datasets.<name>.channels``, on the BraTS-like stand-in."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings import DatasetSettings, read_settings
from pipeline_lib.core.slices import grey_images, image_channels, load_split, load_table
from pipeline_lib.imaging.slicing import SliceSpec, build_slice_dataset
from pipeline_lib.cohorts.standin import make_standin

SEQUENCES = ["t1", "t1ce", "t2", "flair"]


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    """subject -> {sequence -> NIfTI} of three BraTS-like cases (four co-registered sequences each)."""
    source = make_standin("han_2018", tmp_path_factory.mktemp("han") / "cohort", n_subjects=3, resolution_mm=4)
    registered = {}
    for case in sorted(source.glob("*/*")):
        registered[case.name] = {seq: case / f"{case.name}_{seq}.nii.gz" for seq in SEQUENCES}
    assert len(registered) == 3
    return registered


def _settings(**extra):
    return {"size": [16, 16], "selection": {"mode": "central", "n": 3}, "test_fraction": 0.34, **extra}


def _build(registered, out: Path, **extra):
    spec = SliceSpec.from_settings(_settings(**extra))
    table = build_slice_dataset(registered, None, out / "images.npy", out / "slices.tsv", spec)
    return np.load(out / "images.npy"), table


def test_each_channel_is_the_single_sequence_dataset_of_its_sequence(brats, tmp_path):
    stacked, table = _build(brats, tmp_path / "stacked", channels=SEQUENCES)
    assert stacked.shape == (3 * 3, 4, 16, 16)
    assert stacked.dtype == np.float32
    assert set(table["sequence"]) == {"t1+t1ce+t2+flair"}
    assert len(table) == len(stacked)
    for k, sequence in enumerate(SEQUENCES):
        single, single_table = _build(brats, tmp_path / sequence, filters={"sequence": sequence})
        assert single.shape == (9, 16, 16)
        np.testing.assert_array_equal(stacked[:, k], single)
        for column in ("subject", "slice_index", "position_mm", "split", "axis"):
            assert table[column].tolist() == single_table[column].tolist(), column
    # the sequences differ in contrast, so the channels are not copies of one another
    assert not np.allclose(stacked[:, 0], stacked[:, 3])
    assert image_channels(tmp_path / "stacked" / "images.npy", load_table(tmp_path / "stacked" / "slices.tsv")) \
        == SEQUENCES


def test_augmentation_applies_one_combination_to_every_channel(brats, tmp_path):
    augmentation = {"count": 2, "seed": 3}
    stacked, table = _build(brats, tmp_path / "stacked", channels=["t1", "flair"], augmentation=augmentation)
    flair, flair_table = _build(brats, tmp_path / "flair", filters={"sequence": "flair"}, augmentation=augmentation)
    assert stacked.shape[1] == 2
    assert int(table["augmented"].sum()) == int(flair_table["augmented"].sum()) > 0
    np.testing.assert_array_equal(stacked[:, 1], flair)
    assert table["position_mm"].tolist() == flair_table["position_mm"].tolist()


def test_subjects_lacking_a_sequence_are_left_out_in_one_line(brats, tmp_path, caplog):
    registered = {s: dict(v) for s, v in brats.items()}
    first, second, third = sorted(registered)
    del registered[first]["t2"]
    with caplog.at_level(logging.INFO, logger="pipeline_lib.imaging.slicing"):
        _, table = _build(registered, tmp_path, channels=SEQUENCES)
    assert set(table["subject"]) == {second, third}
    lines = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(lines) == 1
    assert f"{first} (no t2)" in lines[0]
    # the split is still the cohort's: the subject left out does not move the others
    _, full = _build(brats, tmp_path / "full", channels=SEQUENCES)
    kept = full[full["subject"] != first]
    assert table["split"].tolist() == kept["split"].tolist()
    del registered[second]["t1"], registered[third]["flair"]
    with pytest.raises(InputError, match="no subject has every sequence of channels"):
        _build(registered, tmp_path / "none", channels=SEQUENCES)


def test_channels_and_a_sequence_filter_conflict_naming_both_keys():
    with pytest.raises(InputError, match=r"datasets\.x: channels .* filters\.sequence"):
        read_settings(DatasetSettings, _settings(channels=["t1", "t2"], filters={"sequence": "t1"}), "datasets.x")
    for bad in (["t1"], ["t1", "t1"], "t1", ["t1+t2", "flair"], []):
        with pytest.raises(InputError, match=r"datasets\.x: channels"):
            read_settings(DatasetSettings, _settings(channels=bad), "datasets.x")
    assert read_settings(DatasetSettings, _settings(channels=["t2", "t1"])).channels == ("t2", "t1")


def test_mismatched_geometry_is_an_error_naming_the_file(brats, tmp_path):
    registered = {s: dict(v) for s, v in brats.items()}
    subject = sorted(registered)[1]
    moved = tmp_path / "moved_t2.nii.gz"
    image = nib.load(str(registered[subject]["t2"]))
    affine = image.affine.copy()
    affine[0, 3] += 4.0  # one voxel off: not on the grid of the other sequences
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), str(moved))
    registered[subject]["t2"] = moved
    with pytest.raises(InputError, match=rf"subject {subject}: {moved} .* not on the grid"):
        _build(registered, tmp_path / "out", channels=SEQUENCES)
    cropped = tmp_path / "cropped_t2.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:-1], image.affine), str(cropped))
    registered[subject]["t2"] = cropped
    with pytest.raises(InputError, match=rf"{cropped} \(shape"):
        _build(registered, tmp_path / "out", channels=SEQUENCES)
    assert not (tmp_path / "out" / "images.npy").exists()


def test_grey_view_pools_channels_channel_major(brats, tmp_path):
    stacked, table = _build(brats, tmp_path, channels=["t1", "t2"])
    grey, rows = load_split(tmp_path / "images.npy", tmp_path / "slices.tsv", "train", grey=True)
    train = stacked[(table["split"] == "train").to_numpy()]
    assert grey.shape == (2 * len(train), 16, 16)
    np.testing.assert_array_equal(grey[0], train[0, 0])
    np.testing.assert_array_equal(grey[1], train[0, 1])
    np.testing.assert_array_equal(grey[2], train[1, 0])
    assert len(rows) == len(grey)
    assert rows["sequence"].tolist()[:4] == ["t1", "t2", "t1", "t2"]
    assert rows["subject"].tolist()[:2] == [rows["subject"][0]] * 2
    # a grey stack passes through unchanged
    flat = stacked[:, 0]
    assert grey_images(flat) is flat


def test_a_copied_cohort_keeps_the_sequences_apart(brats, tmp_path):
    """Channel order follows ``channels``, not the files' order: swapping the list swaps the channels."""
    forward, _ = _build(brats, tmp_path / "a", channels=["t1", "flair"])
    backward, _ = _build(brats, tmp_path / "b", channels=["flair", "t1"])
    np.testing.assert_array_equal(forward[:, 0], backward[:, 1])
    np.testing.assert_array_equal(forward[:, 1], backward[:, 0])
    shutil.rmtree(tmp_path / "a")


# ----- models: built, trained and sampled with C channels ----------------------------------------

TINY = {"vae": {"width": 8, "latent_dim": 8, "batch_size": 4, "lr": 1e-3},
        "dcgan": {"width": 8, "latent_dim": 8, "batch_size": 4}}


def _stacked_images(n: int = 8, channels: int = 4, size: int = 16) -> np.ndarray:
    """Blobs whose brightness differs per channel, so a channel mix-up would show."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    cy = rng.uniform(0.3, 0.7, (n, 1, 1, 1))
    blob = np.exp(-(((yy - cy) / 0.2) ** 2 + ((xx - 0.5) / 0.2) ** 2))
    return (blob * np.linspace(0.4, 1.0, channels)[None, :, None, None]).astype(np.float32)


@pytest.mark.parametrize("family", sorted(TINY))
def test_a_family_trains_and_samples_with_the_datasets_channels(family, tmp_path):
    from pipeline_lib.models.sampling import draw_samples, reconstruct_images
    from pipeline_lib.models.training import load_trained_model, train_model

    images = _stacked_images()
    block = {"family": family, **TINY[family], "budget": {"steps": 2}, "seed": 1}
    summary = train_model(family, block, images, None, tmp_path / "w.pt", tmp_path / "l.csv", tmp_path / "ck",
                          device="cpu")
    assert summary["channels"] == 4
    assert summary["steps"] == 2
    model, _ = load_trained_model(tmp_path / "w.pt", device="cpu")
    assert model.channels == 4
    samples = draw_samples(model, 3, seed=0)
    assert samples.shape == (3, 4, 16, 16)
    assert samples.dtype == np.float32
    assert np.isfinite(samples).all()
    assert samples.min() >= 0
    assert samples.max() <= 1
    np.testing.assert_array_equal(samples, draw_samples(model, 3, seed=0))
    if model.can_reconstruct:
        assert reconstruct_images(model, images[:2]).shape == (2, 4, 16, 16)
    # a grey dataset's model still gives (N, H, W)
    train_model(family, block, images[:, 0], None, tmp_path / "g.pt", tmp_path / "g.csv", tmp_path / "ck",
                device="cpu")
    assert draw_samples(load_trained_model(tmp_path / "g.pt", device="cpu")[0], 2, seed=0).shape == (2, 16, 16)


def test_export_records_channels_and_the_card_states_the_datasets_axis(brats, tmp_path):
    """A model of a sagittal stacked dataset: model.json has its channels and their names, the card
    states the axis, the slice indices and the size, and generate writes every channel."""
    from pipeline_lib.models import export
    from pipeline_lib.models.training import train_job

    out = tmp_path / "slices"
    _build(brats, out, channels=["t1", "flair"], axis="sagittal", selection={"mode": "range", "first": 28, "last": 31})
    run = tmp_path / "results" / "models" / "v" / "seed1"
    block = {"family": "vae", **TINY["vae"], "budget": {"steps": 2}, "seed": 1}
    train_job("v", block, out / "images.npy", out / "slices.tsv", weights=run / "weights.pt",
              losses=run / "losses.csv", summary=run / "summary.json", checkpoint_root=tmp_path / "ck")
    folder = export.export_model(run, tmp_path / "exported")
    description = export.describe(folder)
    assert description["channels"] == 2
    assert description["channel_names"] == description["training_data"]["channel_names"] == ["t1", "flair"]
    card = (folder / "README.md").read_text()
    assert "sagittal slices, indices 28–31 on the registered grid (4 positions)" in card
    assert "fitted to 16 × 16 pixels" in card
    assert "axial" not in card
    assert "2-channel images, one channel per sequence (t1, flair)" in card

    model, description = export.load_model(folder, device="cpu")
    images, classes = export.generate(model, description, 3, seed=0)
    assert images.shape == (3, 2, 16, 16)
    assert classes == [""] * 3
    (volume,) = export.write_images(images, classes, tmp_path / "nii", "nifti")
    data = nib.load(volume).get_fdata()
    assert data.shape == (16, 16, 3, 2)
    np.testing.assert_allclose(data[:, ::-1, 2, 1].T, images[2, 1], atol=1e-6)
    import cv2

    pngs = export.write_images(images, classes, tmp_path / "png", "png")
    decoded = cv2.imdecode(np.frombuffer(pngs[1].read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (16, 2 * 16)  # channels side by side, in channel order
    from pipeline_lib.core.figures import to_uint8

    np.testing.assert_array_equal(decoded[:, 16:], to_uint8(images[1, 1]))


def test_the_reader_kit_shows_a_stacked_image_channels_side_by_side():
    from pipeline_lib.reader_study.kit import display_pixels

    image = _stacked_images(n=1, channels=3)[0]
    shown = display_pixels(image, 32, 24)
    assert shown.shape == (32, 3 * 24)
    assert shown.dtype == np.uint8
    for k in range(3):
        np.testing.assert_array_equal(shown[:, 24 * k:24 * (k + 1)], display_pixels(image[k], 32, 24))


def test_fresh_sample_blocks_of_a_stacked_model_are_checked_as_grey_images(tmp_path):
    from pipeline_lib.evaluation.fid import load_sample_blocks

    blocks = np.stack([_stacked_images(n=3, channels=2), _stacked_images(n=3, channels=2)])
    np.save(tmp_path / "blocks.npy", blocks)
    assert load_sample_blocks(tmp_path / "blocks.npy").shape == (2, 3, 2, 16, 16)
    blocks[1, 2, 1, 0, 0] = 1.5
    np.save(tmp_path / "bad.npy", blocks)
    with pytest.raises(InputError, match=r"bad\.npy: intensities must lie in \[0, 1\]"):
        load_sample_blocks(tmp_path / "bad.npy")


def test_conditioning_pools_channels_with_each_samples_label(brats, tmp_path):
    """A conditional model's samples (N, C, H, W) with N labels: the check reads N·C grey images,
    each channel with its sample's label, against the dataset's grey view."""
    import json

    import pandas as pd

    from pipeline_lib.evaluation.conditioning import conditioning_job
    from pipeline_lib.imaging.slicing import split_subjects

    subjects = sorted(brats)
    split = split_subjects(subjects, 0.34, 0)
    first_train = min(s for s in subjects if split[s] == "train")
    site = {s: "b" if s != first_train and split[s] == "train" else "a" for s in subjects}
    labels = pd.DataFrame({"subject": subjects, "site": [site[s] for s in subjects]})
    spec = SliceSpec.from_settings(_settings(channels=["t1", "flair"]))
    table = build_slice_dataset(brats, labels, tmp_path / "images.npy", tmp_path / "slices.tsv", spec)
    stacked = np.load(tmp_path / "images.npy")
    rows = np.flatnonzero((table["split"] == "train").to_numpy())[[0, 1, -2, -1]]  # two of each class
    np.save(tmp_path / "samples.npy", stacked[rows])
    pd.DataFrame({"sample": range(4), "label": table["site"].to_numpy()[rows]}).to_csv(
        tmp_path / "labels.tsv", sep="\t", index=False)
    result = conditioning_job(tmp_path / "samples.npy", tmp_path / "labels.tsv", tmp_path / "images.npy",
                              tmp_path / "slices.tsv", tmp_path / "out.json", condition_on="site",
                              settings={"steps": 5, "batch_size": 8})
    n_train = int((table["split"] == "train").sum())
    assert result["n_samples"] == 4 * 2
    assert result["n_train"] == n_train * 2
    assert {c["class"]: c["n_samples"] for c in result["per_class"]} == {"a": 4, "b": 4}
    assert json.loads((tmp_path / "out.json").read_text())["n_samples"] == 8
