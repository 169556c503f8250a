"""Volume datasets (datasets.<name> with kind: volume): settings, the on-disk array and its grid,
the split shared with slice datasets, channel order, crop/resample against known transforms, and
NIfTI export on the dataset's grid."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline_lib.core.config_check import config_problems
from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings import dataset_blocks, dataset_problems
from pipeline_lib.core.slices import load_table
from pipeline_lib.core.volumes import (SHARED_KEYS, VOLUME_KEYS, VolumeDatasetSettings, open_volume_split, read_grid,
                                       volume_dataset_params, volume_dataset_problems, volume_dataset_settings)
from pipeline_lib.evaluation.volumetric import plane_slices
from pipeline_lib.imaging.slice_geometry import SliceSelection
from pipeline_lib.imaging.slicing import SliceSpec, build_slice_dataset
from pipeline_lib.imaging.volumes import (build_volume_dataset, mask_on_grid, resample_box, target_grid,
                                          write_volume_nifti)

SCHEMA = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"
SHAPE = (12, 14, 10)
AFFINE = np.array([[2.0, 0, 0, -11], [0, 2.0, 0, -13], [0, 0, 2.0, -9], [0, 0, 0, 1]])


def _write(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    return path


def _subject_volume(seed: int, scale: float = 1.0) -> np.ndarray:
    """A bright box (the 'brain') on background, textured per subject; its 95th percentile is 1 x scale."""
    rng = np.random.default_rng(seed)
    data = np.zeros(SHAPE, np.float32)
    data[2:10, 3:11, 2:8] = scale * (0.5 + 0.5 * rng.random((8, 8, 6)))
    return data


@pytest.fixture
def cohort(tmp_path):
    """Ten subjects with t1 and t2 on one grid (t2 = t1 with a distinct marker), and their labels."""
    registered, rows = {}, []
    for i in range(10):
        subject = f"sub-{i:010x}"
        t1 = _subject_volume(i)
        t2 = _subject_volume(100 + i)
        registered[subject] = {"t1": _write(tmp_path / "reg" / subject / "t1.nii.gz", t1),
                               "t2": _write(tmp_path / "reg" / subject / "t2.nii.gz", t2)}
        rows.append({"subject": subject, "diagnosis": "AD" if i % 2 else "CN", "format": "nifti"})
    return registered, pd.DataFrame(rows)


def _build(cohort, tmp_path, name="vol", **settings):
    registered, labels = cohort
    out = tmp_path / name
    table = build_volume_dataset(registered, labels, out / "volumes.npy", out / "volumes.tsv", out / "grid.json",
                                 VolumeDatasetSettings(**settings))
    return np.load(out / "volumes.npy", mmap_mode="r"), table, read_grid(out / "grid.json"), out


def test_whole_grid_dataset_is_every_volume_normalised_on_the_registered_grid(cohort, tmp_path):
    volumes, table, grid, out = _build(cohort, tmp_path, filters={"sequence": "t1"})
    registered, _ = cohort
    assert volumes.shape == (10, 1) + SHAPE
    assert volumes.dtype == np.float32
    assert list(table.columns) == ["row", "subject", "split", "augmented", "diagnosis", "sequence", "brain_volume_ml"]
    assert list(table["sequence"]) == ["t1"] * 10
    assert list(table["row"]) == list(range(10))
    assert np.allclose(grid["affine"], AFFINE)
    assert grid["shape"] == SHAPE
    for row, subject in enumerate(table["subject"]):
        data = np.asarray(nib.load(str(registered[subject]["t1"])).dataobj, dtype=np.float32)
        ceiling = np.percentile(data, 95)
        assert np.allclose(volumes[row, 0], np.minimum(data, ceiling) / ceiling, atol=1e-6)
    assert float(volumes.max()) == 1.0
    assert float(volumes.min()) == 0.0
    assert not list(out.glob(".*")), "no temporary file left behind"
    # each volume's brain volume as the volumetric evaluation measures samples: voxels above 0.1 x 8 uL
    from pipeline_lib.evaluation.volumetric import brain_volumes_ml

    np.testing.assert_allclose(table["brain_volume_ml"], brain_volumes_ml(np.asarray(volumes), AFFINE), atol=1e-3)
    assert table["brain_volume_ml"].between(0.9 * 8 * 8 * 6 * 0.008, 8 * 8 * 6 * 0.008).all()


def test_split_equals_the_slice_datasets_of_the_cohort(cohort, tmp_path):
    registered, labels = cohort
    _, table, _, _ = _build(cohort, tmp_path, filters={"diagnosis": "AD", "sequence": "t2"},
                            test_fraction=0.3, split_seed=7)
    slices = build_slice_dataset(registered, labels, tmp_path / "s/images.npy", tmp_path / "s/slices.tsv",
                                 SliceSpec(selection=SliceSelection("all"), size=(8, 8), test_fraction=0.3,
                                           split_seed=7))
    slice_split = dict(zip(slices["subject"], slices["split"]))
    assert set(table["diagnosis"]) == {"AD"}
    assert len(table) == 5
    assert {s: slice_split[s] for s in table["subject"]} == dict(zip(table["subject"], table["split"]))
    assert set(table["split"]) == {"train", "test"}


def test_channels_stack_in_the_listed_order(cohort, tmp_path):
    registered, _ = cohort
    volumes, table, grid, _ = _build(cohort, tmp_path, channels=["t2", "t1"])
    assert volumes.shape == (10, 2) + SHAPE
    assert set(table["sequence"]) == {"t2+t1"}
    assert grid["channels"] == ["t2", "t1"]
    first = table["subject"][0]
    for channel, sequence in enumerate(["t2", "t1"]):
        data = np.asarray(nib.load(str(registered[first][sequence])).dataobj, dtype=np.float32)
        ceiling = np.percentile(data, 95)
        assert np.allclose(volumes[0, channel], np.minimum(data, ceiling) / ceiling, atol=1e-6)


def test_split_reads_batch_by_batch_from_disk(cohort, tmp_path):
    volumes, table, _, out = _build(cohort, tmp_path, filters={"sequence": "t1"})
    train, rows = open_volume_split(out / "volumes.npy", out / "volumes.tsv", "train")
    expected = np.flatnonzero(table["split"] == "train")
    assert len(train) == len(expected) == len(rows)
    assert train.shape == (len(expected), 1) + SHAPE
    batch = train[np.array([1, 0])]
    assert batch.dtype == np.float32
    assert np.array_equal(batch, volumes[expected[[1, 0]]])
    assert list(rows["subject"]) == list(table["subject"][expected])


def _ramp(shape, affine):
    """A linear function of world (mm) coordinates, sampled at every voxel centre of the grid."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    return world @ np.array([0.3, -0.2, 0.5]) + 40.0, world


def test_resampling_follows_the_affine_it_reports():
    volume, _ = _ramp(SHAPE, AFFINE)
    out, out_affine = resample_box(volume, AFFINE, spacing_mm=(3.0, 4.0, 1.0))
    expected, world = _ramp(out.shape, out_affine)
    # the same field of view: round(12*2/3), round(14*2/4), round(10*2/1) voxels, centred alike
    assert out.shape == (8, 7, 20)
    assert np.allclose(world.mean(axis=(0, 1, 2)), (np.array(SHAPE) - 1) / 2 * 2 + AFFINE[:3, 3])
    # linear interpolation (and the symmetric smoothing) reproduce a linear function away from the edges
    inner = (slice(2, -2), slice(2, -2), slice(1, -1))
    assert np.allclose(out[inner], expected[inner], atol=1e-3)


def test_box_crops_about_the_centre_and_a_marker_lands_where_the_affine_says():
    volume = np.zeros(SHAPE, np.float32)
    volume[7, 4, 6] = 1.0
    out, out_affine = resample_box(volume, AFFINE, box=(6, 8, 4))
    assert out.shape == (6, 8, 4)
    world = AFFINE @ [7, 4, 6, 1]
    target = np.rint(np.linalg.solve(out_affine, world)[:3]).astype(int)
    assert tuple(target) == (4, 1, 3)
    assert out[tuple(target)] == 1.0
    assert out.sum() == 1.0
    padded, padded_affine = resample_box(volume, AFFINE, box=(16, 14, 12))
    target = np.rint(np.linalg.solve(padded_affine, world)[:3]).astype(int)
    assert padded[tuple(target)] == 1.0
    assert padded.sum() == 1.0
    assert padded[:2].sum() == 0


def test_coarser_grid_smooths_before_sampling_instead_of_aliasing():
    """Stripes one 2 mm voxel wide, sampled at 4 mm exactly on the dark voxels: without the smoothing
    they would vanish (all 0); smoothed, each coarse voxel keeps its neighbours' brightness."""
    volume = np.zeros((17, 16, 16), np.float32)
    volume[::2] = 1.0
    out, out_affine = resample_box(volume, np.diag([2.0, 2.0, 2.0, 1.0]), spacing_mm=4.0)
    assert out.shape == (8, 8, 8)
    assert out_affine[0, 3] == 2.0  # x centres on the dark voxels 1, 3, ...
    assert np.allclose(out[1:-1, 2:-2, 2:-2], 0.21, atol=0.02)


def test_dataset_box_and_spacing_give_the_grid_json_affine(cohort, tmp_path):
    volumes, _, grid, _ = _build(cohort, tmp_path, filters={"sequence": "t1"}, spacing_mm=4.0, box=[4, 4, 4])
    shape, affine, _, _ = target_grid(SHAPE, AFFINE, (4.0, 4.0, 4.0), (4, 4, 4))
    assert volumes.shape == (10, 1, 4, 4, 4)
    assert grid["shape"] == shape == (4, 4, 4)
    assert np.allclose(grid["affine"], affine)
    assert grid["spacing_mm"] == [4.0, 4.0, 4.0]
    assert 0.0 <= float(volumes.min())
    assert float(volumes.max()) <= 1.0


def test_bad_volume_is_named_and_leaves_no_array(cohort, tmp_path):
    registered, labels = cohort
    subject = sorted(registered)[3]
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    registered = {**registered, subject: {**registered[subject], "t1": broken}}
    with pytest.raises(InputError, match="broken.nii.gz"):
        build_volume_dataset(registered, labels, tmp_path / "o/volumes.npy", tmp_path / "o/volumes.tsv",
                             tmp_path / "o/grid.json", VolumeDatasetSettings(filters={"sequence": "t1"}))
    assert not (tmp_path / "o/volumes.npy").exists()
    assert not list(tmp_path.glob("o/.*"))


def test_a_volume_off_the_template_grid_is_named(cohort, tmp_path):
    registered, labels = cohort
    subject = sorted(registered)[5]
    odd = _write(tmp_path / "odd.nii.gz", np.ones((12, 14, 11), np.float32))
    registered = {**registered, subject: {"t1": odd}}
    with pytest.raises(InputError, match="odd.nii.gz.*not on the grid"):
        build_volume_dataset(registered, labels, tmp_path / "o/volumes.npy", tmp_path / "o/volumes.tsv",
                             tmp_path / "o/grid.json", VolumeDatasetSettings(filters={"sequence": "t1"}))


def test_a_subject_label_named_like_the_measured_brain_volume_is_refused(cohort, tmp_path):
    registered, labels = cohort
    with pytest.raises(InputError, match="label column 'brain_volume_ml' clashes with the column a volume dataset "
                                         "measures"):
        build_volume_dataset(registered, labels.assign(brain_volume_ml=1.0), tmp_path / "o/volumes.npy",
                             tmp_path / "o/volumes.tsv", tmp_path / "o/grid.json", VolumeDatasetSettings())
    assert not (tmp_path / "o/volumes.npy").exists()


def test_empty_volume_is_named(cohort, tmp_path):
    registered, labels = cohort
    subject = sorted(registered)[2]
    empty = _write(tmp_path / "empty.nii.gz", np.zeros(SHAPE, np.float32))
    registered = {**registered, subject: {"t1": empty}}
    with pytest.raises(InputError, match="empty.nii.gz.*all zero"):
        build_volume_dataset(registered, labels, tmp_path / "o/volumes.npy", tmp_path / "o/volumes.tsv",
                             tmp_path / "o/grid.json", VolumeDatasetSettings(filters={"sequence": "t1"}))


# ----------------------------------------------------------------- settings


def _config(datasets, models=None):
    return {"datasets": datasets, "models": models or {"m": {"family": "vae", "budget": {"steps": 1}}}}


def test_volume_datasets_stay_out_of_the_slice_datasets():
    config = _config({"t1": {"kind": "slice", "size": [32, 32]},
                      "brain": {"kind": "volume", "box": [8, 8, 8], "spacing_mm": 2}})
    assert list(dataset_blocks(config)) == ["t1"]
    assert dataset_blocks(config)["t1"] == {"size": [32, 32]}
    settings = volume_dataset_settings(config)
    assert settings["brain"].box == (8, 8, 8)
    assert settings["brain"].spacing_mm == (2.0, 2.0, 2.0)
    assert volume_dataset_params(settings["brain"])["box"] == [8, 8, 8]
    assert volume_dataset_problems(config) == []
    assert dataset_problems(config) == []
    # only volume datasets: the slice dataset "default" is built from slicing: as without datasets:
    assert list(dataset_blocks(_config({"brain": {"kind": "volume"}}))) == ["default"]


def test_schema_defaults_of_slice_keys_do_not_reach_the_volume_settings():
    filled = {"kind": "volume", "axis": "axial", "size": [128, 128], "fit": "resize", "augmentation": None,
              "selection": {"mode": "drop", "low": 8, "high": 6}, "filters": {}, "channels": None}
    assert volume_dataset_settings(_config({"brain": filled}))["brain"] == VolumeDatasetSettings()


@pytest.mark.parametrize("block, match", [
    ({"kind": "volume", "size": [32, 32]}, r"datasets\.brain: size belong\(s\) to slice datasets"),
    ({"kind": "volume", "box": [8, 8]}, r"datasets\.brain: box must be"),
    ({"kind": "volume", "spacing_mm": -1}, r"datasets\.brain: spacing_mm must be"),
    ({"kind": "volume", "split_seed": 3}, r"datasets\.brain\.split_seed: 3 differs from dataset t1's 0"),
    ({"kind": "volume", "channels": ["t1"]}, r"datasets\.brain: channels must be"),
])
def test_volume_dataset_problems_name_the_key(block, match):
    problems = volume_dataset_problems(_config({"t1": {}, "brain": block}))
    assert len(problems) == 1, problems
    assert re.search(match, problems[0]), problems


def test_the_default_name_is_a_problem_and_a_model_on_a_volume_dataset_is_its_familys_question():
    config = _config({"default": {"kind": "volume"}},
                     models={"m": {"family": "vae", "dataset": "default", "budget": {"steps": 1}}})
    problems = volume_dataset_problems(config)
    assert any("datasets.default: the name of the slice dataset built from slicing:" in p for p in problems)
    # which family may name a volume dataset: models.hyperparameters.model_dataset_problems (test_volume_runs.py)
    assert not any(p.startswith("models.m.dataset") for p in problems)


def test_volume_keys_are_in_the_schema_and_volume_only_keys_have_no_schema_default():
    """Snakemake fills schema defaults into every datasets: block; a default of kind, box or
    spacing_mm would reach the slice datasets (and a default kind would turn them into volumes)."""
    block = yaml.safe_load(SCHEMA.read_text())["properties"]["datasets"]["additionalProperties"]["properties"]
    assert set(VOLUME_KEYS) <= set(block)
    assert not [key for key in VOLUME_KEYS if key not in SHARED_KEYS and "default" in block[key]]


def test_the_schema_takes_volume_keys_and_rejects_an_unknown_kind():
    good = _config({"brain": {"kind": "volume", "box": [8, 8, 8], "spacing_mm": [2, 2, 3]}})
    assert not [p for p in config_problems(good, SCHEMA) if p.startswith("datasets")]
    bad = _config({"brain": {"kind": "cube"}})
    assert any(p.startswith("datasets.brain.kind") for p in config_problems(bad, SCHEMA))


# ----------------------------------------------------------------- export


def test_written_sample_overlays_the_template_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    sample = rng.random((1,) + SHAPE).astype(np.float32)
    out = write_volume_nifti(sample, AFFINE, tmp_path / "gen" / "sample-0.nii.gz")
    image = nib.load(str(out))
    assert np.array_equal(image.affine, AFFINE)
    assert np.array_equal(image.get_sform(), AFFINE)
    assert np.array_equal(image.get_qform(), AFFINE)
    assert np.array_equal(np.asarray(image.dataobj), sample[0])
    stacked = write_volume_nifti(rng.random((2,) + SHAPE), AFFINE, tmp_path / "gen" / "two.nii")
    data = np.asarray(nib.load(str(stacked)).dataobj)
    assert data.shape == SHAPE + (2,)
    with pytest.raises(InputError, match="bad.nii.gz.*expected a sample"):
        write_volume_nifti(np.zeros((2, 3)), AFFINE, tmp_path / "bad.nii.gz")
    assert not (tmp_path / "bad.nii.gz").exists()


def test_a_dataset_volume_written_with_grid_json_equals_its_source_in_world_space(cohort, tmp_path):
    registered, _ = cohort
    volumes, table, grid, _ = _build(cohort, tmp_path, filters={"sequence": "t1"}, box=[6, 6, 6])
    out = write_volume_nifti(volumes[0], grid["affine"], tmp_path / "sample.nii.gz")
    written = nib.load(str(out))
    source = nib.load(str(registered[table["subject"][0]]["t1"]))
    data = np.asarray(source.dataobj, dtype=np.float32)
    ceiling = np.percentile(data, 95)
    # voxel (i, j, k) of the written file and the source voxel at the same mm hold the same value
    for ijk in [(0, 0, 0), (3, 2, 5), (5, 5, 5)]:
        world = written.affine @ [*ijk, 1]
        src = np.rint(np.linalg.solve(source.affine, world)[:3]).astype(int)
        assert np.isclose(written.get_fdata()[ijk], min(data[tuple(src)], ceiling) / ceiling, atol=1e-6)
    assert load_table(tmp_path / "vol/volumes.tsv")["subject"].tolist() == table["subject"].tolist()


def test_a_brain_mask_comes_onto_the_dataset_grid_with_the_volumes(tmp_path):
    mask = np.zeros(SHAPE, np.float32)
    mask[3:9, 4:10, 2:8] = 1
    path = _write(tmp_path / "brain_mask.nii.gz", mask)
    boxed = mask_on_grid(path, VolumeDatasetSettings(box=(8, 8, 8)))
    assert boxed.dtype == bool
    assert boxed.shape == (8, 8, 8)
    assert np.array_equal(boxed, mask[2:10, 3:11, 1:9] > 0)  # the centred box: (12-8)//2, (14-8)//2, (10-8)//2
    coarse = mask_on_grid(path, VolumeDatasetSettings(spacing_mm=4.0))
    assert coarse.shape == (6, 7, 5)
    assert 0.5 * mask.sum() / 8 < coarse.sum() < 1.5 * mask.sum() / 8
    with pytest.raises(InputError, match="missing.nii.gz"):
        mask_on_grid(tmp_path / "missing.nii.gz", VolumeDatasetSettings())


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_plane_slices_of_the_volume_dataset_are_the_slice_datasets_images(cohort, tmp_path, axis):
    """A 3-D model's samples are cut into exactly the slices a 2-D model of the cohort trains on."""
    registered, labels = cohort
    volumes, table, _, _ = _build(cohort, tmp_path, filters={"sequence": "t1"})
    x, y, z = SHAPE
    size = {"axial": (y, x), "coronal": (z, x), "sagittal": (z, y)}[axis]
    slices = build_slice_dataset(registered, labels, tmp_path / "s/images.npy", tmp_path / "s/slices.tsv",
                                 SliceSpec(axis=axis, selection=SliceSelection("all"), size=size, fit="crop",
                                           filters={"sequence": ("t1",)}))
    images = np.load(tmp_path / "s/images.npy")
    assert list(slices["subject"].unique()) == list(table["subject"])
    assert np.array_equal(plane_slices(volumes, axis), images)
