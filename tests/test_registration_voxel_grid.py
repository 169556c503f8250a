"""``registration.voxel_size``: the output grid by voxel size, checked against phantoms whose
geometry the test sets (Han et al.: BraTS's 240 x 240 x 155 at 1 mm, sagittal slices #80-#149).

Ground truth: a phantom template at 2 mm with an off-centre "brain" box and a bright plane at a
known world coordinate. Registered with ``transform: none`` onto 240 x 240 x 155 voxels of 1 mm,
the output must have that shape and spacing, its centre on the brain's centre, the plane in the
voxel its world coordinate names, and sagittal slices 80-149 must cover 70 mm (69 mm between the
first and last slice centres). Without voxel_size the grid spans the template's field of view,
which is what Han's preset had before (0.8 x 1.0 x 1.2 mm here, 57 mm for slices 80-149).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings import RegistrationSettings, read_settings
from pipeline_lib.imaging import registration as reg
from pipeline_lib.imaging.slice_geometry import SliceSelection, select_slices

HAN_GRID = (240, 240, 155)
ONE_MM = (1.0, 1.0, 1.0)
PHANTOM_SHAPE = (96, 112, 90)            # 2 mm voxels: 192 x 224 x 180 mm field of view
PHANTOM_ORIGIN = (-90.0, -120.0, -70.0)  # RAS mm of voxel (0, 0, 0)
BRAIN_LOW, BRAIN_HIGH = (20, 25, 5), (80, 95, 75)   # brain box in phantom voxels (inclusive)
MARKER_X_MM = 12.0                                   # a sagittal plane of bright voxels
HAN_SAGITTAL = SliceSelection("range", first=80, last=149)


def _phantom_affine() -> np.ndarray:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = PHANTOM_ORIGIN
    return affine


def _brain_centre_ras() -> np.ndarray:
    middle = (np.asarray(BRAIN_LOW) + np.asarray(BRAIN_HIGH)) / 2
    return np.asarray(PHANTOM_ORIGIN) + 2.0 * middle


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    """A brain-only phantom template (brain box 100, marker plane 400 inside it, 0 outside)."""
    data = np.zeros(PHANTOM_SHAPE, np.float32)
    (x0, y0, z0), (x1, y1, z1) = BRAIN_LOW, BRAIN_HIGH
    data[x0:x1 + 1, y0:y1 + 1, z0:z1 + 1] = 100.0
    marker = int(round((MARKER_X_MM - PHANTOM_ORIGIN[0]) / 2.0))
    data[marker, y0:y1 + 1, z0:z1 + 1] = 400.0
    path = tmp_path_factory.mktemp("phantom") / "template.nii.gz"
    nib.save(nib.Nifti1Image(data, _phantom_affine()), str(path))
    return path


@pytest.fixture(scope="module")
def registered_on_voxel_grid(phantom, tmp_path_factory):
    """The phantom registered (transform none) onto Han's grid at 1 mm: (image, status)."""
    settings = {"template": str(phantom), "transform": "none", "grid": list(HAN_GRID), "voxel_size": list(ONE_MM)}
    cfg = read_settings(RegistrationSettings, settings)
    target = reg.make_target(cfg.template, cfg.grid, cfg.template_mask, voxel_size=cfg.voxel_size)
    out = tmp_path_factory.mktemp("registered")
    status = reg.register_subject(phantom, target, out, "sub-phantom", settings, {"brain_extraction": "none"})
    return nib.load(str(out / reg.REGISTERED_NAME)), status, target


def test_voxel_size_grid_has_the_paper_shape_spacing_and_centre(registered_on_voxel_grid):
    image, status, target = registered_on_voxel_grid
    assert status["status"] == "ok", status.get("reason")
    assert image.shape == HAN_GRID
    assert np.allclose(image.affine[:3, :3], np.diag(ONE_MM))     # RAS, 1 mm isotropic
    centre_voxel = (np.asarray(HAN_GRID) - 1) / 2
    centre = image.affine[:3, :3] @ centre_voxel + image.affine[:3, 3]
    # on the brain's centre, moved onto the phantom's 2 mm voxel lattice (by at most 1 mm)
    assert np.all(np.abs(centre - _brain_centre_ras()) <= 1.0 + 1e-6)
    assert np.allclose((image.affine[:3, 3] - PHANTOM_ORIGIN) / 2.0 % 1, 0, atol=1e-4)
    extent = np.asarray(HAN_GRID) * np.asarray(ONE_MM)
    assert np.allclose(extent, (240, 240, 155))
    assert tuple(target.reference.spacing) == pytest.approx(ONE_MM)


def test_data_lands_where_the_affine_says(registered_on_voxel_grid):
    image, _, _ = registered_on_voxel_grid
    data = np.asarray(image.dataobj)
    # the marker plane: 2 mm thick in the phantom, centred on MARKER_X_MM
    profile = data[:, HAN_GRID[1] // 2, HAN_GRID[2] // 2]
    peak = int(np.argmax(profile))
    peak_mm = image.affine[0, 0] * peak + image.affine[0, 3]
    assert abs(peak_mm - MARKER_X_MM) <= 1.0
    # the brain box keeps its size in mm: 61 phantom voxels of 2 mm along x = 122 mm
    brain_x = np.flatnonzero(profile > 50)
    assert abs((brain_x[-1] - brain_x[0] + 1) - 2 * (BRAIN_HIGH[0] - BRAIN_LOW[0] + 1)) <= 2


def test_sagittal_slices_80_to_149_cover_70_mm(registered_on_voxel_grid):
    image, _, _ = registered_on_voxel_grid
    slices, index, position = select_slices(np.asarray(image.dataobj), image.affine, "sagittal", HAN_SAGITTAL)
    assert len(slices) == 70
    assert index[0] == 80
    assert index[-1] == 149
    spacing = float(image.affine[0, 0])
    assert position[-1] - position[0] + spacing == pytest.approx(70.0)
    # slice #80 lies 39.5 mm left of the grid's centre (the brain's, within 1 mm), as in BraTS's frame
    centre_x = image.affine[0, 0] * (HAN_GRID[0] - 1) / 2 + image.affine[0, 3]
    assert position[0] - centre_x == pytest.approx(80 - 119.5)
    assert abs(centre_x - _brain_centre_ras()[0]) <= 1.0


def test_without_voxel_size_the_grid_spans_the_field_of_view(phantom):
    """The former reading (still the default): 240 voxels across 192 mm are 0.8 mm."""
    target = reg.make_target(str(phantom), HAN_GRID)
    spacing = np.asarray(target.reference.spacing)
    assert spacing == pytest.approx([(n - 1) * 2.0 / (m - 1) for n, m in zip(PHANTOM_SHAPE, HAN_GRID)])
    assert 70 * spacing[0] < 57  # slices 80-149 cover under 57 mm there


def test_packaged_template_fits_han_grid_at_1_mm():
    """The MNI152 template's brain, 1 mm, on 240 x 240 x 155 voxels of 1 mm around its brain:
    copied voxel for voxel (integer offsets), nothing of the brain left outside the box."""
    native = reg._read_volume(reg.template_path(None)).numpy() > 0
    target = reg.make_target(None, HAN_GRID, voxel_size=ONE_MM)
    assert target.reference.shape == HAN_GRID
    assert tuple(target.reference.spacing) == pytest.approx(ONE_MM)
    assert target.reference_mask.sum() == native.sum()


@pytest.mark.parametrize("bad", [[1, 1], [1, 0, 1], [1, -2, 1], "1mm", [True, 1, 1]])
def test_bad_voxel_size_is_a_config_error(bad):
    with pytest.raises(InputError, match="voxel_size"):
        read_settings(RegistrationSettings, {"voxel_size": bad})
