"""Offline 3-D augmentation (Kazuhiro et al.): combination count, seeding, and geometry against
known rotations, sections and flips."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.imaging import augmentation as aug
from pipeline_lib.imaging import slice_geometry as sg

SHAPE = (41, 41, 21)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])
AFFINE[:3, 3] = (-20.0, -20.0, -10.0)   # voxel (20, 20, 10) is the world origin


def test_the_papers_grid_has_48510_combinations_and_sampling_is_seeded_per_subject():
    settings = aug.VolumeAugmentation(count=12, seed=3)
    assert settings.n_combinations == 48510
    a = aug.sample_combinations(settings, "sub-0000000001")
    assert len(a) == 12
    assert len({tuple(c.values()) for c in a}) == 12
    assert a == aug.sample_combinations(settings, "sub-0000000001")
    assert a != aug.sample_combinations(settings, "sub-0000000002")
    assert a != aug.sample_combinations(aug.VolumeAugmentation(count=12, seed=4), "sub-0000000001")
    for c in a:
        assert abs(c["rot_x"]) <= 10
        assert abs(c["rot_y"]) <= 10
        assert abs(c["rot_z"]) <= 5
        assert c["offset_mm"] in (-4, -2, 0, 2, 4)
        assert c["rot_x"] == round(c["rot_x"])
    assert aug.sample_combinations(aug.VolumeAugmentation(count=0), "x") == []
    with pytest.raises(InputError, match="exceeds"):
        aug.VolumeAugmentation(count=10**6)


def identity(offset=0.0, flip=False, **angles):
    return {"rot_x": 0.0, "rot_y": 0.0, "rot_z": 0.0, "offset_mm": offset, "flip": flip, **angles}


def test_unrotated_sections_equal_the_slices_at_those_levels():
    volume = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    combos = [identity(offset=o) for o in (-4, -2, 0, 2, 4)]
    images = aug.augmented_sections(volume, AFFINE, 1.0, combos)
    expected, _, _ = sg.select_slices(volume, AFFINE, "axial",
                                      sg.SliceSelection(mode="offsets_mm", level_mm=1.0, offsets_mm=[-4, -2, 0, 2, 4]))
    np.testing.assert_allclose(images, expected, atol=1e-6)
    flipped = aug.augmented_sections(volume, AFFINE, 1.0, [identity(flip=True)])
    np.testing.assert_array_equal(flipped[0], expected[2][:, ::-1])


def test_a_rotation_about_z_moves_an_off_centre_marker_as_predicted():
    volume = np.zeros(SHAPE, dtype=np.float32)
    volume[30, 20, 10] = 1.0                     # 10 mm to the patient's right of the centre
    image = aug.augmented_sections(volume, AFFINE, 0.0, [identity(rot_z=5.0)])[0]
    # rotating the head by +5 deg about z carries (10, 0) mm to (10 cos 5, 10 sin 5) mm
    x, y = 10 * np.cos(np.deg2rad(5)), 10 * np.sin(np.deg2rad(5))
    rows, cols = np.indices(image.shape)
    weight = image.sum()
    row, col = (rows * image).sum() / weight, (cols * image).sum() / weight
    # display: row 0 = anterior (y = +20 mm), column 0 = patient's right (x = +20 mm)
    assert row == pytest.approx(20 - y, abs=0.15)
    assert col == pytest.approx(20 - x, abs=0.15)
    # a rotation about x tilts the section: the marker at z = 0 stays at its place on the x axis
    tilted = aug.augmented_sections(volume, AFFINE, 0.0, [identity(rot_x=10.0)])[0]
    assert tilted[20, 10] == pytest.approx(1.0)
