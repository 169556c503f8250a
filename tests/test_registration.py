"""Registration to the MNI template with real ANTs, on a small grid to stay quick.

Moving images here are the nilearn-shipped MNI template at 2 mm (brain-only, so
``brain_extraction: none``), moved by a known affine or deformed non-linearly
with scipy, and a head phantom built around it (skull and scalp) for the brain
extraction and the QC gate. Real heads with known affines are in
test_registration_ground_truth.py.
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
from pipeline_lib.core.settings import RegistrationSettings, read_settings

GRID = (32, 32, 16)
SUBJECT = "sub-0a1b2c3d4e"
# brain-only moving images: nothing to extract
BRAIN_ONLY = {"brain_extraction": "none"}


def _settings(transform="Affine", seed=0, **more) -> dict:
    return {"transform": transform, "seed": seed, "grid": list(GRID), **more}


def _register(moving, target, out, transform="Affine", seed=0, preprocessing=BRAIN_ONLY, **more) -> dict:
    return reg.register_subject(moving, target, out, SUBJECT, _settings(transform, seed, **more), preprocessing)


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


@pytest.fixture(scope="module")
def registration_target():
    """The packaged template at 2 mm, the 32 x 32 x 16 grid and the template's brain mask."""
    return reg.make_target(None, GRID)


@pytest.fixture(scope="module")
def registration_target_3mm():
    """The same at 3 mm: registrations about four times quicker, for the slower cases."""
    return reg.make_target(None, GRID, resolution_mm=3)


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
def registration_affine_run(registration_fixed, registration_target, tmp_path_factory):
    """One Affine registration of a rotated, scaled and shifted template, shared by tests."""
    root = tmp_path_factory.mktemp("affine")
    matrix = _rotation((4, -3, 10)) @ np.diag([1.08, 0.95, 1.04])
    moving = _moved_template(registration_fixed, root / "moving.nii.gz", matrix, (4, -3, 2))
    out = root / "out"
    status = _register(moving, registration_target, out, seed=3)
    return moving, out, status


def test_affine_registration_recovers_a_known_affine(registration_affine_run):
    _, out, status = registration_affine_run
    assert status == {"subject": SUBJECT, "status": "ok", "stage": "register", "kind": "", "reason": "",
                      "warning": ""}
    assert json.loads((out / "status.json").read_text()) == status
    qc = json.loads((out / "qc.json").read_text())
    assert qc["subject"] == SUBJECT
    assert qc["transform"] == "Affine"
    assert qc["grid"] == "32x32x16"
    assert qc["status"] == "ok"
    assert qc["brain_extraction"] == "none"
    assert qc["match"] == "brain"
    assert qc["correlation_after"] > 0.9
    assert qc["correlation_after"] > qc["correlation_before"] + 0.2
    assert qc["mask_dice"] > 0.95
    # the moving brain samples the template at matrix @ x, i.e. it is the template shrunk by
    # 1.08/0.95/1.04 (then rotated): the subject -> template map scales it back by those factors
    scales = sorted([qc["scale_x"], qc["scale_y"], qc["scale_z"]])
    np.testing.assert_allclose(scales, sorted([1.08, 0.95, 1.04]), atol=0.01)
    assert qc["max_shear"] < 0.03
    assert qc["determinant"] > 0


def test_registered_volume_is_float32_ras_on_the_grid(registration_affine_run, registration_reference):
    _, out, _ = registration_affine_run
    image = nib.load(str(out / "registered.nii.gz"))
    assert image.shape == GRID
    assert image.get_data_dtype() == np.float32
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    np.testing.assert_allclose(np.diag(image.affine)[:3], registration_reference.spacing, rtol=1e-5)


def test_brain_masks_are_written_on_the_grid_and_natively(registration_affine_run, registration_target):
    moving, out, _ = registration_affine_run
    grid_mask = nib.load(str(out / "brain_mask.nii.gz"))
    assert grid_mask.shape == GRID
    assert grid_mask.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(grid_mask.dataobj))) == {0, 1}
    native = nib.load(str(out / "native_brain_mask.nii.gz"))
    np.testing.assert_allclose(native.affine, nib.as_closest_canonical(nib.load(str(moving))).affine, atol=1e-5)
    assert reg.dice(np.asarray(grid_mask.dataobj) > 0, registration_target.reference_mask) > 0.9


def test_overlay_is_a_small_png(registration_affine_run):
    import matplotlib.image as mpimg

    _, out, _ = registration_affine_run
    png = out / "overlay.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(str(png))
    assert pixels.ndim == 3
    assert 100 < pixels.shape[0] < 400
    assert pixels.shape[1] < 800
    # grey brain and coloured contours: some pixels are far from grey
    rgb = pixels[..., :3]
    assert (rgb.max(axis=2) - rgb.min(axis=2)).max() > 0.5


def test_same_seed_gives_identical_output(registration_affine_run, registration_target_3mm, tmp_path):
    moving, _, _ = registration_affine_run
    assert os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] == "1"  # set by the module
    runs = []
    for name in ("first", "second"):
        status = _register(moving, registration_target_3mm, tmp_path / name, seed=5)
        assert status["status"] == "ok"
        runs.append(nib.load(str(tmp_path / name / "registered.nii.gz")).get_fdata())
    np.testing.assert_array_equal(runs[0], runs[1])


def test_rigid_registration_recovers_rotation_and_shift(registration_fixed_3mm, registration_target_3mm,
                                                        tmp_path):
    moving = _moved_template(registration_fixed_3mm, tmp_path / "moving.nii.gz",
                             _rotation((0, 6, 12)), (5, -4, 3))
    status = _register(moving, registration_target_3mm, tmp_path / "out", "Rigid")
    qc = json.loads((tmp_path / "out" / "qc.json").read_text())
    assert status["status"] == "ok"
    assert qc["transform"] == "Rigid"
    assert qc["correlation_after"] > 0.9
    np.testing.assert_allclose([qc["scale_x"], qc["scale_y"], qc["scale_z"]], 1.0, atol=1e-3)
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
def registration_deformed_affine_qc(registration_deformed_brain, registration_target_3mm,
                                    tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("deformed_affine")
    status = _register(registration_deformed_brain, registration_target_3mm, out)
    assert status["status"] == "ok"
    return json.loads((out / "qc.json").read_text())


def test_differently_shaped_brain_in_other_orientation_registers(registration_deformed_affine_qc):
    assert registration_deformed_affine_qc["correlation_before"] < 0.5
    assert registration_deformed_affine_qc["correlation_after"] > 0.85


def test_syn_undoes_more_of_a_nonlinear_deformation_than_affine(registration_deformed_brain,
                                                                registration_deformed_affine_qc,
                                                                registration_target_3mm, tmp_path):
    status = _register(registration_deformed_brain, registration_target_3mm, tmp_path, "SyN")
    assert status["status"] == "ok"
    syn = json.loads((tmp_path / "qc.json").read_text())
    assert syn["transform"] == "SyN"
    assert syn["correlation_after"] > registration_deformed_affine_qc["correlation_after"] + 0.03


def test_unknown_transform_raises(registration_target, tmp_path):
    with pytest.raises(InputError, match="Translation"):
        _register(tmp_path / "x.nii.gz", registration_target, tmp_path, "Translation")
    assert not (tmp_path / "status.json").exists()


def test_bad_moving_volume_gives_failed_status_and_clears_old_outputs(registration_target, tmp_path):
    data = np.ones((20, 20, 20), np.float32)
    data[3, 4, 5] = np.nan
    moving = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(moving))
    out = tmp_path / "out"
    out.mkdir()
    for name in reg.OUTPUT_NAMES:
        (out / name).write_bytes(b"stale")
    status = _register(moving, registration_target, out)
    assert status["status"] == "failed"
    assert status["stage"] == "register"
    assert "NaN" in status["reason"]
    assert str(moving) in status["reason"]
    assert sorted(p.name for p in out.iterdir()) == ["status.json"]
    assert json.loads((out / "status.json").read_text()) == status


def test_a_volume_without_a_brain_fails_without_raising(registration_target, tmp_path):
    # a 2-voxel cube holds 8 ml: no brain to register
    moving = tmp_path / "tiny.nii.gz"
    nib.save(nib.Nifti1Image(np.full((2, 2, 2), 5, np.float32), np.eye(4)), str(moving))
    status = _register(moving, registration_target, tmp_path / "out")
    assert status["status"] == "failed"
    assert "no usable brain" in status["reason"]
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
    status = reg.run_registration_job(ingest, tmp_path / "a", SUBJECT, params, BRAIN_ONLY)
    assert status["status"] == "skipped"
    assert "truncated file" in status["reason"]
    with pytest.raises(InputError, match="truncated file"):
        reg.run_registration_job(ingest, tmp_path / "b", SUBJECT, params, BRAIN_ONLY, on_bad_input="fail")
    assert json.loads((tmp_path / "b" / "status.json").read_text())["status"] == "skipped"


def test_template_path_default_and_missing(tmp_path):
    default = reg.template_path(None)
    assert default.is_file()
    assert default.name == "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
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
    status = reg.run_registration_job(ingest, tmp_path / "out", SUBJECT, params, BRAIN_ONLY, on_bad_input="fail")
    assert status["status"] == "ok"
    assert nib.load(str(tmp_path / "out" / "registered.nii.gz")).shape == (24, 28, 12)
    assert json.loads((tmp_path / "out" / "qc.json").read_text())["correlation_after"] > 0.9


# ------------------------------------------------------------------ the QC gate


def test_gate_lists_every_failed_check_with_its_number_and_bound():
    cfg = read_settings(RegistrationSettings, None)
    good = {"mask_dice": 0.93, "scale_x": 0.97, "scale_y": 1.02, "scale_z": 0.99, "max_shear": 0.02,
            "determinant": 0.98, "correlation_after": 0.8}
    assert reg.gate(good, cfg) == []
    bad = {**good, "mask_dice": 0.61, "scale_x": 0.78, "scale_y": 0.81, "scale_z": 0.74, "max_shear": 0.2,
           "correlation_after": 0.05}
    assert reg.gate(bad, cfg) == ["brain mask overlap 0.61 < 0.85", "scales 0.78/0.81/0.74 outside 0.8–1.25",
                                  "shear 0.20 > 0.15", "correlation in the brain mask 0.05 < 0.5"]
    assert reg.gate({**good, "determinant": -1.0}, cfg) == ["the affine mirrors the volume (negative determinant)"]
    lenient = read_settings(RegistrationSettings, {"min_mask_dice": 0.5, "scale_range": [0.7, 1.4]})
    assert reg.gate({**good, "mask_dice": 0.61, "scale_x": 0.78}, lenient) == []


def test_affine_qc_reads_scales_shear_and_mirroring_off_the_map():
    # the subject is rotated, then scaled along the template's axes by 0.8 / 1.25 / 0.9 on its way
    # to the template; the template -> subject map is the inverse, with a shift
    rotation = _rotation((5, -8, 20))
    subject_to_template = np.diag([0.8, 1.25, 0.9]) @ rotation
    template_to_subject = np.eye(4)
    template_to_subject[:3, :3] = np.linalg.inv(subject_to_template)
    template_to_subject[:3, 3] = [3, -4, 5]
    qc = reg.affine_qc(template_to_subject)
    assert [qc["scale_x"], qc["scale_y"], qc["scale_z"]] == pytest.approx([0.8, 1.25, 0.9], abs=1e-6)
    assert qc["determinant"] == pytest.approx(0.8 * 1.25 * 0.9, abs=1e-6)
    assert qc["max_shear"] < 1e-6  # scaling along the axes: no shear
    assert reg.affine_qc(np.diag([1.0, 1.0, 1.0, 1.0]))["max_shear"] == 0.0
    sheared = np.eye(4)
    sheared[0, 1] = 0.4  # x picks up 0.4 of y: the axes are no longer perpendicular
    assert 0.15 < reg.affine_qc(np.linalg.inv(sheared))["max_shear"] < 0.4
    mirrored = np.diag([-1.0, 1, 1, 1])
    assert reg.affine_qc(mirrored)["determinant"] == pytest.approx(-1.0)


def test_settings_reject_bad_gate_and_head_without_its_template():
    with pytest.raises(InputError, match="scale_range"):
        read_settings(RegistrationSettings, {"scale_range": [1.1, 1.3]})
    with pytest.raises(InputError, match="min_mask_dice"):
        read_settings(RegistrationSettings, {"min_mask_dice": 1.5})
    with pytest.raises(InputError, match="template with skull"):
        read_settings(RegistrationSettings, {"match": "head"})
    with pytest.raises(InputError, match="on_poor_fit"):
        read_settings(RegistrationSettings, {"on_poor_fit": "drop"})


def test_transform_none_resamples_without_estimating(registration_template, registration_target, tmp_path):
    # the template itself is in template space: nothing to estimate, a perfect fit
    status = _register(registration_template, registration_target, tmp_path / "same", "none")
    qc = json.loads((tmp_path / "same" / "qc.json").read_text())
    assert status["status"] == "ok"
    assert qc["transform"] == "none"
    assert qc["template_to_subject_ras"] == np.eye(4).tolist()
    assert qc["mask_dice"] > 0.97
    assert qc["correlation_after"] > 0.97


def test_transform_none_on_an_input_elsewhere_is_flagged(registration_deformed_brain, registration_target,
                                                        tmp_path):
    status = _register(registration_deformed_brain, registration_target, tmp_path, "none")
    assert status["status"] == "flagged"
    assert "brain mask overlap" in status["reason"]
    assert (tmp_path / "registered.nii.gz").is_file()  # a flagged subject keeps its outputs


# ------------------------------------------------------------------ heads with skull


@pytest.fixture(scope="module")
def registration_head(tmp_path_factory) -> Path:
    """A head phantom (the template brain in CSF, skull and scalp), moved and stored LPS."""
    from pipeline_lib.cohorts.demo_cohort import head_phantom, load_mni_template_image

    head = head_phantom(load_mni_template_image(2))
    data = np.asarray(head.dataobj)
    matrix = _rotation((3, -4, 6)) @ np.diag([1.04, 0.97, 1.02])
    centre = (np.array(data.shape) - 1) / 2
    moved = ndimage.affine_transform(data, matrix, offset=centre - matrix @ centre + [3, -2, 2], order=1)
    image = nib.Nifti1Image((moved * 1000).astype(np.float32), head.affine)
    image = image.as_reoriented(np.array([[0, -1], [1, -1], [2, 1]]))
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
    path = tmp_path_factory.mktemp("head") / "head.nii.gz"
    nib.save(image, str(path))
    return path


def test_head_with_skull_is_extracted_and_registered_brain_to_brain(registration_head, registration_target_3mm,
                                                                   tmp_path):
    status = _register(registration_head, registration_target_3mm, tmp_path, preprocessing={"brain_extraction": "deepbet"})
    qc = json.loads((tmp_path / "qc.json").read_text())
    assert status["status"] == "ok", status["reason"]
    assert qc["brain_extraction"] == "deepbet"
    assert qc["input_warning"] == ""
    assert qc["mask_dice"] > 0.9
    assert qc["correlation_after"] > 0.8
    assert all(0.9 < qc[k] < 1.1 for k in ("scale_x", "scale_y", "scale_z"))
    # the extracted brain is a brain, not the head: about the template's brain volume
    assert 0.2 < qc["brain_ml"] / qc["foreground_ml"] < 0.6


def test_head_without_extraction_is_flagged(registration_head, registration_target_3mm, tmp_path):
    status = _register(registration_head, registration_target_3mm, tmp_path)
    qc = json.loads((tmp_path / "qc.json").read_text())
    assert status["status"] == "flagged"
    assert "brain mask overlap" in status["reason"]
    assert qc["status"] == "flagged"
    assert "looks like a head with skull" in qc["input_warning"]


def test_input_kind_warnings():
    from pipeline_lib.imaging.brain_extraction import input_kind_warning

    assert "skull-stripped already" in input_kind_warning("deepbet", foreground_ml=1500, brain_ml=1450)
    assert input_kind_warning("deepbet", foreground_ml=4000, brain_ml=1500) == ""
    assert "head with skull" in input_kind_warning("none", foreground_ml=4000, brain_ml=4000)
    assert input_kind_warning("none", foreground_ml=1600, brain_ml=1600) == ""


def test_missing_deepbet_weights_name_the_files(tmp_path):
    from pipeline_lib.imaging.brain_extraction import deepbet_model_files

    with pytest.raises(InputError, match=r"model\.pt.*preprocessing\.deepbet_models"):
        deepbet_model_files(tmp_path)
    assert all(p.is_file() for p in deepbet_model_files(None))


def test_head_to_head_registration_with_a_head_template(registration_head, tmp_path):
    """match: head registers the whole head to a template with skull; output: head keeps the scalp."""
    from pipeline_lib.cohorts.demo_cohort import head_phantom, load_mni_template_image

    brain = load_mni_template_image(2)
    head = head_phantom(brain)
    template, mask = tmp_path / "head_template.nii.gz", tmp_path / "head_template_mask.nii.gz"
    nib.save(head, str(template))
    padded = np.pad(np.asarray(brain.dataobj) > 0.05, 10).astype(np.uint8)
    nib.save(nib.Nifti1Image(padded, head.affine), str(mask))
    target = reg.make_target(str(template), GRID, str(mask), resolution_mm=3)
    settings = {"template": str(template), "template_mask": str(mask), "match": "head", "output": "head"}
    status = _register(registration_head, target, tmp_path / "out", preprocessing={"brain_extraction": "deepbet"},
                       **settings)
    qc = json.loads((tmp_path / "out" / "qc.json").read_text())
    assert status["status"] == "ok", status["reason"]
    assert qc["match"] == "head"
    assert qc["output"] == "head"
    assert qc["template"] == "head_template.nii.gz"
    assert qc["mask_dice"] > 0.9
    registered = nib.load(str(tmp_path / "out" / "registered.nii.gz")).get_fdata()
    grid_mask = nib.load(str(tmp_path / "out" / "brain_mask.nii.gz")).get_fdata() > 0
    assert registered[~grid_mask].max() > 0.5 * registered[grid_mask].max()  # scalp kept outside the brain
