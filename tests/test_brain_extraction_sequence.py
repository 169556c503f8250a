"""``preprocessing.brain_extraction_sequence``: the brain mask taken from another sequence of the
subject (a DWI series' b0) and carried onto the reference (its b1000) through world coordinates.

Ground truth: a b1000-like reference whose signal covers only the inner part of a box "brain"
(CSF and cortex dark at b = 1000) and a b0-like volume, on a coarser grid of its own, whose signal
covers the whole box. Extraction (``none`` = the foreground, so the mask is exactly the signal)
on the b0 must give the whole box on the reference's voxels; on the reference, only its inner part.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings import PreprocessingSettings, read_settings
from pipeline_lib.imaging import registration as reg

GRID = (24, 28, 16)
SHAPE = (40, 48, 40)                     # the reference: 5 mm voxels (the inner part is 360 ml)
BOX = (slice(8, 32), slice(8, 40), slice(8, 32))
INNER = (slice(14, 26), slice(14, 34), slice(14, 26))


@pytest.fixture(scope="module")
def dwi_subject(tmp_path_factory):
    root = tmp_path_factory.mktemp("dwi")
    affine = np.diag([5.0, 5.0, 5.0, 1.0])
    affine[:3, 3] = [-100.0, -120.0, -100.0]
    b1000 = np.zeros(SHAPE, np.float32)
    b1000[INNER] = 40.0
    reference = root / "dwi.nii.gz"
    nib.save(nib.Nifti1Image(b1000, affine), str(reference))
    # the b0 on 10 mm voxels (same world box): the mask must travel through world coordinates
    b0 = np.zeros(tuple(n // 2 for n in SHAPE), np.float32)
    b0[tuple(slice(s.start // 2, s.stop // 2) for s in BOX)] = 300.0
    b0_affine = affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    b0_affine[:3, 3] = affine[:3, 3] + 2.5  # voxel centres of a 2x coarser grid over the same box
    other = root / "b0.nii.gz"
    nib.save(nib.Nifti1Image(b0, b0_affine), str(other))
    return reference, other


def _native_mask(reference, others, extraction_sequence, out):
    target = reg.make_target(None, GRID, resolution_mm=3)
    pre = {"brain_extraction": "none", "brain_extraction_sequence": extraction_sequence}
    reg.register_subject(reference, target, out, "sub-dwi", {"grid": list(GRID), "transform": "none"}, pre,
                         sequence="dwi", others=others)
    qc = json.loads((out / reg.QC_NAME).read_text())
    return np.asarray(nib.load(str(out / reg.NATIVE_MASK_NAME)).dataobj) > 0, qc


def test_mask_from_the_b0_covers_the_brain_the_b1000_shows_only_in_part(dwi_subject, tmp_path):
    reference, b0 = dwi_subject
    box = np.zeros(SHAPE, bool)
    box[BOX] = True
    inner = np.zeros(SHAPE, bool)
    inner[INNER] = True
    from_b0, qc = _native_mask(reference, {"b0": b0}, "b0", tmp_path / "b0")
    assert qc["brain_extraction_sequence"] == "b0"
    # the whole box, on the reference's 5 mm voxels, within a voxel at the edges
    assert (from_b0 & box).sum() / box.sum() > 0.9
    assert (from_b0 & ~box).sum() < 0.1 * box.sum()
    assert from_b0.sum() > 2 * inner.sum()
    from_reference, qc = _native_mask(reference, {"b0": b0}, None, tmp_path / "dwi")
    assert qc["brain_extraction_sequence"] == "reference"
    np.testing.assert_array_equal(from_reference, inner)


def test_a_subject_without_the_sequence_falls_back_to_the_reference(dwi_subject, tmp_path):
    reference, _ = dwi_subject
    mask, qc = _native_mask(reference, {}, "b0", tmp_path / "none")
    assert qc["brain_extraction_sequence"] == "reference"
    assert mask.sum() == np.prod([12, 20, 12])


def test_bad_sequence_name_is_a_config_error():
    with pytest.raises(InputError, match="brain_extraction_sequence"):
        read_settings(PreprocessingSettings, {"brain_extraction_sequence": "B0 images"})
