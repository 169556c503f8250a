"""Volumetric evaluation (evaluation/volumetric.py) on volumes whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.slices import SplitImages
from pipeline_lib.evaluation import volumetric as vm
from pipeline_lib.evaluation.memorization import nearest_by_mse
from pipeline_lib.imaging.slice_geometry import ras_to_display

RNG = np.random.default_rng(0)


def test_plane_slices_match_the_slice_datasets_display_in_every_plane():
    volumes = RNG.random((3, 2, 6, 7, 5)).astype(np.float32)
    for plane in vm.PLANES:
        slices = vm.plane_slices(volumes, plane)
        expected = np.concatenate([ras_to_display(volumes[n, c], plane) for n in range(3) for c in range(2)])
        assert np.array_equal(slices, expected), plane
    assert vm.plane_slices(volumes, "axial").shape == (3 * 2 * 5, 7, 6)
    assert vm.plane_slices(volumes, "coronal").shape == (3 * 2 * 7, 5, 6)
    assert vm.plane_slices(volumes, "sagittal").shape == (3 * 2 * 6, 5, 7)


def test_plane_slices_pick_indices_and_orientation_by_anatomy():
    volume = np.zeros((1, 1, 6, 7, 5), np.float32)
    volume[0, 0, 5, 6, 4] = 1.0  # the patient's far right, anterior, superior corner
    axial = vm.plane_slices(volume, "axial", indices=[4])
    assert axial.shape == (1, 7, 6)
    assert axial[0, 0, 0] == 1.0  # anterior up, right on the image's left
    sagittal = vm.plane_slices(volume, "sagittal", indices=[5])
    assert sagittal[0, 0, 0] == 1.0  # superior up, anterior on the left
    with pytest.raises(InputError, match="coronal slice indices"):
        vm.plane_slices(volume, "coronal", indices=[7])
    assert list(vm.central_indices(48, 3)) == [12, 24, 35]


def test_three_plane_fid_averages_the_planes_and_says_it_is_2_5_d():
    real, generated = RNG.random((2, 1, 4, 6, 8)), RNG.random((2, 1, 4, 6, 8))
    seen = []

    def fake_fid(a, b):  # stands for a 2-D FID: records what each plane gets
        seen.append((a.shape, b.shape))
        return float(a.shape[-1] * a.shape[-2])

    result = vm.three_plane_fid(real, generated, fake_fid)
    assert seen == [((16, 6, 4), (16, 6, 4)), ((12, 8, 4), (12, 8, 4)), ((8, 8, 6), (8, 8, 6))]
    assert result["fid_axial"] == 24
    assert result["fid_coronal"] == 32
    assert result["fid_sagittal"] == 48
    assert result["fid_2_5d"] == pytest.approx((24 + 32 + 48) / 3)
    assert "2.5-D" in result["note"]


def test_ms_ssim_3d_scales_follow_the_smallest_side():
    assert len(vm.ms_ssim_3d_scales((48, 48, 48), 11)) == 3
    assert len(vm.ms_ssim_3d_scales((48, 48, 32), 11)) == 2
    assert vm.ms_ssim_3d_scales((176, 200, 180), 11) == vm.MS_SSIM_WEIGHTS
    assert vm.min_side_for_scales(5, 11) == 176
    assert vm.min_side_for_scales(3, 11) == 44
    with pytest.raises(InputError, match=r"volumes of \(8, 8, 8\) voxels"):
        vm.ms_ssim_3d_scales((8, 8, 8), 11)


def test_ms_ssim_3d_is_one_for_copies_and_lower_for_a_diverse_set():
    base = np.clip(RNG.normal(0.5, 0.1, (1, 1, 24, 24, 24)), 0, 1).astype(np.float32)
    copies = np.repeat(base, 4, axis=0)
    same = vm.pairwise_ms_ssim_3d(copies, n_pairs=6, seed=0, kernel_size=7)
    assert same["ms_ssim_3d_mean"] == pytest.approx(1.0, abs=1e-4)
    assert same["n_pairs"] == 6
    assert same["ms_ssim_scales"] == 2  # 24 voxels and a 7-voxel window: 24 // 2^2 = 6 fails MONAI's check for 3
    diverse = np.clip(RNG.normal(0.5, 0.1, (4, 1, 24, 24, 24)), 0, 1).astype(np.float32)
    assert vm.pairwise_ms_ssim_3d(diverse, n_pairs=6, seed=0, kernel_size=7)["ms_ssim_3d_mean"] < 0.5


def test_nearest_training_volume_streams_chunks_and_finds_the_copy(tmp_path):
    train = RNG.random((7, 1, 5, 6, 4)).astype(np.float32)
    path = tmp_path / "train.npy"
    np.save(path, train)
    on_disk = SplitImages(path, np.arange(7))
    samples = np.stack([train[5] + 0.01, RNG.random((1, 5, 6, 4)).astype(np.float32)])
    nearest, mse = vm.nearest_training_volumes(samples, on_disk, chunk=2)
    whole_index, whole_mse = nearest_by_mse(samples.reshape(2, 1, -1), train.reshape(7, 1, -1))
    assert nearest[0] == 5
    assert mse[0] == pytest.approx(1e-4, rel=1e-3)
    assert np.array_equal(nearest, whole_index)
    assert np.allclose(mse, whole_mse)
    with pytest.raises(InputError, match="cannot be compared"):
        vm.nearest_training_volumes(samples[:, :, :4], train)


def test_volume_memorization_flags_copies_and_not_new_volumes():
    train = RNG.random((6, 1, 5, 5, 5)).astype(np.float32)
    test = RNG.random((6, 1, 5, 5, 5)).astype(np.float32)
    samples = np.concatenate([train[:2] + 0.001, RNG.random((2, 1, 5, 5, 5)).astype(np.float32)])
    result = vm.volume_memorization(samples, train, test, percentile=5, chunk=4)
    assert result["voxel"]["n_likely_copies"] == 2
    assert result["voxel"]["fraction_likely_copies"] == 0.5
    assert list(result["_arrays"]["nearest"][:2]) == [0, 1]


def test_brain_volume_counts_voxels_above_threshold_inside_the_mask():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])  # 8 mm^3 a voxel
    volumes = np.zeros((2, 1, 20, 20, 20), np.float32)
    volumes[0, 0, 6:16, 2:12, 2:12] = 0.8   # 1000 voxels = 8 mL, all inside the mask
    volumes[1, 0, 0:10, 0:10, 0:5] = 0.8    # 500 voxels, 250 of them outside the mask below
    volumes[1, 0, 15:, 15:, 15:] = 0.05     # below the threshold
    mask = np.ones((20, 20, 20), bool)
    mask[0:5] = False
    ml = vm.brain_volumes_ml(volumes, affine, mask=mask, threshold=0.1, batch=1)
    assert ml == pytest.approx([8.0, 2.0])
    assert vm.voxel_volume_ml(affine) == pytest.approx(0.008)
    comparison = vm.brain_volume_comparison(volumes[:1], volumes[1:], affine, mask=mask)
    assert comparison["wasserstein_ml"] == pytest.approx(6.0)
    with pytest.raises(InputError, match="not on the volumes' grid"):
        vm.brain_volumes_ml(volumes, affine, mask=mask[:10])


def test_tissue_histograms_measure_a_known_intensity_shift():
    shape = (4, 1, 16, 16, 16)
    real = RNG.uniform(0.2, 0.6, shape).astype(np.float32)
    shifted = (real + 0.1).astype(np.float32)
    other = RNG.uniform(0.2, 0.6, shape).astype(np.float32)
    assert vm.tissue_intensity_comparison(shifted, real, bins=200)["wasserstein"] == pytest.approx(0.1, abs=0.006)
    assert vm.tissue_intensity_comparison(other, real, bins=200)["wasserstein"] < 0.01
    counts, edges = vm.tissue_histogram(real, bins=10, threshold=0.0)
    assert counts.sum() == real.size
    assert counts[:2].sum() == 0
    assert counts[6:].sum() == 0
    with pytest.raises(InputError, match="no tissue voxel"):
        vm.tissue_histogram(np.zeros(shape, np.float32))
