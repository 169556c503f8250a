"""The volumetric evaluation of one 3-D run (evaluation/volumetric.volumetric_job), on small volume
datasets written here, whose answers are known by construction: samples that are the training volumes
themselves, the same with a brighter tissue, and samples on the wrong grid."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.volumes import VOLUME_TABLE_COLUMNS, open_volume_split
from pipeline_lib.evaluation import volumetric as vm
from pipeline_lib.evaluation.diversity import pairwise_ms_ssim
from pipeline_lib.evaluation.pixel_metrics import sample_metrics

SIDE = 16
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])  # 2 mm voxels: 0.008 mL each
SETTINGS = dict(sharpness_scale=255.0, n_pairs=20, kernel_size=4, percentile=5.0, seed=0)


def phantoms(n: int, seed: int) -> np.ndarray:
    """(n, 1, S, S, S) heads: an ellipsoid of tissue (0.3 to 0.7, varying radii and texture) on a black
    background, so every intensity stays below 0.8 and a +0.1 shift of the tissue needs no clipping."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, SIDE)] * 3, indexing="ij"))
    out = np.zeros((n, 1, SIDE, SIDE, SIDE), np.float32)
    for i in range(n):
        radii = rng.uniform(0.55, 0.9, 3)[:, None, None, None]
        inside = ((grid / radii) ** 2).sum(axis=0) <= 1
        texture = 0.5 + 0.2 * np.sin(grid[0] * rng.uniform(2, 6)) * np.cos(grid[1] * rng.uniform(2, 6))
        out[i, 0] = np.where(inside, texture, 0.0)
    return out


def pooled_features(slices) -> np.ndarray:
    """Cheap deterministic slice features in place of Inception's (4 x 4 mean pooling of each slice)."""
    images = np.asarray(slices[:], dtype=np.float64)
    n, h, w = images.shape
    return images[:, :h - h % 4, :w - w % 4].reshape(n, h // 4, 4, w // 4, 4).mean(axis=(2, 4)).reshape(n, -1)


def write_volume_dataset(folder, train: np.ndarray, test: np.ndarray):
    """volumes.npy, volumes.tsv and grid.json as imaging/volumes.build_volume_dataset writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    volumes = np.concatenate([train, test]).astype(np.float32)
    np.save(folder / "volumes.npy", volumes)
    splits = ["train"] * len(train) + ["test"] * len(test)
    table = pd.DataFrame({"row": range(len(volumes)), "subject": [f"sub-{i:010x}" for i in range(len(volumes))],
                          "split": splits, "augmented": 0, "sequence": "t1"})
    assert list(table.columns[:4]) == VOLUME_TABLE_COLUMNS
    table.to_csv(folder / "volumes.tsv", sep="\t", index=False)
    (folder / "grid.json").write_text(json.dumps({"shape": [SIDE] * 3, "spacing_mm": [2.0] * 3,
                                                  "affine": AFFINE.tolist()}))
    return folder / "volumes.npy", folder / "volumes.tsv", folder / "grid.json"


def run_job(tmp_path, samples: np.ndarray, train: np.ndarray, test: np.ndarray, name: str = "run"):
    volumes, table, grid = write_volume_dataset(tmp_path / "data", train, test)
    np.save(tmp_path / f"{name}.npy", samples.astype(np.float32))
    out = tmp_path / "metrics" / name
    out.mkdir(parents=True)
    result = vm.volumetric_job(tmp_path / f"{name}.npy", volumes, table, grid, tmp_path / "no-weights.pth",
                               out_json=out / "seed0.volumetric.json", out_png=out / "seed0.volumetric.png",
                               features=pooled_features, **SETTINGS)
    return result, out


TRAIN, TEST = phantoms(6, seed=1), phantoms(3, seed=2)


def test_samples_that_are_the_training_volumes_score_zero_distances_and_are_copies(tmp_path):
    result, out = run_job(tmp_path, TRAIN.copy(), TRAIN, TEST)
    assert json.loads((out / "seed0.volumetric.json").read_text()) == json.loads(json.dumps(result))
    for plane in vm.PLANES:
        assert result["fid"][f"fid_{plane}"] == pytest.approx(0.0, abs=1e-6)
    assert result["fid"]["fid_2_5d"] == pytest.approx(0.0, abs=1e-6)
    assert "2.5-D FID" in result["fid"]["note"]
    assert result["tissue_intensity"]["wasserstein"] == 0.0
    assert result["brain_volume"]["wasserstein_ml"] == 0.0
    assert result["brain_volume"]["generated_ml"] == result["brain_volume"]["real_ml"]
    assert result["memorization"]["voxel"]["fraction_likely_copies"] == 1.0
    assert result["memorization"]["voxel"]["samples"]["median"] == 0.0
    # the samples' slices at the reported positions against the training volumes' slices there
    axial = result["slice_indices"]["axial"]
    assert axial == vm.central_indices(SIDE, vm.SLICES_PER_PLANE).tolist()
    slices = vm.plane_slices(TRAIN, "axial", axial)
    expected = sample_metrics(slices, slices) | pairwise_ms_ssim(slices, n_pairs=20, seed=0, kernel_size=4)
    for key in vm.PLANE_METRICS:
        assert result["planes"]["axial"][key] == pytest.approx(expected[key]), key
    reference = sample_metrics(vm.plane_slices(TEST, "axial", axial), vm.plane_slices(TRAIN, "axial", axial))
    assert result["real_planes"]["axial"]["dataset_similarity"] == pytest.approx(reference["dataset_similarity"])
    assert result["ms_ssim_3d"]["n_volumes"] == 6
    assert result["ms_ssim_3d_real"]["n_volumes"] == 3
    assert (result["n_samples"], result["n_train"], result["n_test"]) == (6, 6, 3)


def test_a_brighter_tissue_is_measured_and_only_copies_are_flagged(tmp_path):
    shifted = TRAIN + np.float32(0.1) * (TRAIN > 0.2)
    result, _ = run_job(tmp_path, shifted, TRAIN, TEST)
    # the tissue histogram moves by the shift (within one bin of 0.01); the brain's size does not
    assert result["tissue_intensity"]["wasserstein"] == pytest.approx(0.1, abs=0.01)
    assert result["brain_volume"]["wasserstein_ml"] == 0.0
    assert all(result["fid"][f"fid_{plane}"] > 1e-3 for plane in vm.PLANES)
    # a brightened copy is still nearer its training volume than any real test volume is to its own
    assert result["memorization"]["voxel"]["fraction_likely_copies"] == 1.0
    new, _ = run_job(tmp_path / "new", phantoms(4, seed=3), TRAIN, TEST)
    assert new["memorization"]["voxel"]["fraction_likely_copies"] == 0.0
    assert new["memorization"]["voxel"]["samples"]["median"] > 0


def test_real_slices_are_cut_a_chunk_at_a_time_onto_disk(tmp_path):
    write_volume_dataset(tmp_path, TRAIN, TEST)
    split, _ = open_volume_split(tmp_path / "volumes.npy", tmp_path / "volumes.tsv", "train")
    for plane in vm.PLANES:
        on_disk = vm.write_plane_slices(split, plane, [3, 8, 12], tmp_path / f"{plane}.npy", chunk=4)
        assert np.array_equal(on_disk[:], vm.plane_slices(TRAIN, plane, [3, 8, 12]))


def test_samples_on_another_grid_or_outside_0_1_are_refused_naming_the_file(tmp_path):
    with pytest.raises(InputError, match="must be on its dataset's grid"):
        run_job(tmp_path, phantoms(2, seed=4)[:, :, :, :, :8], TRAIN, TEST)
    with pytest.raises(InputError, match=r"bad\.npy.*\[0, 1\]"):
        run_job(tmp_path / "b", TRAIN * 2, TRAIN, TEST, name="bad")


def test_orthogonal_views_put_samples_left_of_real_volumes(tmp_path):
    samples, real = np.zeros((2, 1, 8, 10, 12), np.float32), np.ones((3, 1, 8, 10, 12), np.float32)
    image = vm.orthogonal_views(samples, real, min_pixels=24)
    # tiles hold the tallest (Z = 12) and widest (Y = 10) slice, enlarged twice to 24 x 20 px;
    # three columns of them (+ 2 px borders) per side, a 12 px gap between samples and real volumes
    side = 3 * (20 + 2) + 2
    assert image.shape == (3 * (24 + 2) + 2, 2 * side + 12)
    assert image[10:18, 8:16].max() == 0.0  # the middle of the first (black) sample tile
    assert image[10:18, side + 12 + 8:side + 12 + 16].min() == 1.0  # of the first (white) real tile
    _, out = run_job(tmp_path, TRAIN.copy(), TRAIN, TEST)
    assert (out / "seed0.volumetric.png").read_bytes().startswith(b"\x89PNG")


def test_the_memory_request_grows_with_the_cohort_only_by_its_slices_features():
    from pipeline_lib.core.volumes import volumetric_evaluation_mb, volumetric_slices

    samples, small, large = (8, 1, 64, 64, 64), (36, 1, 64, 64, 64), (260, 1, 64, 64, 64)
    assert volumetric_slices(samples, large) == 3 * 8 * (8 + 260)
    # 224 more volumes: 8 slices each per plane, one plane's 2,048 float64 features held twice
    growth = volumetric_evaluation_mb(samples, large) - volumetric_evaluation_mb(samples, small)
    assert growth == pytest.approx(2 * 224 * 8 * 2048 * 8 / 1024 ** 2)
    # more samples are held whole, with their copies: 4 x 1 MB each
    more_samples = volumetric_evaluation_mb((16, 1, 64, 64, 64), small) - volumetric_evaluation_mb(samples, small)
    assert more_samples == pytest.approx(8 * 4 * 1.0 + 2 * 8 * 8 * 2048 * 8 / 1024 ** 2)
