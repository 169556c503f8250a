"""Registration to the MNI template with real ANTs, on a small grid to stay quick.

Moving images are the nilearn-shipped MNI template at 2 mm, moved by a known
affine or deformed non-linearly with scipy (no other full brain ships offline).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from pipeline_lib.imaging import registration as reg
from pipeline_lib.core.errors import InputError

GRID = (32, 32, 16)
SUBJECT = "sub-0a1b2c3d4e"


@pytest.fixture(scope="module")
def registration_template() -> Path:
    return reg.template_path(None)


@pytest.fixture(scope="module")
def registration_fixed(registration_template):
    """The template at 2 mm, as the pipeline registers against."""
    return reg.template_image(registration_template, 2)


@pytest.fixture(scope="module")
def registration_fixed_3mm(registration_template):
    """The template at 3 mm: registrations about four times quicker, for the slower cases."""
    return reg.template_image(registration_template, 3)


@pytest.fixture(scope="module")
def registration_reference(registration_template):
    return reg.make_reference_grid(registration_template, GRID)


def _rotation(degrees_xyz) -> np.ndarray:
    ax, ay, az = np.deg2rad(degrees_xyz)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _template_affine(fixed) -> np.ndarray:
    """RAS affine of the 2 mm template array (its corner sits at the template origin)."""
    affine = np.diag([*fixed.spacing, 1.0])
    affine[:3, 3] = [-fixed.origin[0], -fixed.origin[1], fixed.origin[2]]  # LPS -> RAS
    return affine


def _moved_template(fixed, path: Path, matrix: np.ndarray, shift_vox) -> Path:
    """Write the template resampled through a known voxel-space affine (about the centre)."""
    data = fixed.numpy()
    centre = (np.array(data.shape) - 1) / 2
    offset = centre - matrix @ centre + np.asarray(shift_vox, dtype=float)
    moved = ndimage.affine_transform(data, matrix, offset=offset, order=1)
    nib.save(nib.Nifti1Image(moved.astype(np.float32), _template_affine(fixed)), str(path))
    return path


@pytest.fixture(scope="module")
def registration_affine_run(registration_fixed, registration_reference, tmp_path_factory):
    """One Affine registration of a rotated, scaled and shifted template, shared by tests."""
    root = tmp_path_factory.mktemp("affine")
    matrix = _rotation((4, -3, 10)) @ np.diag([1.08, 0.95, 1.04])
    moving = _moved_template(registration_fixed, root / "moving.nii.gz", matrix, (4, -3, 2))
    out = root / "out"
    status = reg.register_subject(moving, registration_reference, out, SUBJECT, "Affine", seed=3,
                                  fixed=registration_fixed)
    return moving, out, status


def test_affine_registration_recovers_a_known_affine(registration_affine_run):
    _, out, status = registration_affine_run
    assert status == {"subject": SUBJECT, "status": "ok", "stage": "register", "kind": "", "reason": "",
                      "warning": ""}
    assert json.loads((out / "status.json").read_text()) == status
    qc = json.loads((out / "qc.json").read_text())
    assert qc["subject"] == SUBJECT and qc["transform"] == "Affine" and qc["grid"] == "32x32x16"
    assert qc["correlation_after"] > 0.9
    assert qc["correlation_after"] > qc["correlation_before"] + 0.2


def test_registered_volume_is_float32_ras_on_the_grid(registration_affine_run, registration_reference):
    _, out, _ = registration_affine_run
    image = nib.load(str(out / "registered.nii.gz"))
    assert image.shape == GRID
    assert image.get_data_dtype() == np.float32
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    np.testing.assert_allclose(np.diag(image.affine)[:3], registration_reference.spacing, rtol=1e-5)


def test_overlay_is_a_small_png(registration_affine_run):
    import matplotlib.image as mpimg

    _, out, _ = registration_affine_run
    png = out / "overlay.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(str(png))
    assert pixels.ndim == 3 and 100 < pixels.shape[0] < 400 and pixels.shape[1] < 800
    # grey brain and coloured contours: some pixels are far from grey
    rgb = pixels[..., :3]
    assert (rgb.max(axis=2) - rgb.min(axis=2)).max() > 0.5


def test_same_seed_gives_identical_output(registration_affine_run, registration_reference,
                                          registration_fixed_3mm, tmp_path):
    moving, _, _ = registration_affine_run
    assert os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == "1"  # set by the module
    runs = []
    for name in ("first", "second"):
        status = reg.register_subject(moving, registration_reference, tmp_path / name, SUBJECT, "Affine",
                                      seed=5, fixed=registration_fixed_3mm)
        assert status["status"] == "ok"
        runs.append(nib.load(str(tmp_path / name / "registered.nii.gz")).get_fdata())
    np.testing.assert_array_equal(runs[0], runs[1])


def test_rigid_registration_recovers_rotation_and_shift(registration_fixed_3mm, registration_reference,
                                                        tmp_path):
    moving = _moved_template(registration_fixed_3mm, tmp_path / "moving.nii.gz",
                             _rotation((0, 6, 12)), (5, -4, 3))
    status = reg.register_subject(moving, registration_reference, tmp_path / "out", SUBJECT, "Rigid",
                                  fixed=registration_fixed_3mm)
    qc = json.loads((tmp_path / "out" / "qc.json").read_text())
    assert status["status"] == "ok" and qc["transform"] == "Rigid"
    assert qc["correlation_after"] > 0.9
    assert qc["correlation_after"] > qc["correlation_before"] + 0.2


@pytest.fixture(scope="module")
def registration_deformed_brain(registration_fixed_3mm, tmp_path_factory) -> Path:
    """Template warped non-linearly, bias field and noise added, stored LAS, 30 mm off centre."""
    rng = np.random.default_rng(7)
    data = registration_fixed_3mm.numpy()
    shape = np.array(data.shape)
    grid = np.indices(data.shape, dtype=np.float64)
    centre = ((shape - 1) / 2)[:, None, None, None]
    matrix = _rotation((7, 0, -5)) @ np.diag([1.06, 0.94, 1.03])
    coords = np.tensordot(matrix, grid - centre, axes=1) + centre
    for axis in range(3):
        field = ndimage.gaussian_filter(rng.standard_normal(data.shape), 5)
        coords[axis] += 2.5 * field / np.abs(field).max()
    warped = ndimage.map_coordinates(data, coords, order=1)
    bias = ndimage.gaussian_filter(rng.standard_normal(data.shape), 15)
    warped *= 1 + 0.2 * bias / np.abs(bias).max()
    warped += (warped > 0) * rng.normal(0, 3, data.shape)
    affine = _template_affine(registration_fixed_3mm)
    affine[:3, 3] += 30
    # flip the first array axis: same brain in space, stored left-to-right reversed
    las = nib.Nifti1Image(warped.astype(np.float32), affine).as_reoriented(
        np.array([[0, -1], [1, 1], [2, 1]]))
    assert nib.aff2axcodes(las.affine) == ("L", "A", "S")
    moving = tmp_path_factory.mktemp("deformed") / "moving.nii.gz"
    nib.save(las, str(moving))
    return moving


@pytest.fixture(scope="module")
def registration_deformed_affine_qc(registration_deformed_brain, registration_reference,
                                    registration_fixed_3mm, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("deformed_affine")
    status = reg.register_subject(registration_deformed_brain, registration_reference, out, SUBJECT,
                                  "Affine", fixed=registration_fixed_3mm)
    assert status["status"] == "ok"
    return json.loads((out / "qc.json").read_text())


def test_differently_shaped_brain_in_other_orientation_registers(registration_deformed_affine_qc):
    assert registration_deformed_affine_qc["correlation_before"] < 0.5
    assert registration_deformed_affine_qc["correlation_after"] > 0.85


def test_syn_undoes_more_of_a_nonlinear_deformation_than_affine(registration_deformed_brain,
                                                                registration_deformed_affine_qc,
                                                                registration_reference,
                                                                registration_fixed_3mm, tmp_path):
    status = reg.register_subject(registration_deformed_brain, registration_reference, tmp_path, SUBJECT,
                                  "SyN", fixed=registration_fixed_3mm)
    assert status["status"] == "ok"
    syn = json.loads((tmp_path / "qc.json").read_text())
    assert syn["transform"] == "SyN"
    assert syn["correlation_after"] > registration_deformed_affine_qc["correlation_after"] + 0.03


def test_unknown_transform_raises(registration_reference, tmp_path):
    with pytest.raises(InputError, match="Translation"):
        reg.register_subject(tmp_path / "x.nii.gz", registration_reference, tmp_path, SUBJECT,
                             "Translation")
    assert not (tmp_path / "status.json").exists()


def test_bad_moving_volume_gives_failed_status_and_clears_old_outputs(registration_reference, tmp_path):
    data = np.ones((20, 20, 20), np.float32)
    data[3, 4, 5] = np.nan
    moving = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(moving))
    out = tmp_path / "out"
    out.mkdir()
    (out / "registered.nii.gz").write_bytes(b"stale")
    status = reg.register_subject(moving, registration_reference, out, SUBJECT)
    assert status["status"] == "failed" and status["stage"] == "register"
    assert "NaN" in status["reason"] and str(moving) in status["reason"]
    assert not (out / "registered.nii.gz").exists() and not (out / "qc.json").exists()
    assert json.loads((out / "status.json").read_text()) == status


def test_registration_that_loses_the_image_fails_without_raising(registration_reference,
                                                                 registration_fixed, tmp_path):
    # a 2-voxel cube cannot be aligned to a brain: ANTs maps it outside the grid
    moving = tmp_path / "tiny.nii.gz"
    nib.save(nib.Nifti1Image(np.full((2, 2, 2), 5, np.float32), np.eye(4)), str(moving))
    status = reg.register_subject(moving, registration_reference, tmp_path / "out", SUBJECT,
                                  fixed=registration_fixed)
    assert status["status"] == "failed" and "empty" in status["reason"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["status.json"]


def test_pass_on_failure_writes_skipped(tmp_path):
    upstream = {"subject": SUBJECT, "status": "failed", "stage": "ingest", "kind": "NIfTI file",
                "reason": "voxel size 0", "warning": ""}
    status = reg.pass_on_failure(upstream, tmp_path, SUBJECT)
    assert status == {"subject": SUBJECT, "status": "skipped", "stage": "register", "kind": "NIfTI file",
                      "reason": "ingest failed: voxel size 0", "warning": ""}
    assert json.loads((tmp_path / "status.json").read_text()) == status
    with pytest.raises(InputError):
        reg.pass_on_failure({**upstream, "status": "ok"}, tmp_path, SUBJECT)


def test_job_passes_an_ingest_failure_on_and_can_stop_the_run(tmp_path):
    ingest = tmp_path / "ingest"
    ingest.mkdir()
    (ingest / "status.json").write_text(json.dumps(
        {"subject": SUBJECT, "status": "failed", "stage": "ingest", "reason": "truncated file"}))
    params = {"template": None, "transform": "Affine", "grid": list(GRID), "seed": 0}
    status = reg.run_registration_job(ingest, tmp_path / "a", SUBJECT, params)
    assert status["status"] == "skipped" and "truncated file" in status["reason"]
    with pytest.raises(InputError, match="truncated file"):
        reg.run_registration_job(ingest, tmp_path / "b", SUBJECT, params, on_bad_input="fail")
    assert json.loads((tmp_path / "b" / "status.json").read_text())["status"] == "skipped"


def test_template_path_default_and_missing(tmp_path):
    default = reg.template_path(None)
    assert default.is_file() and default.name == "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    missing = tmp_path / "nowhere.nii.gz"
    with pytest.raises(InputError, match=str(missing)):
        reg.template_path(str(missing))


def test_reference_grid_spans_the_template(registration_template, registration_reference):
    template = nib.load(str(registration_template))
    assert registration_reference.shape == GRID
    first = template.affine @ [0, 0, 0, 1]
    last = template.affine @ [*(np.array(template.shape) - 1), 1]
    spacing = np.array(registration_reference.spacing)
    np.testing.assert_allclose(spacing, (last[:3] - first[:3]) / (np.array(GRID) - 1), rtol=1e-6)
    with pytest.raises(InputError):
        reg.make_reference_grid(registration_template, (32, 32))


def test_job_registers_an_ingested_volume(registration_affine_run, tmp_path):
    moving, _, _ = registration_affine_run
    ingest = tmp_path / "ingest"
    ingest.mkdir()
    (ingest / "volume.nii.gz").write_bytes(moving.read_bytes())
    (ingest / "status.json").write_text(json.dumps({"subject": SUBJECT, "status": "ok", "stage": "ingest"}))
    params = {"template": None, "transform": "Affine", "grid": [24, 28, 12], "seed": 0}
    status = reg.run_registration_job(ingest, tmp_path / "out", SUBJECT, params, on_bad_input="fail")
    assert status["status"] == "ok"
    assert nib.load(str(tmp_path / "out" / "registered.nii.gz")).shape == (24, 28, 12)
    assert json.loads((tmp_path / "out" / "qc.json").read_text())["correlation_after"] > 0.9
