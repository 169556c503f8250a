"""Slice geometry: every selection mode gives the anatomical levels it promises, in the stated
display orientation, at the requested (possibly non-square) size."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.imaging import slice_geometry as sg
from pipeline_lib.imaging.slicing import extract_axial_slices

SHAPE = (30, 40, 20)          # x (left -> right), y (posterior -> anterior), z (inferior -> superior)
SPACING = (2.0, 2.0, 2.0)
ORIGIN = (-30.0, -40.0, -20.0)
AFFINE = np.diag([*SPACING, 1.0])
AFFINE[:3, 3] = ORIGIN


def lateralised_phantom() -> np.ndarray:
    """A faint box with one bright marker in the patient's right, anterior, superior octant."""
    volume = np.full(SHAPE, 0.1, dtype=np.float32)
    volume[22:26, 30:34, 14:16] = 1.0   # right (large x), anterior (large y), superior (large z)
    return volume


def world(axis: int, index: float) -> float:
    return ORIGIN[axis] + SPACING[axis] * index


def marker_pixels(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(image > 0.5)
    assert rows.size, "marker not in this slice"
    return rows.mean() / image.shape[0], cols.mean() / image.shape[1]


@pytest.mark.parametrize("axis, expect", [
    # (row fraction < 0.5 means top, column fraction < 0.5 means image left)
    ("axial", {"top": "anterior", "left": "right"}),
    ("coronal", {"top": "superior", "left": "right"}),
    ("sagittal", {"top": "superior", "left": "anterior"}),
])
def test_display_orientation_is_radiological(axis, expect):
    volume = lateralised_phantom()
    slices, index, position = sg.select_slices(volume, AFFINE, axis, sg.SliceSelection())
    hit = [i for i, image in enumerate(slices) if (image > 0.5).any()]
    assert hit, axis
    row, col = marker_pixels(slices[hit[0]])
    assert row < 0.5, (axis, row, col)
    assert col < 0.5, (axis, row, col)  # the marker's side appears top-left
    # slices ascend along the world axis: the marker (large coordinate) is in the last half
    assert position[hit[0]] > np.median(position)
    assert np.all(np.diff(position) > 0)


def test_axial_drop_matches_the_original_protocol():
    volume = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    slices, index, _ = sg.select_slices(volume, AFFINE, "axial", sg.SliceSelection(mode="drop", low=8, high=6))
    old, kept = extract_axial_slices(volume, drop_top=6, drop_bottom=8)
    np.testing.assert_array_equal(slices, old)
    np.testing.assert_array_equal(index, kept)


def test_range_central_and_mm_offsets_select_known_levels():
    volume = lateralised_phantom()
    _, index, position = sg.select_slices(volume, AFFINE, "sagittal",
                                          sg.SliceSelection(mode="range", first=5, last=9))
    assert index.tolist() == [5, 6, 7, 8, 9]
    assert position.tolist() == [world(0, i) for i in range(5, 10)]
    _, index, _ = sg.select_slices(volume, AFFINE, "axial", sg.SliceSelection(mode="central", n=4))
    assert index.tolist() == [8, 9, 10, 11]  # 20 slices: the middle four
    # the marker spans z indices 14-15, i.e. world z 8 and 10 mm; sections at 9 +- 1 mm hit it
    selection = sg.SliceSelection(mode="offsets_mm", level_mm=9.0, offsets_mm=[-4, -2, 0, 2, 4])
    slices, index, position = sg.select_slices(volume, AFFINE, "axial", selection)
    np.testing.assert_allclose(position, [5.0, 7.0, 9.0, 11.0, 13.0])
    np.testing.assert_allclose(index, [12.5, 13.5, 14.5, 15.5, 16.5])
    peaks = slices.max(axis=(1, 2))
    assert peaks[2] == pytest.approx(1.0)
    assert peaks[0] < 0.2  # 9 mm is inside the marker, 5 mm is not
    assert peaks[1] == pytest.approx(0.55)                   # halfway between background and marker


def test_selection_errors_name_the_problem():
    volume = lateralised_phantom()
    with pytest.raises(InputError, match="exceeds the 30 sagittal slices"):
        sg.select_slices(volume, AFFINE, "sagittal", sg.SliceSelection(mode="range", first=0, last=30))
    with pytest.raises(InputError, match="outside the grid"):
        sg.select_slices(volume, AFFINE, "axial", sg.SliceSelection(mode="offsets_mm", level_mm=50, offsets_mm=[0]))
    with pytest.raises(InputError, match="leaves none"):
        sg.select_slices(volume, AFFINE, "axial", sg.SliceSelection(mode="drop", low=10, high=10))
    with pytest.raises(InputError, match="reorient to RAS"):
        sg.select_slices(volume, np.diag([-2.0, 2.0, 2.0, 1.0]), "sagittal", sg.SliceSelection())
    with pytest.raises(InputError, match="selection.mode"):
        sg.SliceSelection(mode="middle")


def test_non_square_output_under_each_fit_policy():
    slice_ = np.zeros((1, 20, 10), dtype=np.float32)
    slice_[0, :, :] = 1.0
    resized = sg.fit_slices(slice_, (218, 182), "resize")
    assert resized.shape == (1, 218, 182)
    assert resized.min() == 1.0       # stretched to fill
    padded = sg.fit_slices(slice_, (40, 40), "pad")
    assert padded.shape == (1, 40, 40)
    assert padded[0, :, :10].max() == 0
    assert padded[0, :, 10:30].min() == 1.0  # 2x scale, centred
    cropped = sg.fit_slices(slice_, (10, 16), "crop")
    assert cropped.shape == (1, 10, 16)
    assert cropped[0, :, 3:13].min() == 1.0
    assert cropped[0, :, :3].max() == 0  # no scaling
