"""Multi-sequence subjects: the transform estimated on the reference sequence is applied to the
others (and to the masks), and registered_volumes lists them; real ANTs on a 3 mm template."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from pipeline_lib.imaging import registration as reg
from pipeline_lib.imaging.sequences import registered_volumes

GRID = (24, 28, 16)
SUBJECT = "sub-0a1b2c3d4e"


def _rotation(degrees_z: float) -> np.ndarray:
    a = np.deg2rad(degrees_z)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


@pytest.fixture(scope="module")
def multi_sequence_run(tmp_path_factory):
    """A moved template as t1; t2 = a non-linear contrast of it, written on a coarser grid of its
    own (so the transform must go through world coordinates); a lesion mask; one registration."""
    root = tmp_path_factory.mktemp("seq")
    fixed = reg.template_image(reg.template_path(None), 3)
    data = fixed.numpy()
    centre = (np.array(data.shape) - 1) / 2
    matrix = _rotation(8) @ np.diag([1.06, 0.96, 1.0])
    moved = ndimage.affine_transform(data, matrix, offset=centre - matrix @ centre + [2, -1, 1], order=1)
    affine = np.diag([*fixed.spacing, 1.0])
    affine[:3, 3] = [-fixed.origin[0], -fixed.origin[1], fixed.origin[2]]
    t1 = root / "t1.nii.gz"
    nib.save(nib.Nifti1Image(moved.astype(np.float32), affine), str(t1))
    # the same anatomy in another contrast, on a grid of its own: cropped by 3 and 2 voxels at
    # the start of x and z and stored with z reversed (same world positions, other voxel indices)
    t2_data = np.where(moved > 0, np.sqrt(np.clip(moved, 0, None)) * 10, 0)[3:, :, 2:][:, :, ::-1]
    t2_affine = affine @ np.array([[1, 0, 0, 3], [0, 1, 0, 0], [0, 0, -1, moved.shape[2] - 1], [0, 0, 0, 1.0]])
    t2 = root / "t2.nii.gz"
    nib.save(nib.Nifti1Image(t2_data.astype(np.float32), t2_affine), str(t2))
    lesion = np.zeros_like(moved)
    lesion[tuple(slice(int(c) - 3, int(c) + 3) for c in centre)] = 2
    seg = root / "seg.nii.gz"
    nib.save(nib.Nifti1Image(lesion.astype(np.float32), affine), str(seg))
    target = reg.make_target(None, GRID, resolution_mm=3)
    out = root / "out"
    status = reg.register_subject(t1, target, out, SUBJECT, {"grid": list(GRID), "seed": 1},
                                  {"brain_extraction": "none"}, sequence="t1",
                                  others={"t2": t2}, masks={"seg": seg})
    return out, status


def test_the_reference_transform_aligns_the_other_sequence_voxel_wise(multi_sequence_run):
    out, status = multi_sequence_run
    assert status["status"] == "ok"
    volumes = registered_volumes(out)
    assert list(volumes) == ["t1", "t2"]
    assert volumes["t1"].name == "registered.nii.gz"
    t1 = np.asarray(nib.load(str(volumes["t1"])).dataobj)
    t2 = np.asarray(nib.load(str(volumes["t2"])).dataobj)
    assert t1.shape == t2.shape == GRID
    brain = np.asarray(nib.load(str(out / "brain_mask.nii.gz")).dataobj) > 0
    inner = ndimage.binary_erosion(brain, iterations=2)
    # t2 is sqrt(t1) * 10 on its own grid: through the same transform they agree voxel by voxel
    expected = np.sqrt(np.clip(t1, 0, None)) * 10
    assert np.corrcoef(t2[inner], expected[inner])[0, 1] > 0.99
    # a misalignment of one voxel would cost much more than the coarser grid does
    shifted = np.roll(expected, 2, axis=0)
    assert np.corrcoef(t2[inner], shifted[inner])[0, 1] < np.corrcoef(t2[inner], expected[inner])[0, 1] - 0.05
    qc = json.loads((out / "qc.json").read_text())
    assert qc["t2_correlation"] > 0.9
    assert qc["t2_signal"] > 0.9
    assert (out / "overlay-t2.png").stat().st_size > 1000


def test_masks_go_through_the_transform_with_their_labels_and_are_not_images(multi_sequence_run):
    out, _ = multi_sequence_run
    manifest = json.loads((out / "sequences.json").read_text())
    assert manifest == {"reference": "t1", "order": ["t1", "t2"], "sequences": {"t1": "registered.nii.gz", "t2": "registered-t2.nii.gz"},
                        "masks": {"seg": "mask-seg.nii.gz"}}
    seg = np.asarray(nib.load(str(out / "mask-seg.nii.gz")).dataobj)
    assert set(np.unique(seg)) == {0, 2}
    assert (seg > 0).sum() > 0
    assert "seg" not in registered_volumes(out)


def test_single_sequence_folders_keep_their_one_volume(tmp_path):
    assert registered_volumes(tmp_path) == {}
    (tmp_path / "registered.nii.gz").write_bytes(b"x")
    assert registered_volumes(tmp_path) == {"image": tmp_path / "registered.nii.gz"}
    assert registered_volumes(tmp_path, "t1") == {"t1": tmp_path / "registered.nii.gz"}
