"""Known-affine cases for checking registration against ground truth (tests and bench).

A real head (Colin27's ``ch2`` from Debian's mricron-data, already in MNI
space) is moved by a known world affine ``T`` (rotation, translation, scale),
written in another voxel orientation or as DICOM, and run through the
pipeline. If the pipeline maps template point ``p`` to ``F0(p)`` in the
unmoved head, the moved head must map it to ``T(F0(p))``; the mean distance
between the two over the template's brain mask is the registration error in
millimetres (:func:`displacement_error`), and the registered brain mask is
compared with the unmoved head's brain mask carried through ``F0``
(:func:`ground_truth_mask`).

Broken cases (:data:`BROKEN_CASES`) must come out ``flagged`` or ``failed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from pipeline_lib.core.errors import InputError

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
COLIN27_BRAIN = Path("/usr/share/mricron/templates/ch2bet.nii.gz")
INSTALL_HINT = ("Colin27 (ch2.nii.gz, ch2bet.nii.gz) comes with Debian's mricron-data: "
                "apt-get install mricron-data (tests/install-system-deps.sh installs it)")
# voxel-axis orientations a PACS or a converter may write (nibabel axis codes)
ORIENTATIONS = {
    "RAS": ("R", "A", "S"),
    "LPS": ("L", "P", "S"),  # DICOM's patient axes, e.g. ITK's default
    "LAS": ("L", "A", "S"),  # FSL's radiological storage
    "PIR": ("P", "I", "R"),  # sagittal acquisition
    "RSA": ("R", "S", "A"),  # coronal acquisition
}
BROKEN_CASES = ("no_geometry", "flipped_axis", "near_empty")


def require_colin27() -> tuple[Path, Path]:
    """The Colin27 head and its brain, or InputError saying how to install them."""
    missing = [str(p) for p in (COLIN27, COLIN27_BRAIN) if not p.is_file()]
    if missing:
        raise InputError(f"{', '.join(missing)} missing. {INSTALL_HINT}")
    return COLIN27, COLIN27_BRAIN


def downsample(image: nib.Nifti1Image, voxel_mm: float) -> nib.Nifti1Image:
    """``image`` on an isotropic ``voxel_mm`` grid covering the same box (block-free, linear)."""
    zooms = np.asarray(image.header.get_zooms()[:3], dtype=float)
    factor = voxel_mm / zooms
    data = np.asarray(image.dataobj, dtype=np.float32)
    # smooth before sampling so the coarse grid does not alias
    data = ndimage.gaussian_filter(data, sigma=np.maximum(factor - 1, 0) / 2)
    shape = np.maximum(np.floor((np.array(data.shape) - 1) / factor).astype(int) + 1, 1)
    coords = np.indices(shape, dtype=np.float64).reshape(3, -1) * factor[:, None]
    out = ndimage.map_coordinates(data, coords, order=1).reshape(shape)
    affine = image.affine @ np.diag([*factor, 1.0])
    return nib.Nifti1Image(out.astype(np.float32), affine)


def known_affine(rotation_deg=(0.0, 0.0, 0.0), translation_mm=(0.0, 0.0, 0.0),
                 scale=(1.0, 1.0, 1.0), centre_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 world (RAS mm) affine: scale, then rotate about x, y, z, about ``centre_mm``; then shift."""
    ax, ay, az = np.deg2rad(rotation_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    linear = rz @ ry @ rx @ np.diag(scale)
    centre = np.asarray(centre_mm, dtype=float)
    out = np.eye(4)
    out[:3, :3] = linear
    out[:3, 3] = centre - linear @ centre + np.asarray(translation_mm, dtype=float)
    return out


def random_affine(rng: np.random.Generator, max_rotation_deg: float = 10.0, max_translation_mm: float = 10.0,
                  max_scale: float = 0.08, centre_mm=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, dict]:
    """A random :func:`known_affine` within the bounds, and its parameters."""
    params = {
        "rotation_deg": rng.uniform(-max_rotation_deg, max_rotation_deg, 3).round(2).tolist(),
        "translation_mm": rng.uniform(-max_translation_mm, max_translation_mm, 3).round(2).tolist(),
        "scale": (1 + rng.uniform(-max_scale, max_scale, 3)).round(4).tolist(),
    }
    return known_affine(**params, centre_mm=centre_mm), params


def move(image: nib.Nifti1Image, world: np.ndarray, order: int = 1, margin_mm: float = 15.0) -> nib.Nifti1Image:
    """The content of ``image`` moved by the world affine ``world`` (a point x goes to world @ x).

    The result lies on a grid with ``image``'s voxel size and axes, grown by
    ``margin_mm`` on every side so the moved head is not cut off.
    """
    zooms = np.asarray(image.header.get_zooms()[:3], dtype=float)
    pad = np.ceil(margin_mm / zooms).astype(int)
    shape = np.array(image.shape[:3]) + 2 * pad
    out_affine = image.affine.copy()
    out_affine[:3, 3] -= image.affine[:3, :3] @ pad
    # voxel of the output -> world -> back through world^-1 -> voxel of the input
    to_input = np.linalg.inv(image.affine) @ np.linalg.inv(world) @ out_affine
    data = np.asarray(image.dataobj, dtype=np.float32)
    moved = ndimage.affine_transform(data, to_input[:3, :3], offset=to_input[:3, 3], output_shape=tuple(shape),
                                     order=order, mode="constant", cval=0.0)
    return nib.Nifti1Image(moved.astype(np.float32), out_affine)


def reorient(image: nib.Nifti1Image, codes: tuple[str, str, str]) -> nib.Nifti1Image:
    """The same image (same world) stored with voxel axes along ``codes``."""
    current = nib.orientations.io_orientation(image.affine)
    wanted = nib.orientations.axcodes2ornt(codes)
    out = image.as_reoriented(nib.orientations.ornt_transform(current, wanted))
    if nib.aff2axcodes(out.affine) != tuple(codes):
        raise InputError(f"could not store the image as {''.join(codes)}")
    return out


def broken_case(image: nib.Nifti1Image, kind: str) -> nib.Nifti1Image:
    """A volume that must not come out ``ok``.

    ``no_geometry``: the header lost its geometry (identity affine: 1 mm
    voxels, the stored axes taken for R, A, S) on a volume stored sagittally
    (P, I, R), as a converter writes it when position and orientation tags are
    missing; ``flipped_axis``: the voxels are stored upside
    down while the header still says superior is up; ``near_empty``: a few
    bright voxels in noise (a localiser or a failed export).
    """
    data = np.asarray(image.dataobj, dtype=np.float32)
    if kind == "no_geometry":
        sagittal = reorient(image, ORIENTATIONS["PIR"])
        return nib.Nifti1Image(np.asarray(sagittal.dataobj, dtype=np.float32), np.eye(4))
    if kind == "flipped_axis":
        return nib.Nifti1Image(np.flip(data, axis=_axis_along(image, "S")).copy(), image.affine)
    if kind == "near_empty":
        rng = np.random.default_rng(0)
        noise = rng.rayleigh(1.0, data.shape).astype(np.float32)
        centre = tuple(n // 2 for n in data.shape)
        noise[centre[0] - 1:centre[0] + 2, centre[1] - 1:centre[1] + 2, centre[2] - 1:centre[2] + 2] = 200.0
        return nib.Nifti1Image(noise, image.affine)
    raise InputError(f"unknown broken case {kind!r}; known: {', '.join(BROKEN_CASES)}")


def _axis_along(image: nib.Nifti1Image, code: str) -> int:
    """The voxel axis that runs along world ``code`` (R, A or S) or its opposite."""
    codes = nib.aff2axcodes(image.affine)
    pairs = {"R": "RL", "A": "AP", "S": "SI"}[code]
    return next(i for i, c in enumerate(codes) if c in pairs)


@dataclass(frozen=True)
class Fixed:
    """Template brain-mask points (RAS mm) the displacement error is averaged over."""

    points: np.ndarray  # (n, 3)

    @classmethod
    def from_mask(cls, mask: np.ndarray, affine: np.ndarray, step: int = 2) -> "Fixed":
        index = np.argwhere(np.asarray(mask, dtype=bool))[::step]
        return cls((affine @ np.c_[index, np.ones(len(index))].T).T[:, :3])


def displacement_error(estimated: np.ndarray, expected: np.ndarray, fixed: Fixed) -> tuple[float, float]:
    """Mean and maximum distance (mm) between two template -> subject maps (4x4, RAS mm) over
    the template's brain-mask points."""
    points = np.c_[fixed.points, np.ones(len(fixed.points))].T
    gap = np.linalg.norm((np.asarray(estimated) @ points - np.asarray(expected) @ points)[:3], axis=0)
    return float(gap.mean()), float(gap.max())


def ground_truth_mask(subject_mask: nib.Nifti1Image, template_to_subject: np.ndarray,
                      grid: nib.Nifti1Image) -> np.ndarray:
    """``subject_mask`` (> 0.5 inside) carried onto ``grid`` through the template -> subject map."""
    index = np.indices(grid.shape[:3], dtype=np.float64).reshape(3, -1)
    world = grid.affine @ np.vstack([index, np.ones(index.shape[1])])
    voxels = np.linalg.inv(subject_mask.affine) @ np.asarray(template_to_subject) @ world
    values = ndimage.map_coordinates(np.asarray(subject_mask.dataobj, dtype=np.float32), voxels[:3], order=1)
    return values.reshape(grid.shape[:3]) > 0.5


# ------------------------------------------------------------------ running a case through the pipeline


SUBJECT = "sub-0000000000"


def write_case(image: nib.Nifti1Image, folder: Path, name: str, form: str) -> tuple[Path, str]:
    """Write ``image`` as a PACS or a converter would hand it over; return (source, ingest format).

    ``form`` is an :data:`ORIENTATIONS` key (a NIfTI stored along those voxel
    axes) or ``"DICOM"`` (an MR series written slice by slice with its real
    geometry, converted back by dcm2niix at ingest).
    """
    from pipeline_lib.imaging.dicom import write_dicom_series

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if form == "DICOM":
        canonical = nib.as_closest_canonical(image)
        data = np.asarray(canonical.dataobj, dtype=np.float32)
        write_dicom_series(data, canonical.affine, folder / name, patient_name="Case^Ground^Truth",
                           patient_id="GT-000", birth_date="19700101", manufacturer="Test",
                           model_name="Ground truth", field_strength=3.0, series_description="T1 3D",
                           uid_seed=f"ground-truth/{name}")
        return folder / name, "dicom"
    if form not in ORIENTATIONS:
        raise InputError(f"unknown case form {form!r}; known: DICOM, {', '.join(ORIENTATIONS)}")
    path = folder / f"{name}.nii.gz"
    nib.save(reorient(image, ORIENTATIONS[form]), str(path))
    return path, "nifti"


def run_case(source: Path, fmt: str, work: Path, target, registration: dict, preprocessing: dict) -> tuple[dict, dict]:
    """Ingest and register one case as the pipeline does; return (status, qc) ({} when failed)."""
    import json

    from pipeline_lib.imaging.ingest import ingest_subject
    from pipeline_lib.imaging.registration import QC_NAME, register_subject

    work = Path(work)
    ingested = ingest_subject(Path(source), fmt, work / "ingest", SUBJECT)
    if ingested["status"] != "ok":
        return ingested, {}
    status = register_subject(work / "ingest" / "volume.nii.gz", target, work / "register", SUBJECT,
                              registration, preprocessing)
    qc_path = work / "register" / QC_NAME
    return status, (json.loads(qc_path.read_text()) if qc_path.is_file() else {})


def case_errors(qc: dict, register_dir: Path, expected: np.ndarray, fixed: Fixed,
                truth_mask: np.ndarray) -> dict:
    """Mean and maximum displacement (mm) against the ``expected`` template -> subject map over
    the template's brain-mask points, and Dice of the registered brain mask with ``truth_mask``."""
    from pipeline_lib.imaging.registration import MASK_NAME, dice

    estimated = np.asarray(qc["template_to_subject_ras"], dtype=np.float64)
    mean_mm, max_mm = displacement_error(estimated, expected, fixed)
    registered_mask = np.asarray(nib.load(str(Path(register_dir) / MASK_NAME)).dataobj) > 0
    return {"mean_mm": round(mean_mm, 3), "max_mm": round(max_mm, 3),
            "dice": round(dice(registered_mask, truth_mask), 4)}
