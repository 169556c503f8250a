"""On-the-fly 3-D augmentation (Kazuhiro et al., ``augmentation.mode: on_the_fly``): the train split
drawn from the volumes' slabs is the offline mode's train split, image for image and in the same
order; the slab covers every combination; memory does not grow with ``count``; evaluation reads
the same real sections in both modes; a conditional model is refused clearly."""

from __future__ import annotations

import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import read_json, write_json
from pipeline_lib.core.slices import load_split, open_split
from pipeline_lib.imaging import augmentation as aug
from pipeline_lib.imaging.slicing import SliceSpec, build_slice_dataset, normalise_volume

# Rotations and offsets as the paper's (1 degree steps, -4..4 mm), on a small oblique-free grid.
PAPER = {"max_rotation_deg": [10, 10, 5], "step_deg": 1, "offsets_mm": [-4, -2, 0, 2, 4], "flip": True}


def _head(path: Path, seed: int, shape=(36, 40, 30), spacing=(2.0, 2.0, 2.5)) -> Path:
    """A smooth random 'head' (an ellipsoid of noise, bright rim) on a grid whose centre is the
    world origin; smooth so that interpolation errors would show."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid ** 2).sum(axis=0))
    data = np.where(radius < 0.9, 50 + 30 * rng.random(shape), 0.0) + 100 * (np.abs(radius - 0.85) < 0.05)
    affine = np.diag(list(spacing) + [1.0])
    affine[:3, 3] = [-(n - 1) * s / 2 for n, s in zip(shape, spacing)]
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    return path


def _cohort(tmp_path: Path, n: int = 6) -> dict[str, Path]:
    return {f"sub-{i:02d}": _head(tmp_path / f"h{i}.nii.gz", i) for i in range(n)}


def _dataset(tmp_path: Path, registered, mode: str, count: int = 7, name: str | None = None, size: int = 24,
             channels=None, intensity_scale: str = "per_volume", **augmentation):
    name = name or mode
    spec = SliceSpec.from_settings({
        "size": [size, size], "fit": "pad", "test_fraction": 0.5, "channels": channels,
        "intensity_scale": intensity_scale,
        "selection": {"mode": "offsets_mm", "level_mm": 1.0, "offsets_mm": [-4, -2, 0, 2, 4]},
        "augmentation": {**PAPER, "count": count, "seed": 5, "level_mm": 1.0, "mode": mode, **augmentation}})
    folder = tmp_path / name
    folder.mkdir()
    paths = {k: folder / f for k, f in (("images", "images.npy"), ("table", "slices.tsv"),
                                       ("volumes", "volumes.npy"), ("index", "volumes.json"))}
    table = build_slice_dataset(registered, None, paths["images"], paths["table"], spec,
                                out_volumes=paths["volumes"], out_volume_index=paths["index"])
    return paths, table


def _train_split(paths, condition_on=None):
    opened = aug.open_training_split(paths["images"], paths["table"], paths["volumes"], paths["index"], condition_on)
    return opened if opened is not None else open_split(paths["images"], paths["table"], "train", augmented=True)


def test_drawn_images_equal_the_offline_images_in_the_same_order(tmp_path):
    registered = _cohort(tmp_path)
    offline, offline_table = _dataset(tmp_path, registered, "offline")
    fly, fly_table = _dataset(tmp_path, registered, "on_the_fly")
    assert int(offline_table["augmented"].sum()) == 3 * 7
    assert int(fly_table["augmented"].sum()) == 0
    assert read_json(offline["index"])["entries"] == []        # the store exists, empty, in offline mode
    assert aug.open_training_split(offline["images"], offline["table"], offline["volumes"], offline["index"]) is None
    expected, _ = _train_split(offline)
    drawn, rows = _train_split(fly)
    assert isinstance(drawn, aug.OnTheFlyTrainSplit)
    assert drawn.shape == expected.shape == (3 * (5 + 7), 24, 24)
    assert len(rows) == 3 * 5
    everything = expected[np.arange(len(expected))]
    # bit for bit: the sampling points are shifted by whole voxels (exact), so map_coordinates sees
    # the same fractions and the same neighbours
    np.testing.assert_array_equal(drawn[np.arange(len(drawn))], everything)
    shuffled = np.random.default_rng(0).permutation(len(drawn))  # a batch in any order, any mix
    np.testing.assert_array_equal(drawn[shuffled[:17]], everything[shuffled[:17]])
    np.testing.assert_array_equal(drawn[4], everything[4])
    assert drawn[5:12].shape == (7, 24, 24)
    assert np.array_equal(drawn[5:12], everything[5:12])
    # worker processes get a copy without the open slab file
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(drawn))[shuffled[:5]], everything[shuffled[:5]])


def test_drawn_images_follow_the_cohort_ceiling_like_the_offline_images(tmp_path):
    """intensity_scale: cohort divides every volume by one ceiling: the slabs must be scaled by it
    too, or on-the-fly images would differ from offline ones in brightness."""
    registered = _cohort(tmp_path)
    offline, _ = _dataset(tmp_path, registered, "offline", name="offline_cohort", intensity_scale="cohort")
    fly, _ = _dataset(tmp_path, registered, "on_the_fly", name="fly_cohort", intensity_scale="cohort")
    per_volume, _ = _dataset(tmp_path, registered, "offline", name="offline_per_volume")
    expected, _ = _train_split(offline)
    drawn, _ = _train_split(fly)
    everything = expected[np.arange(len(expected))]
    np.testing.assert_array_equal(drawn[np.arange(len(drawn))], everything)
    other, _ = _train_split(per_volume)
    assert not np.array_equal(other[np.arange(len(other))], everything)  # the ceiling did change them


def test_a_stacked_dataset_draws_one_combination_for_every_channel(tmp_path):
    registered = {f"sub-{i}": {"t1": _head(tmp_path / f"t1-{i}.nii.gz", i),
                               "flair": _head(tmp_path / f"flair-{i}.nii.gz", 10 + i)} for i in range(4)}
    offline, _ = _dataset(tmp_path, registered, "offline", count=4, channels=["t1", "flair"])
    fly, _ = _dataset(tmp_path, registered, "on_the_fly", count=4, channels=["t1", "flair"])
    expected, drawn = _train_split(offline)[0], _train_split(fly)[0]
    assert drawn.shape == expected.shape == (2 * (5 + 4), 2, 24, 24)
    np.testing.assert_array_equal(drawn[np.arange(len(drawn))], expected[np.arange(len(expected))])


def test_evaluation_reads_the_same_real_sections_in_both_modes(tmp_path):
    registered = _cohort(tmp_path, 4)
    offline, _ = _dataset(tmp_path, registered, "offline", count=5)
    fly, _ = _dataset(tmp_path, registered, "on_the_fly", count=5)
    for split in ("train", "test"):
        a, a_rows = load_split(offline["images"], offline["table"], split)
        b, b_rows = load_split(fly["images"], fly["table"], split)
        np.testing.assert_array_equal(a, b)
        assert set(a_rows["augmented"]) == set(b_rows["augmented"]) == {0}
        assert len(a) == 2 * 5
    # the test split is never augmented: no slab of a test subject
    test_subjects = set(b_rows["subject"])
    assert not test_subjects & {e["subject"] for e in read_json(fly["index"])["entries"]}


def test_the_slab_covers_every_combination_and_is_the_same_for_any_count(tmp_path):
    registered = _cohort(tmp_path, 2)
    small, _ = _dataset(tmp_path, registered, "on_the_fly", count=3, name="small")
    paper, _ = _dataset(tmp_path, registered, "on_the_fly", count=48510, name="paper")
    a, b = np.load(small["volumes"], mmap_mode="r"), np.load(paper["volumes"], mmap_mode="r")
    assert a.shape == b.shape
    assert a.shape[-1] < 30     # (volumes, channels, x, y, z): a slab of z
    assert (tmp_path / "paper/images.npy").stat().st_size == (tmp_path / "small/images.npy").stat().st_size
    split, _ = _train_split(paper)
    assert len(split) == 48515
    # the extreme rotations and offsets drawn from the slab equal those sampled on the whole volume
    record = read_json(paper["index"])["entries"][0]
    image = nib.load(str(registered[record["subject"]]))
    volume = normalise_volume(np.asarray(image.dataobj, dtype=np.float32))  # as slicing reads it
    combos = [{"rot_x": x, "rot_y": y, "rot_z": z, "offset_mm": o, "flip": False}
              for x in (-10.0, 10.0) for y in (-10.0, 10.0) for z in (-5.0, 5.0) for o in (-4.0, 4.0)]
    whole = aug.augmented_sections(volume, image.affine, 1.0, combos)
    slab = aug.augmented_sections(b[0, 0], np.array(record["affine"]), 1.0, combos,
                                  grid_shape=tuple(record["grid_shape"]), slab_start=tuple(record["slab_start"]))
    assert len(combos) == 16
    assert whole.max() > 0.5
    np.testing.assert_array_equal(slab, whole)


def _train(folder: Path, split, **keys):
    from pipeline_lib.models.training import train_model
    block = {"family": "vae", "width": 8, "latent_dim": 16, "batch_size": 8, "lr": 1e-3, "budget": {"steps": 6},
             "checkpoint_every": 2, "seed": 3, **keys}
    folder.mkdir(parents=True, exist_ok=True)
    stop = keys.pop("stop_after", None)
    block.pop("stop_after", None)
    if stop is not None:
        assert train_model("m", block, split, None, folder / "w.pt", folder / "l.csv", folder / "ck",
                           data_files=getattr(split, "data_files", ()), steps_this_call=stop) is None
    train_model("m", block, split, None, folder / "w.pt", folder / "l.csv", folder / "ck",
                data_files=getattr(split, "data_files", ()))
    return torch.load(folder / "w.pt", weights_only=False)["state_dict"]


def test_training_on_the_fly_equals_training_offline_and_resumes_exactly(tmp_path):
    """The run's seed draws the batches (a permutation of the split, its position in the checkpoint);
    a batch's augmented images are those of (subject pseudonym, augmentation seed, position): so
    the weights are those of the offline run, after a kill and resume as well, with workers too."""
    registered = _cohort(tmp_path, 4)
    offline, _ = _dataset(tmp_path, registered, "offline", count=6, size=16)
    fly, _ = _dataset(tmp_path, registered, "on_the_fly", count=6, size=16)
    reference = _train(tmp_path / "offline", _train_split(offline)[0])
    for name, keys in {"fly": {}, "resumed": {"stop_after": 3}, "workers": {"loader_workers": 2}}.items():
        weights = _train(tmp_path / name, _train_split(fly)[0], **keys)
        assert weights.keys() == reference.keys()
        for key in reference:
            assert torch.equal(weights[key], reference[key]), (name, key)


def test_on_the_fly_refuses_what_it_cannot_do(tmp_path):
    registered = _cohort(tmp_path, 2)
    paths, _ = _dataset(tmp_path, registered, "on_the_fly", count=2)
    with pytest.raises(InputError, match="condition_on: grade.*mode: offline"):
        aug.open_training_split(paths["images"], paths["table"], paths["volumes"], paths["index"], "grade")
    with pytest.raises(InputError, match="augmentation.mode must be one of"):
        aug.VolumeAugmentation(count=2, mode="lazy")
    spec = SliceSpec.from_settings({"augmentation": {"count": 2, "mode": "on_the_fly"}})
    with pytest.raises(InputError, match="slab store"):
        build_slice_dataset(registered, None, tmp_path / "i.npy", tmp_path / "t.tsv", spec)
    # a slab index that does not describe the table's train split (another slicing run)
    with pytest.raises(InputError, match="does not describe the train split"):
        aug.OnTheFlyTrainSplit(paths["images"], paths["table"], paths["volumes"],
                               _rewritten_index(paths["index"], tmp_path))


def _rewritten_index(index: Path, tmp_path: Path) -> Path:
    meta = read_json(index)
    meta["entries"][0]["rows"] = [r + 1000 for r in meta["entries"][0]["rows"]]
    out = tmp_path / "stale.json"
    write_json(out, meta)
    return out
