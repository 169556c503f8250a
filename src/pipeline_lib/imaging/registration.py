"""Brain extraction, registration of one ingested volume to the template, and the QC gate.

Seed 001 (Ungría Hirte et al., section 3.1) co-registered every volume to MNI
space with ANTs and resampled it to 128 x 128 x 40 voxels. Real T1 volumes
still have skull and scalp while the packaged MNI152 template is brain-only,
so by default the brain is extracted first (``preprocessing.brain_extraction``,
:mod:`pipeline_lib.imaging.brain_extraction`) and registered brain to brain
(``registration.match: brain``); ``match: head`` registers the whole head to a
template with skull instead. ANTs optimises the transform against the template
at an isotropic working resolution (the ``fixed`` image) and the volume is then
resampled once, straight onto the output grid (the ``reference``: the
template's field of view cut into ``grid_shape`` voxels, or, with ``registration.voxel_size``,
``grid_shape`` voxels of that size centred on the template's brain): the extracted brain,
or the whole head through the same transform (``registration.output``).
``transform: none`` estimates nothing: the input is taken to be in the
template's space already and only resampled.

The QC gate (:func:`gate`) checks every registration: Dice of the registered
brain mask with the template's brain mask, the affine's scale factors, shear
and handedness, and the correlation with the template inside its brain mask. A
subject failing any check is ``flagged`` (core.qc) with every reason; its
files stay, and ``registration.on_poor_fit`` decides whether slicing uses it.

Outputs in ``out_dir``: ``status.json`` always; unless the subject failed also
``registered.nii.gz`` (float32, RAS, on the grid), ``brain_mask.nii.gz`` (the
subject's brain mask on the grid), ``native_brain_mask.nii.gz`` (the mask on the
ingested volume's grid), ``qc.json`` (the numbers above, before/after
correlations, the affine) and ``overlay.png`` (mask and template contours).

Several sequences (``input.layout``): the transform is estimated once, on the reference
sequence (the ingested ``volume.nii.gz``), and applied to every other sequence the subject's
ingest folder holds under ``sequences/<name>/`` (through world coordinates, so a sequence on
its own grid works too; with ``output: brain`` it is masked by the reference's brain mask) and
to every mask under ``masks/<name>/`` (nearest neighbour). They become
``registered-<name>.nii.gz`` / ``mask-<name>.nii.gz`` with ``overlay-<name>.png``; their QC
numbers (share of the brain mask with signal, correlation with the reference) join
``qc.json`` as ``<name>_signal`` and ``<name>_correlation``, and ``sequences.json`` lists
sequence -> file (read through :func:`pipeline_lib.imaging.sequences.registered_volumes`). The
QC gate judges the reference only: its status is the subject's.

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
from dataclasses import dataclass
from typing import Mapping
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import ants  # noqa: E402  (must follow the thread setting above)
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from pipeline_lib.core.errors import InputError  # noqa: E402
from pipeline_lib.core.io import atomic_path, write_json  # noqa: E402
from pipeline_lib.core.qc import (FAILED, OK, enforce_on_bad_input, flagged_status, new_status,  # noqa: E402
                                  read_status, skipped_status, write_status)
from pipeline_lib.core.settings import (PreprocessingSettings, RegistrationSettings,  # noqa: E402
                                        read_settings)
from pipeline_lib.imaging import brain_extraction  # noqa: E402
from pipeline_lib.imaging.discovery import sequence_order  # noqa: E402
from pipeline_lib.imaging.registration_qc import (_overlay_title, affine_qc, dice, gate,  # noqa: E402,F401
                                                  masked_correlation, save_overlay)
from pipeline_lib.imaging.sequences import DEFAULT_SEQUENCE, MANIFEST_NAME  # noqa: E402

log = logging.getLogger(__name__)

STAGE = "register"
REGISTERED_NAME = "registered.nii.gz"
MASK_NAME = "brain_mask.nii.gz"
NATIVE_MASK_NAME = "native_brain_mask.nii.gz"
QC_NAME = "qc.json"
OVERLAY_NAME = "overlay.png"
OUTPUT_NAMES = (REGISTERED_NAME, MASK_NAME, NATIVE_MASK_NAME, QC_NAME, OVERLAY_NAME, MANIFEST_NAME)
PER_SEQUENCE_GLOBS = ("registered-*.nii.gz", "mask-*.nii.gz", "overlay-*.png")
INGEST_SEQUENCES, INGEST_MASKS = "sequences", "masks"
TRANSFORMS = ("none", "Rigid", "Affine", "SyN")
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


def make_reference_grid(template_path: Path, grid_shape: tuple[int, int, int],
                        voxel_size: tuple[float, float, float] | None = None,
                        centre: np.ndarray | None = None) -> ants.ANTsImage:
    """The template resampled onto the output grid of ``grid_shape`` voxels.

    Without ``voxel_size`` the grid spans the template's whole field of view: ANTs spaces the
    new voxel centres so the first and last coincide with the template's, so voxels are
    anisotropic in general (128 x 128 x 40 on the 1 mm MNI template gives about 1.5 x 1.8 x
    4.7 mm). With ``voxel_size`` (mm per axis) the voxels have that size and the box, in the
    template's orientation, is centred on ``centre`` (LPS world coordinates, see
    :func:`physical_centre`), else on the centre of the template's field of view, moved by
    under half a template voxel onto the template's voxel lattice; parts of the
    box outside the template are 0. A paper that gives a matrix at a voxel size (BraTS:
    240 x 240 x 155 at 1 mm) then keeps slice numbers that mean what the paper's do.
    """
    shape = tuple(int(n) for n in grid_shape)
    if len(shape) != 3 or min(shape) < 2:
        raise InputError(f"registration grid {tuple(grid_shape)}: need three voxel counts of at least 2")
    template = _read_volume(Path(template_path))
    if voxel_size is None:
        return ants.resample_image(template, shape, use_voxels=True, interp_type=0)
    spacing = np.asarray(voxel_size, dtype=float)
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise InputError(f"registration.voxel_size {voxel_size!r}: need three sizes in mm, each above 0")
    direction = np.asarray(template.direction, dtype=float)
    centre = physical_centre(template) if centre is None else np.asarray(centre, dtype=float)
    origin = centre - direction @ (spacing * (np.asarray(shape) - 1) / 2)
    # onto the template's voxel lattice (a shift under half a template voxel), so a grid at the
    # template's own voxel size copies its voxels instead of interpolating between them
    template_spacing = np.asarray(template.spacing, dtype=float)
    steps = np.linalg.solve(direction * template_spacing, origin - np.asarray(template.origin, dtype=float))
    origin = np.asarray(template.origin, dtype=float) + (direction * template_spacing) @ np.round(steps)
    box = ants.make_image(shape, 0.0, spacing=tuple(spacing), origin=tuple(origin), direction=direction)
    return ants.resample_image_to_target(template, box, interp_type="linear")


def physical_centre(image: ants.ANTsImage, inside: np.ndarray | None = None) -> np.ndarray:
    """ANTs (LPS) world coordinates of the centre of the image's field of view, or of the
    bounding box of the voxels where ``inside`` (a boolean array of the image's shape) holds."""
    low, high = np.zeros(3), np.asarray(image.shape, dtype=float) - 1
    if inside is not None and inside.any():
        where = np.argwhere(inside)
        low, high = where.min(axis=0).astype(float), where.max(axis=0).astype(float)
    middle = (low + high) / 2
    return (np.asarray(image.origin, dtype=float)
            + np.asarray(image.direction, dtype=float) @ (np.asarray(image.spacing, dtype=float) * middle))


def _check_resolution(resolution_mm: float) -> None:
    if not resolution_mm or resolution_mm <= 0:
        raise InputError(f"template resolution {resolution_mm!r} mm: must be a positive number")


@dataclass(frozen=True)
class Target:
    """The template side of a registration, read once per job.

    ``fixed``: the template at the working resolution ANTs optimises against;
    ``reference``: the output grid; ``*_mask``: the template's brain mask on
    each (boolean arrays); ``name``: what the report calls the template.
    """

    fixed: ants.ANTsImage
    fixed_mask: np.ndarray
    reference: ants.ANTsImage
    reference_mask: np.ndarray
    name: str


def make_target(template: str | None, grid_shape: tuple[int, int, int], template_mask: str | None = None,
                resolution_mm: int = FIXED_RESOLUTION_MM,
                voxel_size: tuple[float, float, float] | None = None) -> Target:
    """The template (``template``; null = packaged MNI152) at ``resolution_mm`` and on the grid,
    with its brain mask: ``template_mask`` (a NIfTI, > 0 inside), else the template's non-zero
    voxels, which is right for brain-only templates such as the packaged one. ``voxel_size``
    (``registration.voxel_size``): see :func:`make_reference_grid`; the box is centred on the
    template's brain mask."""
    path = template_path(template)
    fixed = template_image(path, resolution_mm)
    mask_image = None
    if template_mask is not None:
        mask_path = Path(template_mask)
        if not mask_path.is_file():
            raise InputError(f"{mask_path}: configured registration.template_mask does not exist")
        mask_image = _read_volume(mask_path)
    centre = None
    if voxel_size is not None:
        # on the brain, not the field of view: the packaged MNI template's brain fills its 189 mm
        # height from the bottom up, so a 155 mm box on the field of view's centre would cut the
        # cerebellum while one on the brain holds all of it
        native = _read_volume(path) if mask_image is None else mask_image
        centre = physical_centre(native, native.numpy() > (0 if mask_image is None else 0.5))
    reference = make_reference_grid(path, grid_shape, voxel_size, centre)
    if mask_image is None:
        fixed_mask = fixed.numpy() > 0
        reference_mask = reference.numpy() > 0
    else:
        fixed_mask = ants.resample_image_to_target(mask_image, fixed, interp_type="linear").numpy() > 0.5
        reference_mask = ants.resample_image_to_target(mask_image, reference, interp_type="linear").numpy() > 0.5
    if not fixed_mask.any() or not reference_mask.any():
        raise InputError(f"{template_mask or path}: the template's brain mask is empty")
    name = "MNI152 2009c (nilearn)" if template is None else Path(template).name
    return Target(fixed, fixed_mask, reference, reference_mask, name)


# ------------------------------------------------------------------ one subject


def register_subject(moving_path: Path, target: Target, out_dir: Path, subject: str,
                     registration: RegistrationSettings | Mapping | None = None,
                     preprocessing: PreprocessingSettings | Mapping | None = None, *,
                     threads: int = 1, sequence: str = "", others: Mapping[str, Path] | None = None,
                     masks: Mapping[str, Path] | None = None) -> dict:
    """Extract the brain, register, resample, check; write the outputs and return the status.

    ``registration`` and ``preprocessing`` are the config blocks (their grid
    and template keys are not read here: ``target`` holds them). The status is
    ``ok``, ``flagged`` (QC gate failed; outputs written, reasons in
    ``reason``) or ``failed`` (bad volume, no brain found, ANTs error; nothing
    but ``status.json`` is left in ``out_dir``). Only invalid settings raise.
    ``sequence`` names the reference sequence (written to ``sequences.json`` when given);
    ``others`` and ``masks`` (name -> ingested NIfTI) go through the reference's transform.
    """
    cfg = read_settings(RegistrationSettings, registration)
    pre = read_settings(PreprocessingSettings, preprocessing)
    return _register_with_settings(moving_path, target, out_dir, subject, cfg, pre, threads=threads,
                                   sequence=sequence, others=others, masks=masks)


def _register_with_settings(moving_path: Path, target: Target, out_dir: Path, subject: str,
                            cfg: RegistrationSettings, pre: PreprocessingSettings, *, threads: int, sequence: str,
                            others: Mapping[str, Path] | None, masks: Mapping[str, Path] | None) -> dict:
    """:func:`register_subject` with its settings already read (the job reads them once)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    status = new_status(subject, STAGE)
    try:
        head_nifti = _load_nifti(Path(moving_path))
        result = _extract_and_register(head_nifti, target, cfg, pre, threads, others or {}, masks or {})
        qc = {"subject": subject, **result.qc}
        if qc["input_warning"]:
            log.warning("subject %s: %s", subject, qc["input_warning"])
        reasons = gate(qc, cfg)
        status = flagged_status(status, reasons)
        qc["status"] = status["status"]
        _write_image(out_dir / REGISTERED_NAME, result.registered)
        _write_image(out_dir / MASK_NAME, result.mask, dtype=np.uint8)
        _write_nifti(out_dir / NATIVE_MASK_NAME,
                     nib.Nifti1Image(result.native_mask.astype(np.uint8), head_nifti.affine))
        write_json(out_dir / QC_NAME, qc)
        save_overlay(out_dir / OVERLAY_NAME, result.registered, target, result.mask.numpy() > 0.5,
                     _overlay_title(subject, qc, reasons))
        if sequence or others or masks:
            _write_sequences(out_dir, subject, sequence or DEFAULT_SEQUENCE, result, target)
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
                         settings: RegistrationSettings | Mapping | None = None,
                         preprocessing: PreprocessingSettings | Mapping | None = None, *,
                         on_bad_input: str = "skip", threads: int = 1, sequence: str = "") -> dict:
    """The ``register`` rule: read the ingest status, register or pass the failure on.
    ``sequence`` is the subject's reference sequence ("" for a single-sequence input).

    ``settings`` is the ``registration`` config block, ``preprocessing`` the
    ``preprocessing`` one. With ``on_bad_input: fail`` a failed or skipped
    subject raises InputError after its status has been written (a flagged one
    does not: see core.qc).
    """
    cfg = read_settings(RegistrationSettings, settings)
    pre = read_settings(PreprocessingSettings, preprocessing)
    upstream = read_status(ingest_dir)
    if upstream.get("status") != OK:
        status = pass_on_failure(upstream, out_dir, subject)
    else:
        brain_extraction.require(pre.brain_extraction)
        target = make_target(cfg.template, cfg.grid, cfg.template_mask, voxel_size=cfg.voxel_size)
        status = _register_with_settings(Path(ingest_dir) / "volume.nii.gz", target, out_dir, subject, cfg, pre,
                                         threads=threads, sequence=sequence,
                                         others=ingested_parts(Path(ingest_dir) / INGEST_SEQUENCES),
                                         masks=ingested_parts(Path(ingest_dir) / INGEST_MASKS))
    if status["status"] != OK:
        log.info("subject %s: %s: %s", subject, status["status"], status["reason"])
    enforce_on_bad_input(status, on_bad_input)
    return status


def ingested_parts(folder: Path) -> dict[str, Path]:
    """name -> volume of the ingested sequences (or masks) in ``folder`` that ingest accepted."""
    if not folder.is_dir():
        return {}
    names = sequence_order([part.name for part in folder.iterdir()])  # discovery's order
    return {name: folder / name / "volume.nii.gz" for name in names if (folder / name / "volume.nii.gz").is_file()}


def _write_sequences(out_dir: Path, subject: str, reference: str, result: "_Result", target: Target) -> None:
    """The other sequences' and masks' files, their overlays and ``sequences.json``."""
    files = {reference: REGISTERED_NAME}
    mask = result.mask.numpy() > 0.5
    for name, image in result.others.items():
        files[name] = f"registered-{name}.nii.gz"
        _write_image(out_dir / files[name], image)
        save_overlay(out_dir / f"overlay-{name}.png", image, target, mask, f"{subject}  {name} (through {reference}'s transform)")
    masks = {}
    for name, image in result.masks.items():
        masks[name] = f"mask-{name}.nii.gz"
        _write_image(out_dir / masks[name], image, dtype=np.int16)
    write_json(out_dir / MANIFEST_NAME, {"reference": reference, "order": list(files), "sequences": files,
                                         "masks": masks})


# ------------------------------------------------------------------ extraction, ANTs and QC


@dataclass(frozen=True)
class _Result:
    registered: ants.ANTsImage
    mask: ants.ANTsImage
    native_mask: np.ndarray
    qc: dict
    others: dict
    masks: dict


def _extract_and_register(head_nifti: nib.Nifti1Image, target: Target, cfg: RegistrationSettings,
                          pre: PreprocessingSettings, threads: int, others: Mapping[str, Path] | None = None,
                          masks: Mapping[str, Path] | None = None) -> _Result:
    method = pre.brain_extraction
    data = np.asarray(head_nifti.dataobj, dtype=np.float32)
    foreground = brain_extraction.foreground_mask(data)
    extraction_source = pre.brain_extraction_sequence if pre.brain_extraction_sequence in (others or {}) else None
    if extraction_source is None:
        native_mask = brain_extraction.extract_brain(head_nifti, method, threads=threads, seed=cfg.seed,
                                                     deepbet_models=pre.deepbet_models)
    else:
        native_mask = _mask_from_sequence(Path(others[extraction_source]), head_nifti, method, threads, cfg.seed,
                                          pre.deepbet_models)
    foreground_ml = brain_extraction.mask_volume_ml(foreground, head_nifti)
    brain_ml = brain_extraction.mask_volume_ml(native_mask, head_nifti)
    warning = brain_extraction.input_kind_warning(method, foreground_ml, brain_ml)
    head = _to_ants(data, head_nifti.affine)
    mask = head.new_image_like(native_mask.astype(np.float32))
    brain = head if method == "none" else head * mask
    moving = brain if cfg.match == "brain" else head
    output = brain if cfg.output == "brain" else head

    with tempfile.TemporaryDirectory(prefix="ants-") as work:
        transforms = _estimate(moving, target.fixed, cfg.transform, cfg.seed, Path(work))
        registered = _resample(output, target.reference, transforms, "linear")
        data_out = registered.numpy()
        if not np.isfinite(data_out).all() or not np.any(data_out):
            raise RuntimeError(f"ANTs {cfg.transform} registration produced an empty or non-finite image")
        mask_on_grid = _resample(mask, target.reference, transforms, "linear")
        mask_on_grid = mask_on_grid.new_image_like((mask_on_grid.numpy() > 0.5).astype(np.float32))
        mask_on_fixed = _resample(mask, target.fixed, transforms, "linear").numpy() > 0.5
        linear = _linear_map(transforms)
        brain_on_grid = mask_on_grid.numpy() > 0.5
        other_images, other_qc = {}, {}
        for name, path in (others or {}).items():
            other_nifti = _load_nifti(Path(path))
            other = _to_ants(np.asarray(other_nifti.dataobj, dtype=np.float32), other_nifti.affine)
            if cfg.output == "brain" and method != "none":  # the reference's brain, in world coordinates
                on_other = ants.resample_image_to_target(mask, other, interp_type="linear").numpy() > 0.5
                other = other * other.new_image_like(on_other.astype(np.float32))
            moved = _resample(other, target.reference, transforms, "linear").clone("float")
            other_images[name] = moved
            values = moved.numpy()
            other_qc[f"{name}_signal"] = round(float((values[brain_on_grid] > 0).mean()) if brain_on_grid.any() else 0.0, 6)
            other_qc[f"{name}_correlation"] = round(masked_correlation(values, data_out, brain_on_grid), 6)
        mask_images = {}
        for name, path in (masks or {}).items():
            seg_nifti = _load_nifti(Path(path))
            seg = _to_ants(np.asarray(seg_nifti.dataobj, dtype=np.float32), seg_nifti.affine)
            mask_images[name] = _resample(seg, target.reference, transforms, "nearestNeighbor")
    before = ants.resample_image_to_target(output, target.reference, interp_type="linear")
    qc = {
        "brain_extraction": method,
        "brain_extraction_sequence": extraction_source or "reference",
        "match": cfg.match,
        "output": cfg.output,
        "template": target.name,
        "transform": cfg.transform,
        "seed": int(cfg.seed),
        "grid": "x".join(str(n) for n in target.reference.shape),
        "voxel_mm": "x".join(f"{v:.4g}" for v in target.reference.spacing),
        "itk_threads": int(os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "0") or 0),
        "mask_dice": dice(mask_on_fixed, target.fixed_mask),
        **affine_qc(linear),
        "correlation_after": masked_correlation(data_out, target.reference.numpy(), target.reference_mask),
        "correlation_before": masked_correlation(before.numpy(), target.reference.numpy(),
                                                 target.reference_mask),
        "brain_ml": round(brain_ml, 1),
        "foreground_ml": round(foreground_ml, 1),
        "input_warning": warning,
        "template_to_subject_ras": _lps_to_ras(linear).round(6).tolist(),
        **other_qc,
    }
    return _Result(registered.clone("float"), mask_on_grid, native_mask, qc, other_images, mask_images)


def _mask_from_sequence(path: Path, reference: nib.Nifti1Image, method: str, threads: int, seed: int,
                        deepbet_models: str | None) -> np.ndarray:
    """The brain mask extracted from another sequence of the subject (``path``), carried onto the
    reference's voxels through world coordinates (a b0 and its b1000 share the acquisition)."""
    source = _load_nifti(path)
    mask = brain_extraction.extract_brain(source, method, threads=threads, seed=seed, deepbet_models=deepbet_models)
    on_source = _to_ants(mask.astype(np.float32), source.affine)
    target = _to_ants(np.zeros(reference.shape[:3], np.float32), reference.affine)
    return ants.resample_image_to_target(on_source, target, interp_type="linear").numpy() > 0.5


def _estimate(moving: ants.ANTsImage, fixed: ants.ANTsImage, transform: str, seed: int, work: Path) -> list[str]:
    """ANTs' forward transform files (fixed -> moving, written into ``work``); [] for ``none``."""
    if transform == "none":
        return []
    if transform not in TRANSFORMS:
        raise InputError(f"registration transform {transform!r}: must be one of {', '.join(TRANSFORMS)}")
    previous = ants.config._random_seed
    # ANTs reads its seed from this module global; 0 would mean "seed from the clock"
    ants.config._random_seed = int(seed) + 1
    try:
        result = ants.registration(fixed, moving, type_of_transform=transform, outprefix=str(work / "x_"))
    finally:
        ants.config._random_seed = previous
    return list(result["fwdtransforms"])


def _resample(image: ants.ANTsImage, onto: ants.ANTsImage, transforms: list, interpolator: str) -> ants.ANTsImage:
    if not transforms:
        return ants.resample_image_to_target(image, onto, interp_type=interpolator)
    return ants.apply_transforms(onto, image, list(transforms), interpolator=interpolator)


def _linear_map(transforms: list[str]) -> np.ndarray:
    """4x4 matrix of the linear part of the fixed -> moving map, in ITK's LPS millimetres.

    Read off by mapping four points, so it works for every linear transform
    type ANTs writes; identity without transforms (``none``). A SyN warp field
    is left out: this is the affine part the QC gate judges.
    """
    matrix = np.eye(4)
    for path in transforms:
        if not str(path).endswith(".mat"):
            continue
        tx = ants.read_transform(str(path))
        origin = np.asarray(tx.apply_to_point((0.0, 0.0, 0.0)))
        columns = [np.asarray(tx.apply_to_point(tuple(e))) - origin for e in np.eye(3)]
        step = np.eye(4)
        step[:3, :3] = np.stack(columns, axis=1)
        step[:3, 3] = origin
        # ITK applies the last-listed transform first
        matrix = matrix @ step
    return matrix


def _lps_to_ras(matrix: np.ndarray) -> np.ndarray:
    return _RAS_TO_LPS @ matrix @ _RAS_TO_LPS


# ------------------------------------------------------------------ files


def _load_nifti(path: Path) -> nib.Nifti1Image:
    """Validate a 3-D NIfTI with nibabel and reorient it to RAS (float32 data, geometry checked).

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
    spacing = np.linalg.norm(image.affine[:3, :3], axis=0)
    if not np.all(spacing > 0):
        raise InputError(f"{path}: voxel size {tuple(spacing)} is not positive")
    direction = image.affine[:3, :3] / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError(f"{path}: affine is sheared; reslice the volume before registration")
    return nib.Nifti1Image(data, image.affine)


def _to_ants(data: np.ndarray, affine: np.ndarray) -> ants.ANTsImage:
    lps = _RAS_TO_LPS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return ants.from_numpy(np.ascontiguousarray(data, dtype=np.float32), origin=lps[:3, 3].tolist(),
                           spacing=spacing.tolist(), direction=lps[:3, :3] / spacing)


def _read_volume(path: Path) -> ants.ANTsImage:
    """A validated NIfTI (:func:`_load_nifti`) as a float32 ANTs image."""
    image = _load_nifti(path)
    return _to_ants(np.asarray(image.dataobj), image.affine)


def ras_affine(image: ants.ANTsImage) -> np.ndarray:
    """The NIfTI (RAS) voxel -> world affine of an ANTs image."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.direction, dtype=np.float64) * np.asarray(image.spacing)
    lps[:3, 3] = image.origin
    return _RAS_TO_LPS @ lps


def _write_image(path: Path, image: ants.ANTsImage, dtype: type = np.float32) -> None:
    """Write an ANTs image as a NIfTI (RAS affine) atomically, with a header holding only geometry."""
    _write_nifti(path, nib.Nifti1Image(image.numpy().astype(dtype), ras_affine(image)))


def _write_nifti(path: Path, nifti: nib.Nifti1Image) -> None:
    nifti.header.set_xyzt_units("mm")
    nifti.set_qform(nifti.affine, code=1)
    nifti.set_sform(nifti.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(nifti, str(tmp))


def _remove_outputs(out_dir: Path) -> None:
    # a rerun into the same folder must not leave an earlier success behind
    for name in OUTPUT_NAMES:
        (out_dir / name).unlink(missing_ok=True)
    for pattern in PER_SEQUENCE_GLOBS:
        for path in out_dir.glob(pattern):
            path.unlink(missing_ok=True)
