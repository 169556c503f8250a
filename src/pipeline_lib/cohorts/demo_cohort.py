"""A deterministic synthetic brain-MRI cohort for demos and tests, built offline.

Every subject is a head phantom: the MNI152 2009 T1 template (shipped inside the
nilearn wheel, brain-only) wrapped in CSF, skull (inner and outer table around
marrow) and scalp (muscle and fat) shells with T1-like intensities, on a field
of view padded to hold them (:func:`head_phantom`), because real T1 exports
have skull and scalp and the pipeline must extract the brain. The phantom is
put under a random affine plus a smooth B-spline displacement, a multiplicative
bias field, and a simulated scanner: a contrast curve, blur and Rician noise
that differ per scanner class. All variation is simulated, so the cohort
exercises the pipeline's code paths but says nothing about model quality on
real data.

The cohort mixes formats the way real collections do: DICOM series folders
carrying planted, fake patient identifiers (to test that none leak), ``.nii`` and
``.nii.gz`` files, one subject whose header gives the wrong voxel size (a plausible
file the registration QC must flag) and one deliberately corrupt file.
"""

from __future__ import annotations

import gzip
import shutil
import string
import tempfile
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from pipeline_lib.core import io
from pipeline_lib.imaging.dicom import write_dicom_series
from pipeline_lib.core.errors import InputError

__all__ = ["ScannerProfile", "load_mni_template_image", "make_demo_cohort", "scanner_profile", "simulate_subject"]

SAMPLE_COLUMNS = ["subject", "path", "scanner", "format"]
_FIRST_NAMES = ["Ada", "Grace", "Alan", "Marie", "Emmy", "Rosalind", "Kurt", "Lise", "Niels", "Hedy"]
# Independent random streams per subject, so subject i does not depend on n_subjects.
_ANATOMY_STREAM, _SCANNER_STREAM, _PHI_STREAM = 1, 2, 3
# Shells outside the brain, (outer distance from the brain in mm, T1 intensity relative to white
# matter ~ 1): CSF, inner table, diploe (marrow), outer table, galea/muscle, subcutaneous fat.
HEAD_LAYERS = ((3.0, 0.12), (5.0, 0.03), (8.0, 0.45), (10.0, 0.03), (12.0, 0.35), (17.0, 0.9))
HEAD_MARGIN_MM = 20.0
# The wrong-geometry subject's header claims voxels this much larger than they are.
WRONG_VOXEL_FACTOR = 1.5


@dataclass(frozen=True)
class ScannerProfile:
    """How one simulated scanner class renders a subject, and what its DICOM header says."""

    label: str
    manufacturer: str
    model_name: str
    field_strength: float
    series_description: str
    gamma: float  # contrast curve applied to the [0, 1] signal
    blur_mm: float  # Gaussian sigma of the point-spread function
    noise: float  # Rician noise sigma relative to the white-matter level (about 1)
    gain: float  # arbitrary intensity units, as scanners differ in scale


_PRESETS = [
    ("Phantom Imaging Systems", "Demo Prisma", 3.0, "T1w_MPRAGE_SAG", 1.0, 0.0, 0.02, 1000.0),
    ("Acme Medical Devices", "Acme Signa 15", 1.5, "SAG 3D T1 FSPGR", 0.7, 1.6, 0.06, 3000.0),
    ("Phantom Imaging Systems", "Demo Skyra", 3.0, "t1_mprage_1mm", 1.3, 0.8, 0.035, 1500.0),
    ("Nowhere Scientific", "NS Achieva", 1.5, "T1 3D TFE", 0.85, 1.4, 0.05, 2200.0),
]


def scanner_profile(index: int) -> ScannerProfile:
    """Profile of scanner class ``index`` (0 → scanner-A, 1 → scanner-B, ...).

    The first four are fixed presets chosen to differ clearly; later ones vary
    a preset deterministically.
    """
    if not 0 <= index < len(string.ascii_uppercase):
        raise InputError(f"n_scanners: at most {len(string.ascii_uppercase)} scanner classes, got index {index}")
    manufacturer, model, tesla, description, gamma, blur, noise, gain = _PRESETS[index % len(_PRESETS)]
    rounds = index // len(_PRESETS)
    if rounds:
        rng = np.random.default_rng([index, _SCANNER_STREAM])
        gamma *= float(rng.uniform(0.85, 1.15))
        blur += float(rng.uniform(0.0, 0.6))
        noise *= float(rng.uniform(0.8, 1.3))
        model = f"{model} R{rounds + 1}"
    letter = string.ascii_uppercase[index]
    return ScannerProfile(f"scanner-{letter}", manufacturer, model, tesla, description, gamma, blur, noise, gain)


def load_mni_template_image(resolution_mm: int = 2) -> nib.Nifti1Image:
    """The MNI152 T1 template scaled to [0, 1], from the nilearn wheel (no download)."""
    from nilearn.datasets import load_mni152_template

    with warnings.catch_warnings():
        # nilearn announces future resampling defaults; irrelevant to a fixed grid.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        image = load_mni152_template(resolution=resolution_mm)
    data = np.clip(np.asarray(image.get_fdata(), dtype=np.float32), 0.0, None)
    return nib.Nifti1Image(data / data.max(), image.affine)


def head_phantom(brain: nib.Nifti1Image) -> nib.Nifti1Image:
    """A head around a brain-only ``brain`` image: CSF, skull and scalp shells (:data:`HEAD_LAYERS`).

    The field of view grows by :data:`HEAD_MARGIN_MM` on every side (the
    affine is shifted so the brain stays where it was in the world). Shells are
    distances from a smoothed brain outline, blurred by one voxel, so their
    edges are not staircases.
    """
    data = np.asarray(brain.dataobj, dtype=np.float32)
    voxel_mm = float(np.linalg.norm(brain.affine[:3, 0]))
    pad = int(np.ceil(HEAD_MARGIN_MM / voxel_mm))
    data = np.pad(data, pad)
    affine = brain.affine.copy()
    affine[:3, 3] -= brain.affine[:3, :3] @ np.full(3, pad)
    outline = ndimage.gaussian_filter((data > 0.05).astype(np.float32), 2.0 / voxel_mm) > 0.3
    outline = ndimage.binary_fill_holes(outline)
    distance = ndimage.distance_transform_edt(~outline, sampling=voxel_mm)
    shells = np.zeros_like(data)
    inner = 0.0
    for outer, intensity in HEAD_LAYERS:
        shells[(distance > inner) & (distance <= outer)] = intensity
        inner = outer
    shells = ndimage.gaussian_filter(shells, 0.7)
    head = np.where(data > 0.05, data, np.maximum(data, shells))
    return nib.Nifti1Image(head.astype(np.float32), affine)


def simulate_subject(
    template: np.ndarray, scanner: ScannerProfile, seed: int, subject_index: int, voxel_mm: float
) -> np.ndarray:
    """One synthetic subject on the template grid: deformed anatomy seen by ``scanner``.

    Depends only on (template, scanner, seed, subject_index), never on global state.
    """
    anatomy_rng = np.random.default_rng([seed, subject_index, _ANATOMY_STREAM])
    noise_rng = np.random.default_rng([seed, subject_index, _SCANNER_STREAM])
    signal = _deform(template, anatomy_rng, voxel_mm)
    signal *= bias_field(template.shape, anatomy_rng)
    signal = np.clip(signal, 0.0, None) ** scanner.gamma
    if scanner.blur_mm > 0:
        signal = ndimage.gaussian_filter(signal, sigma=scanner.blur_mm / voxel_mm, mode="constant")
    signal = rician(signal, scanner.noise, noise_rng)
    return (signal * scanner.gain).astype(np.float32)


def make_demo_cohort(
    out_dir: Path,
    n_subjects: int = 12,
    seed: int = 0,
    resolution_mm: int = 2,
    n_scanners: int = 2,
    dicom_fraction: float = 0.5,
) -> pd.DataFrame:
    """Write a synthetic cohort into ``out_dir`` and return its sample table.

    ``out_dir`` receives ``n_subjects`` readable head phantoms named ``demo-01``, ...
    (a ``dicom_fraction`` share as DICOM series folders, the rest alternating
    ``.nii``/``.nii.gz``), one extra phantom whose header claims
    :data:`WRONG_VOXEL_FACTOR` times its true voxel size (registration must flag
    it), one extra subject whose ``.nii.gz`` is truncated, ``samples.tsv``
    (subject, path relative to ``out_dir``, scanner, format) and
    ``planted_phi.json`` (the fake identifiers planted in headers, the
    wrong-geometry and the corrupt subject). The cohort is built in a temporary sibling folder and moved into
    place at the end, so ``out_dir`` is either complete or untouched. The same
    arguments always give byte-identical files.
    """
    _check_arguments(n_subjects, resolution_mm, n_scanners, dicom_fraction)
    out_dir = Path(out_dir)
    template = head_phantom(load_mni_template_image(resolution_mm))
    template_data = np.asarray(template.dataobj, dtype=np.float32)
    names = _subject_names(n_subjects + 2)
    formats = _assign_formats(n_subjects, n_scanners, dicom_fraction)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building.", dir=out_dir.parent))
    build.chmod(0o755)  # mkdtemp's private 0700 would otherwise stick to out_dir
    try:
        rows, planted = [], {}
        for index, (name, fmt) in enumerate(zip(names, formats)):
            scanner = scanner_profile(index % n_scanners)
            volume = simulate_subject(template_data, scanner, seed, index, float(resolution_mm))
            phi = fake_identity(seed, index)
            path = _write_subject(build, name, fmt, volume, template.affine, scanner, phi, seed)
            planted[name] = _planted_record(fmt, phi)
            rows.append((name, path, scanner.label, _format_label(fmt)))
        wrong, corrupt = names[-2], names[-1]
        wrong_scanner = scanner_profile(n_subjects % n_scanners)
        volume = simulate_subject(template_data, wrong_scanner, seed, n_subjects, float(resolution_mm))
        wrong_affine = template.affine @ np.diag([WRONG_VOXEL_FACTOR] * 3 + [1.0])
        write_nifti(nib.Nifti1Image(volume, wrong_affine), build / f"{wrong}.nii.gz")
        rows.append((wrong, f"{wrong}.nii.gz", wrong_scanner.label, "nifti"))
        corrupt_scanner = scanner_profile((n_subjects + 1) % n_scanners).label
        rows.append((corrupt, _write_truncated(build, corrupt, template_data * 1000, template.affine), corrupt_scanner, "nifti"))

        table = pd.DataFrame(rows, columns=SAMPLE_COLUMNS)
        io.write_tsv(build / "samples.tsv", table)
        io.write_json(build / "planted_phi.json", _planted_summary(planted, corrupt, wrong, seed))
        make_readable(build)
        _move_into_place(build, out_dir)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return table


def _check_arguments(n_subjects: int, resolution_mm: int, n_scanners: int, dicom_fraction: float) -> None:
    """Reject arguments that cannot give a meaningful cohort."""
    if not 1 <= int(n_subjects) <= 999:
        raise InputError(f"n_subjects must be between 1 and 999, got {n_subjects}")
    if int(resolution_mm) != resolution_mm or not 1 <= resolution_mm <= 4:
        raise InputError(f"resolution_mm must be an integer from 1 to 4, got {resolution_mm}")
    if not 1 <= int(n_scanners) <= len(string.ascii_uppercase):
        raise InputError(f"n_scanners must be between 1 and 26, got {n_scanners}")
    if not 0.0 <= float(dicom_fraction) <= 1.0:
        raise InputError(f"dicom_fraction must lie in [0, 1], got {dicom_fraction}")


def _subject_names(count: int) -> list[str]:
    """Neutral names demo-01, demo-02, ... (wider when there are 100 or more)."""
    width = max(2, len(str(count)))
    return [f"demo-{i:0{width}d}" for i in range(1, count + 1)]


def _assign_formats(n_subjects: int, n_scanners: int, dicom_fraction: float) -> list[str]:
    """File format per subject: "dicom", "nii" or "nii.gz".

    Subjects are visited scanner by scanner and the DICOM share is spread evenly
    over that order, so each scanner class gets both DICOM and NIfTI subjects and
    format does not stand in for scanner. NIfTI subjects alternate the suffix in
    the same order, for the same reason.
    """
    order = sorted(range(n_subjects), key=lambda i: (i % n_scanners, i))
    formats = [""] * n_subjects
    nifti_count = 0
    for position, index in enumerate(order):
        if int((position + 1) * dicom_fraction) > int(position * dicom_fraction):
            formats[index] = "dicom"
    for index in order:
        if not formats[index]:
            formats[index] = "nii.gz" if nifti_count % 2 == 0 else "nii"
            nifti_count += 1
    return formats


def _format_label(fmt: str) -> str:
    return "dicom" if fmt == "dicom" else "nifti"


def _bspline_basis(n_points: int, n_coeffs: int) -> np.ndarray:
    """Cubic B-spline basis (n_points × n_coeffs) with knots spread over the axis."""
    t = np.linspace(1.0, n_coeffs - 2.0, n_points)[:, None] - np.arange(n_coeffs)[None, :]
    a = np.abs(t)
    return np.where(a < 1, (4 - 6 * a**2 + 3 * a**3) / 6, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


def _smooth_field(shape: tuple[int, ...], coeffs: np.ndarray) -> np.ndarray:
    """Evaluate a separable cubic B-spline with coefficient grid ``coeffs`` on ``shape``."""
    bx, by, bz = (_bspline_basis(n, c) for n, c in zip(shape, coeffs.shape))
    return np.einsum("ia,jb,kc,abc->ijk", bx, by, bz, coeffs, optimize=True)


def _deform(template: np.ndarray, rng: np.random.Generator, voxel_mm: float) -> np.ndarray:
    """Resample the template under a small random affine plus a B-spline displacement."""
    coords = deformation_coordinates(template.shape, rng, voxel_mm)
    warped = ndimage.map_coordinates(template, coords, order=1, mode="constant", cval=0.0)
    return warped.reshape(template.shape)


def deformation_coordinates(shape_: tuple[int, ...], rng: np.random.Generator, voxel_mm: float) -> np.ndarray:
    """Sampling coordinates (3 x voxels) of a small random affine plus a smooth B-spline displacement,
    so several co-registered volumes (and a label map, with ``order=0``) can share one deformation."""
    shape = np.array(shape_)
    angles = np.deg2rad(rng.uniform(-6, 6, size=3))
    scales = rng.uniform(0.93, 1.07, size=3)
    shift_vox = rng.uniform(-4, 4, size=3) / voxel_mm
    matrix = _rotation(angles) @ np.diag(scales)

    grid = np.indices(tuple(shape_), dtype=np.float32).reshape(3, -1)
    centre = (shape[:, None] - 1) / 2.0
    coords = matrix @ (grid - centre) + centre + shift_vox[:, None]
    # Displacements of a few millimetres, smooth over about 1/4 of the head.
    amplitude_vox = 2.5 / voxel_mm
    for axis in range(3):
        coeffs = rng.normal(0.0, amplitude_vox, size=(7, 7, 7))
        coords[axis] += _smooth_field(tuple(shape_), coeffs).reshape(-1)
    return coords


def _rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix from three angles (radians) about x, y and z."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def bias_field(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field around 1 (roughly ±20 %), like receive-coil shading."""
    coeffs = rng.normal(0.0, 0.15, size=(4, 4, 4))
    return np.exp(_smooth_field(shape, coeffs)).astype(np.float32)


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise, as in magnitude MR images."""
    real = signal + rng.normal(0.0, sigma, size=signal.shape)
    imaginary = rng.normal(0.0, sigma, size=signal.shape)
    return np.sqrt(real**2 + imaginary**2)


def fake_identity(seed: int, index: int) -> dict[str, str]:
    """Planted fake PHI for one subject: name, ID and birth date, all deterministic."""
    rng = np.random.default_rng([seed, index, _PHI_STREAM])
    first = _FIRST_NAMES[int(rng.integers(len(_FIRST_NAMES)))]
    # The last three digits are the subject index, which keeps IDs unique.
    number = int(rng.integers(100, 1000)) * 1000 + index
    year, month, day = int(rng.integers(1935, 1966)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    return {
        "patient_name": f"Phantom^{first}^{index + 1}",
        "patient_id": f"PHI-ID-{number:06d}",
        "birth_date": f"{year:04d}{month:02d}{day:02d}",
        "institution_name": f"Phantom General Hospital {index + 1}",
    }


def _write_subject(
    folder: Path,
    name: str,
    fmt: str,
    volume: np.ndarray,
    affine: np.ndarray,
    scanner: ScannerProfile,
    phi: dict[str, str],
    seed: int,
) -> str:
    """Write one subject in its format; return its path relative to ``folder``."""
    if fmt == "dicom":
        write_dicom_series(
            volume,
            affine,
            folder / name,
            patient_name=phi["patient_name"],
            patient_id=phi["patient_id"],
            birth_date=phi["birth_date"],
            institution_name=phi["institution_name"],
            manufacturer=scanner.manufacturer,
            model_name=scanner.model_name,
            field_strength=scanner.field_strength,
            series_description=scanner.series_description,
            uid_seed=f"demo-cohort/{seed}/{name}",
        )
        return name
    if fmt == "nii":
        # Plain .nii files are stored the FSL way (x flipped, LAS) as int16, so that
        # ingestion meets a second orientation and a scaled integer type.
        volume, affine = volume[::-1], affine @ _flip_x(volume.shape[0])
        image = nib.Nifti1Image(np.rint(volume).astype(np.int16), affine)
    else:
        image = nib.Nifti1Image(volume.astype(np.float32), affine)
    # NIfTI headers can carry identifiers too (free-text description field).
    image.header["descrip"] = f"{phi['patient_name']} {phi['patient_id']}".encode()
    write_nifti(image, folder / f"{name}.{fmt}")
    return f"{name}.{fmt}"


def _flip_x(n: int) -> np.ndarray:
    """Voxel-index transform that reverses the first axis of an ``n``-long grid."""
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, n - 1.0
    return flip


def _nifti_bytes(image: nib.Nifti1Image) -> bytes:
    """Uncompressed single-file NIfTI-1 bytes with mm units and aligned qform/sform."""
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(image.affine, code=2)
    image.set_sform(image.affine, code=2)
    return image.to_bytes()


def write_nifti(image: nib.Nifti1Image, path: Path) -> None:
    """Write ``.nii`` or ``.nii.gz``; gzip with mtime 0 so reruns are byte-identical."""
    raw = _nifti_bytes(image)
    data = gzip.compress(raw, compresslevel=6, mtime=0) if path.name.endswith(".gz") else raw
    with io.atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _write_truncated(folder: Path, name: str, volume: np.ndarray, affine: np.ndarray) -> str:
    """A ``.nii.gz`` whose gzip stream and header are valid but whose voxel data stops halfway."""
    raw = _nifti_bytes(nib.Nifti1Image(volume.astype(np.float32), affine))
    header_bytes = int(nib.Nifti1Header.from_fileobj(BytesIO(raw)).get_data_offset())
    cut = header_bytes + (len(raw) - header_bytes) // 2
    path = folder / f"{name}.nii.gz"
    with io.atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(raw[:cut], compresslevel=6, mtime=0))
    return path.name


def _planted_record(fmt: str, phi: dict[str, str]) -> dict[str, str]:
    """The identifiers actually planted in one subject's files, and where."""
    if fmt == "dicom":
        return {"planted_in": "DICOM header", **phi}
    return {"planted_in": "NIfTI descrip", "patient_name": phi["patient_name"], "patient_id": phi["patient_id"]}


def _planted_summary(planted: dict[str, dict], corrupt: str, wrong_geometry: str, seed: int) -> dict:
    """Contents of planted_phi.json: per-subject identifiers and a flat list to grep for, and the
    subjects that are broken on purpose."""
    strings = sorted(
        {value for subject in planted.values() for key, value in subject.items() if key != "planted_in"}
    )
    return {
        "seed": seed,
        "note": "Fake identifiers planted in DICOM headers and NIfTI descrip fields; "
        "none of these strings may appear in any pipeline output or log.",
        "subjects": planted,
        "strings": strings,
        "corrupt_subjects": [corrupt],
        "wrong_geometry_subjects": [wrong_geometry],
    }


def make_readable(folder: Path) -> None:
    """Give files the usual 0644: temporary-file writers create them private (0600)."""
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o644)


def _move_into_place(build: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the finished cohort; only an earlier cohort may be replaced."""
    def earlier_cohort(folder: Path) -> str | None:
        entries = list(folder.iterdir()) if folder.is_dir() else None
        if entries is None or (entries and not (folder / "samples.tsv").is_file()):
            return "exists and is not an earlier demo cohort"
        return None

    io.replace_directory(build, out_dir, ours=earlier_cohort)
