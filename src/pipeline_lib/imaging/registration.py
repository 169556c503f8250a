"""Affine (or rigid / SyN) registration of one ingested volume to the MNI template.

Seed 001 (Ungría Hirte et al., section 3.1) co-registered every volume to MNI
space with ANTs and resampled it to 128 x 128 x 40 voxels. Here ANTs optimises
the transform against the template at an isotropic working resolution (the
``fixed`` image) and the moving image is then resampled once, straight onto
the output grid (the ``reference``): the template's field of view cut into
``grid_shape`` voxels.

Outputs in ``out_dir``: ``status.json`` always; on success also
``registered.nii.gz`` (float32, RAS, on the grid), ``qc.json`` (correlation
with the template before and after registration) and ``overlay.png``.

Reproducibility: ANTs samples the metric at random positions. A fixed seed
makes that sampling repeatable, but the Mattes metric is summed per thread, so
results are bit-identical only when ITK runs single-threaded. ITK reads its
thread count once, at its first use in a process, which is why this module
sets the default to 1 before ANTs is imported (a value already in the
environment wins; ``qc.json`` records the count in effect).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from typing import Mapping
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import ants  # noqa: E402  (must follow the thread setting above)
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from pipeline_lib.core.errors import InputError  # noqa: E402
from pipeline_lib.core.io import atomic_path, write_json  # noqa: E402
from pipeline_lib.core.qc import (FAILED, OK, enforce_on_bad_input, new_status, read_status,  # noqa: E402
                                  skipped_status, write_status)
from pipeline_lib.core.settings import RegistrationSettings, read_settings  # noqa: E402

log = logging.getLogger(__name__)

STAGE = "register"
REGISTERED_NAME = "registered.nii.gz"
QC_NAME = "qc.json"
OVERLAY_NAME = "overlay.png"
TRANSFORMS = ("Rigid", "Affine", "SyN")
# isotropic resolution of the template ANTs optimises against in the pipeline (seconds per subject)
FIXED_RESOLUTION_MM = 2
PACKAGED_TEMPLATE = "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
# LPS (ITK) <-> RAS (NIfTI): flip the first two world axes
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


# ------------------------------------------------------------------ template and grid


def template_path(path: str | None, resolution_mm: int = 2) -> Path:
    """Return the template file: ``path``, or the MNI152 2009 T1 shipped with nilearn.

    The file is returned as it is (the packaged template is 1 mm); nothing is
    written anywhere. ``resolution_mm`` is only checked here: use
    :func:`template_image` to get the template at that resolution.
    """
    _check_resolution(resolution_mm)
    if path is None:
        spec = importlib.util.find_spec("nilearn")
        if spec is None or spec.origin is None:
            raise InputError("registration.template is null but nilearn (which ships the MNI template) "
                             "is not installed; install nilearn or configure a template file")
        found = Path(spec.origin).parent / PACKAGED_TEMPLATE
        if not found.is_file():
            raise InputError(f"{found}: MNI template missing from the installed nilearn package")
        return found
    found = Path(path)
    if not found.is_file():
        raise InputError(f"{found}: configured registration template does not exist")
    return found


def template_image(template_path: Path, resolution_mm: int = 2) -> ants.ANTsImage:
    """Read the template and resample it to isotropic ``resolution_mm`` voxels (linear)."""
    _check_resolution(resolution_mm)
    image = _read_volume(Path(template_path))
    if np.allclose(image.spacing, resolution_mm):
        return image
    return ants.resample_image(image, (float(resolution_mm),) * 3, use_voxels=False, interp_type=0)


def make_reference_grid(template_path: Path, grid_shape: tuple[int, int, int]) -> ants.ANTsImage:
    """The template resampled onto ``grid_shape`` voxels spanning its whole field of view.

    ANTs spaces the new voxel centres so the first and last coincide with the
    template's; voxels are therefore anisotropic in general (128 x 128 x 40 on
    the 1 mm MNI template gives about 1.5 x 1.8 x 4.7 mm).
    """
    shape = tuple(int(n) for n in grid_shape)
    if len(shape) != 3 or min(shape) < 2:
        raise InputError(f"registration grid {tuple(grid_shape)}: need three voxel counts of at least 2")
    template = _read_volume(Path(template_path))
    return ants.resample_image(template, shape, use_voxels=True, interp_type=0)


def _check_resolution(resolution_mm: float) -> None:
    if not resolution_mm or resolution_mm <= 0:
        raise InputError(f"template resolution {resolution_mm!r} mm: must be a positive number")


# ------------------------------------------------------------------ one subject


def register_subject(moving_path: Path, reference: ants.ANTsImage, out_dir: Path, subject: str,
                     transform: str = "Affine", seed: int = 0, *,
                     fixed: ants.ANTsImage | None = None) -> dict:
    """Register ``moving_path`` to the template and write the outputs; return the status.

    ANTs optimises ``transform`` (Rigid, Affine or SyN; anything else raises
    InputError) against ``fixed`` (default: ``reference`` itself; pass the
    template at 1-2 mm for coarse grids) and the moving image is resampled
    onto ``reference``'s grid. A bad moving file or an ANTs error does not
    raise: the status written to ``status.json`` (and returned) is then
    ``"failed"`` with the reason, and no data files are left in ``out_dir``.
    """
    if transform not in TRANSFORMS:
        raise InputError(f"registration transform {transform!r}: must be one of {', '.join(TRANSFORMS)}")
    if int(seed) < 0:
        raise InputError(f"registration seed {seed!r}: must be 0 or more")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    status = new_status(subject, STAGE)
    try:
        moving = _read_volume(Path(moving_path))
        registered = _register(moving, fixed if fixed is not None else reference, reference, transform, seed)
        qc = _qc(subject, transform, seed, moving, registered, reference)
        _write_image(out_dir / REGISTERED_NAME, registered)
        write_json(out_dir / QC_NAME, qc)
        save_overlay(out_dir / OVERLAY_NAME, registered, reference, f"{subject}  {transform}  "
                     f"r = {qc['correlation_after']:.3f}")
    except Exception as exc:  # ANTs/ITK raise assorted types; one subject must not stop the run
        _remove_outputs(out_dir)
        reason = str(exc) if isinstance(exc, (InputError, RuntimeError)) else f"{type(exc).__name__}: {exc}"
        status.update(status=FAILED, reason=reason)
        log.warning("subject %s: registration failed: %s", subject, exc)
    return write_status(out_dir, status)


def pass_on_failure(upstream_status: dict, out_dir: Path, subject: str) -> dict:
    """Write and return a ``"skipped"`` status for a subject an earlier stage did not deliver."""
    status = skipped_status(upstream_status, STAGE, subject)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_outputs(out_dir)
    return write_status(out_dir, status)


def run_registration_job(ingest_dir: Path, out_dir: Path, subject: str,
                         settings: RegistrationSettings | Mapping | None = None, *,
                         on_bad_input: str = "skip") -> dict:
    """The ``register`` rule: read the ingest status, register or pass the failure on.

    ``settings`` is the ``registration`` config block. With ``on_bad_input:
    fail`` a failed or skipped subject raises InputError after its status has
    been written.
    """
    cfg = read_settings(RegistrationSettings, settings)
    upstream = read_status(ingest_dir)
    if upstream.get("status") != OK:
        status = pass_on_failure(upstream, out_dir, subject)
    else:
        template = template_path(cfg.template)
        reference = make_reference_grid(template, cfg.grid)
        status = register_subject(Path(ingest_dir) / "volume.nii.gz", reference, out_dir, subject,
                                  transform=cfg.transform, seed=cfg.seed,
                                  fixed=template_image(template, FIXED_RESOLUTION_MM))
    enforce_on_bad_input(status, on_bad_input)
    return status


# ------------------------------------------------------------------ ANTs


def _register(moving: ants.ANTsImage, fixed: ants.ANTsImage, reference: ants.ANTsImage,
              transform: str, seed: int) -> ants.ANTsImage:
    """Run ANTs and resample ``moving`` onto ``reference`` with the forward transforms."""
    previous = ants.config._random_seed
    # ANTs reads its seed from this module global; 0 would mean "seed from the clock"
    ants.config._random_seed = int(seed) + 1
    try:
        with tempfile.TemporaryDirectory(prefix="ants-") as work:
            result = ants.registration(fixed, moving, type_of_transform=transform,
                                       outprefix=str(Path(work) / "x_"))
            warped = ants.apply_transforms(reference, moving, result["fwdtransforms"],
                                           interpolator="linear")
    finally:
        ants.config._random_seed = previous
    data = warped.numpy()
    if not np.isfinite(data).all() or not np.any(data):
        raise RuntimeError(f"ANTs {transform} registration produced an empty or non-finite image")
    return warped.clone("float")


def _qc(subject: str, transform: str, seed: int, moving: ants.ANTsImage,
        registered: ants.ANTsImage, reference: ants.ANTsImage) -> dict:
    """Correlation with the template inside its mask, after and before (plain resampling)."""
    mask = reference.numpy() > 0
    before = ants.resample_image_to_target(moving, reference, interp_type="linear")
    return {
        "subject": subject,
        "transform": transform,
        "seed": int(seed),
        "grid": "x".join(str(n) for n in reference.shape),
        "itk_threads": int(os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "0") or 0),
        "correlation_after": masked_correlation(registered.numpy(), reference.numpy(), mask),
        "correlation_before": masked_correlation(before.numpy(), reference.numpy(), mask),
    }


def masked_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of ``a`` and ``b`` over ``mask``; 0 when either is constant there."""
    x = a[mask].astype(np.float64)
    y = b[mask].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0


# ------------------------------------------------------------------ files


def _read_volume(path: Path) -> ants.ANTsImage:
    """Validate a 3-D NIfTI with nibabel, reorient it to RAS and hand it to ANTs as float32.

    ITK reads many broken files without complaint (NaN read as 0, voxel size
    0 read as 1 mm), so nibabel checks the data and the geometry comes from
    the NIfTI affine rather than from ITK's reader. RAS voxel order makes the
    template, and so the output grid, run left->right, posterior->anterior,
    inferior->superior along the array axes, which the slicing relies on.
    """
    if not path.is_file():
        raise InputError(f"{path}: file does not exist")
    try:
        image = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for broken files
        raise InputError(f"{path}: not a readable NIfTI volume ({type(exc).__name__}: {exc})") from exc
    if data.ndim > 3 and all(n == 1 for n in data.shape[3:]):
        data = data.reshape(data.shape[:3])
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 3-D volume, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise InputError(f"{path}: volume holds NaN or infinite values")
    if not np.any(data):
        raise InputError(f"{path}: volume is all zero")
    lps = _RAS_TO_LPS @ image.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    if not np.all(spacing > 0):
        raise InputError(f"{path}: voxel size {tuple(spacing)} is not positive")
    direction = lps[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError(f"{path}: affine is sheared; reslice the volume before registration")
    return ants.from_numpy(np.ascontiguousarray(data), origin=lps[:3, 3].tolist(),
                           spacing=spacing.tolist(), direction=direction)


def _write_image(path: Path, image: ants.ANTsImage) -> None:
    """Write a float32 NIfTI (RAS affine) atomically, with a header holding only geometry."""
    direction = np.asarray(image.direction, dtype=np.float64)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.spacing)
    lps[:3, 3] = image.origin
    affine = _RAS_TO_LPS @ lps
    nifti = nib.Nifti1Image(image.numpy().astype(np.float32), affine)
    nifti.header.set_xyzt_units("mm")
    nifti.set_qform(affine, code=1)
    nifti.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(nifti, str(tmp))


def _remove_outputs(out_dir: Path) -> None:
    # a rerun into the same folder must not leave an earlier success behind
    for name in (REGISTERED_NAME, QC_NAME, OVERLAY_NAME):
        (out_dir / name).unlink(missing_ok=True)


# ------------------------------------------------------------------ overlay


def save_overlay(path: Path, registered: ants.ANTsImage, reference: ants.ANTsImage, title: str) -> None:
    """Three orthogonal mid-slices of ``registered`` in grey with the template's contours.

    Views are shown in radiological convention (patient right on the image
    left), anterior / superior up, with the grid's voxel aspect ratio.
    """
    moving = registered.numpy()
    template = reference.numpy()
    sx, sy, sz = reference.spacing
    nx, ny, nz = moving.shape
    # arrays are RAS: axis 0 left->right, 1 posterior->anterior, 2 inferior->superior
    # (name, cut, pixel height / width): rows run anterior->posterior or superior->inferior
    views = [
        ("axial", lambda v: v[::-1, ::-1, nz // 2].T, sy / sx),
        ("coronal", lambda v: v[::-1, ny // 2, ::-1].T, sz / sx),
        ("sagittal", lambda v: v[nx // 2, ::-1, ::-1].T, sz / sy),
    ]
    vmax = float(np.percentile(moving[moving > 0], 99)) if np.any(moving > 0) else 1.0
    brain = template[template > 0]
    levels = sorted({float(brain.max()) * 0.05, float(brain.mean())})
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.9), dpi=80)
    for ax, (name, cut, aspect) in zip(axes, views):
        ax.imshow(cut(moving), cmap="gray", vmin=0, vmax=vmax, aspect=aspect, interpolation="nearest")
        ax.contour(cut(template), levels=levels, colors=["#ff3030", "#30d0ff"][: len(levels)], linewidths=0.7)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
