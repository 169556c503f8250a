"""Stand-in cohorts for the four studies' presets: synthetic data shaped like each paper's data.

Every preset (``presets/<study>.yaml``) runs unchanged on its stand-in apart from scale (the demo
and test overrides in ``presets/demo/``). The anatomy is :mod:`demo_cohort`'s: the MNI152 brain
(nilearn wheel, offline), per subject under a random affine plus a smooth B-spline deformation, a
bias field and a simulated scanner (contrast curve, blur, Rician noise). What differs per study is
what real data of that study looks like on disk:

* ``ungria_hirte_2020`` (Ungría Hirte et al.: DWI from a hospital PACS): one DICOM study folder per
  patient (named like a PACS export, with planted fake identifiers) holding a localizer series and
  one DWI series whose files carry the b0 and the b1000 volume (``DiffusionBValue``), heads with
  skull and scalp, 4 mm axial slices, DWI contrast (b1000: CSF dark, grey matter a little brighter
  than white; b0: T2-like). The preset's ``input.series`` rule keeps the b1000 images.
* ``han_2018`` (Han et al.: BraTS): one folder per case, ``BraTS20_Training_001/BraTS20_Training_001_
  {t1,t1ce,t2,flair,seg}.nii.gz``, under an ``HGG/`` or ``LGG/`` parent folder (as BraTS 2015-2019
  ship them; Han et al. used the HGG cases). The four sequences are co-registered and skull-stripped,
  each with its own tissue contrast, and carry a synthetic glioma: necrotic core (label 1), edema
  (label 2) and an enhancing rim (label 4, bright on t1ce only), in BraTS 2020's label convention.
  Volumes are on the template's grid (1 mm x the resolution factor) rather than BraTS's
  240 x 240 x 155 at 1 mm: the preset's geometry is on the registration grid, so it scales.
* ``ballesteros_ramirez_2025`` (IXI + SALD): ``IXI/IXI-T1/IXI012-HH-1211-T1.nii.gz`` from the three
  IXI sites, each with its own scanner appearance (Guys: Philips Gyroscan Intera 1.5 T, high
  contrast; HH: Philips Intera 3 T, brighter; IOP: GE 1.5 T, blurred), in the paper's proportions
  (322 : 185 : 74), plus a SALD-like BIDS dataset (``SALD/sub-031274/anat/sub-031274_T1w.nii.gz``,
  ``participants.tsv``, ``dataset_description.json``, a ``T1w.json`` sidecar: Siemens TrioTim 3 T),
  and ``samples.tsv`` joining both with the paper's four scanner labels (the preset's source; one
  layout cannot read two datasets, a sample sheet can: :func:`ixi_sald_sheet` writes it for the
  real downloads).
* ``kazuhiro_2018`` (Kazuhiro et al.: T1 of healthy volunteers and stroke patients, one 3 T GE
  scanner): heads with skull as NIfTI files plus ``samples.tsv`` with ``group`` (healthy / cva); a
  patient gets a T1-hypointense chronic infarct near the basal ganglia.

Everything is deterministic: the same arguments give byte-identical files (gzip mtime 0, UIDs from
seeds). Random streams are per subject, so subject i does not depend on how many are written. The
stand-ins support no claim about model quality: they exercise each preset's code path.

Command line: ``python -m pipeline_lib.cohorts.standin <study> <out_dir> [--subjects N]``; it
prints the path to give as ``input.source``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
from scipy import ndimage

from pipeline_lib.core import io
from pipeline_lib.core.errors import InputError
from pipeline_lib.cohorts.demo_cohort import (ScannerProfile, bias_field, deformation_coordinates, fake_identity,
                                             head_phantom, load_mni_template_image, make_readable, rician,
                                             write_nifti)
from pipeline_lib.imaging.dicom import write_dicom_series
from pipeline_lib.imaging.pseudonym import STANDIN_MARKER

__all__ = ["STUDIES", "SOURCE", "DEFAULT_SUBJECTS", "make_standin", "ixi_sald_sheet", "main"]

STUDIES = ("ungria_hirte_2020", "han_2018", "ballesteros_ramirez_2025", "kazuhiro_2018")
#: What to give as ``input.source``, relative to the stand-in's folder.
SOURCE = {"ungria_hirte_2020": "export", "han_2018": "BraTS", "ballesteros_ramirez_2025": "samples.tsv",
          "kazuhiro_2018": "samples.tsv"}
DEFAULT_SUBJECTS = {"ungria_hirte_2020": 8, "han_2018": 10, "ballesteros_ramirez_2025": 12, "kazuhiro_2018": 8}
_ANATOMY, _SCANNER, _LESION = 11, 12, 13
_SCALE = 1000.0


# ------------------------------------------------------------------ tissue contrasts


def _tissues(brain: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft CSF, grey- and white-matter memberships of the T1 template (brain-only, [0, 1])."""
    inside = brain > 0.05
    wm = np.clip((brain - 0.55) / 0.2, 0.0, 1.0)
    csf = np.clip((0.4 - brain) / 0.2, 0.0, 1.0) * inside
    gm = np.clip(1.0 - wm - csf, 0.0, 1.0) * inside
    return csf.astype(np.float32), gm.astype(np.float32), wm.astype(np.float32)


#: (CSF, grey matter, white matter) signal of each contrast, white matter of T1 ~ 0.9.
CONTRASTS = {
    "t1": (0.12, 0.5, 0.9),
    "t1ce": (0.15, 0.52, 0.85),
    "t2": (1.0, 0.6, 0.38),
    "flair": (0.08, 0.7, 0.5),
    "b0": (1.0, 0.55, 0.42),
    "b1000": (0.08, 0.62, 0.5),
}
#: Tumour compartments per contrast: (necrotic core, enhancing rim, edema factor on the tissue).
TUMOUR = {"t1": (0.2, 0.45, 0.8), "t1ce": (0.22, 1.25, 0.85), "t2": (0.95, 0.7, 1.6), "flair": (0.45, 0.8, 1.9)}


def _contrast(tissues, name: str) -> np.ndarray:
    csf, gm, wm = tissues
    c, g, w = CONTRASTS[name]
    return (c * csf + g * gm + w * wm).astype(np.float32)


def _warp(volume: np.ndarray, coords: np.ndarray, order: int = 1) -> np.ndarray:
    return ndimage.map_coordinates(volume, coords, order=order, mode="constant", cval=0.0).reshape(volume.shape)


def _scanner(name: str, manufacturer: str, model: str, tesla: float, description: str, gamma: float, blur: float,
             noise: float, gain: float) -> ScannerProfile:
    return ScannerProfile(name, manufacturer, model, tesla, description, gamma, blur, noise, gain)


def _render(signal: np.ndarray, scanner: ScannerProfile, rng: np.random.Generator, voxel_mm: float,
            bias: np.ndarray | None = None) -> np.ndarray:
    """A scanner's view of a signal: bias field, contrast curve, blur, Rician noise, gain."""
    if bias is not None:
        signal = signal * bias
    signal = np.clip(signal, 0.0, None) ** scanner.gamma
    if scanner.blur_mm > 0:
        signal = ndimage.gaussian_filter(signal, sigma=scanner.blur_mm / voxel_mm, mode="constant")
    return (rician(signal, scanner.noise, rng) * scanner.gain).astype(np.float32)


class _Anatomy:
    """The template brain and head on one grid, read once per cohort."""

    def __init__(self, resolution_mm: int):
        brain = load_mni_template_image(resolution_mm)
        head = head_phantom(brain)
        self.voxel_mm = float(resolution_mm)
        self.affine = head.affine
        self.head = np.asarray(head.dataobj, dtype=np.float32)
        pad = (self.head.shape[0] - brain.shape[0]) // 2
        self.brain = np.pad(np.asarray(brain.dataobj, dtype=np.float32), pad)
        self.tissues = _tissues(self.brain)
        self.brain_mask = self.brain > 0.05
        # distance inside the brain (mm), to place lesions away from its surface
        self.depth = ndimage.distance_transform_edt(self.brain_mask, sampling=self.voxel_mm)

    def head_with(self, brain_signal: np.ndarray, shells: float = 1.0) -> np.ndarray:
        """``brain_signal`` inside the brain and the phantom's skull and scalp (scaled) outside."""
        outside = np.where(self.brain_mask, 0.0, self.head) * shells
        return np.where(self.brain_mask, brain_signal, outside).astype(np.float32)

    def deformation(self, rng: np.random.Generator) -> np.ndarray:
        return deformation_coordinates(self.head.shape, rng, self.voxel_mm)

    def lesion_centre(self, rng: np.random.Generator, min_depth_mm: float, near_mm=None) -> np.ndarray:
        """A voxel at least ``min_depth_mm`` inside the brain (near a world point when given)."""
        candidates = np.argwhere(self.depth >= min_depth_mm)
        if near_mm is not None:
            world = nib.affines.apply_affine(self.affine, candidates)
            distance = np.linalg.norm(world - np.asarray(near_mm), axis=1)
            candidates = candidates[distance <= np.percentile(distance, 2)]
        return candidates[int(rng.integers(len(candidates)))].astype(np.float64)

    def distance_mm(self, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Distance (mm) from ``centre`` under a random ellipsoidal stretch and a smooth wobble,
        so shells at several radii of it nest (core, rim, edema) with an irregular outline."""
        grid = np.indices(self.head.shape, dtype=np.float32)
        stretch = rng.uniform(0.8, 1.25, size=3)
        r = np.sqrt(sum(((grid[i] - centre[i]) * self.voxel_mm / stretch[i]) ** 2 for i in range(3)))
        wobble = ndimage.gaussian_filter(rng.normal(0.0, 1.0, self.head.shape).astype(np.float32), 6.0 / self.voxel_mm)
        return r + wobble * (2.0 / (wobble.std() + 1e-6))

    def inside(self, distance_mm: np.ndarray, radius_mm: float) -> np.ndarray:
        """Soft membership (0..1) of the ball ``distance_mm < radius_mm``, one voxel wide edge."""
        return np.clip((radius_mm - distance_mm) / self.voxel_mm + 0.5, 0.0, 1.0).astype(np.float32)

    def blob(self, centre: np.ndarray, radius_mm: float, rng: np.random.Generator) -> np.ndarray:
        return self.inside(self.distance_mm(centre, rng), radius_mm)


# ------------------------------------------------------------------ the four studies


def _han(build: Path, n: int, seed: int, anatomy: _Anatomy) -> list[dict]:
    """BraTS-like cases: four co-registered skull-stripped sequences with a glioma, and its segmentation."""
    scanner = _scanner("brats", "", "", 3.0, "", 1.0, 0.6, 0.02, 1.0)
    rows = []
    for index in range(n):
        rng = np.random.default_rng([seed, index, _ANATOMY])
        lesion_rng = np.random.default_rng([seed, index, _LESION])
        noise_rng = np.random.default_rng([seed, index, _SCANNER])
        coords = anatomy.deformation(rng)
        bias = bias_field(anatomy.head.shape, rng)
        centre = anatomy.lesion_centre(lesion_rng, 18.0)
        core_radius = float(lesion_rng.uniform(5.0, 10.0))
        rim_mm = max(3.0, 1.5 * anatomy.voxel_mm)
        distance = anatomy.distance_mm(centre, lesion_rng)
        core = anatomy.inside(distance, core_radius)
        tumour = anatomy.inside(distance, core_radius + rim_mm)  # core + enhancing rim
        edema = (anatomy.inside(distance, core_radius + rim_mm + float(lesion_rng.uniform(8.0, 14.0))) - tumour)
        edema = np.clip(edema, 0.0, 1.0) * anatomy.brain_mask
        rim = np.clip(tumour - core, 0.0, 1.0)
        seg = np.zeros(anatomy.head.shape, dtype=np.float32)
        seg[edema > 0.5] = 2
        seg[rim > 0.5] = 4
        seg[core > 0.5] = 1
        grade = "LGG" if index % 5 == 4 else "HGG"  # Han et al.'s BraTS 2016: 220 HGG, 54 LGG
        case = f"BraTS20_Training_{index + 1:03d}"
        folder = build / "BraTS" / grade / case
        folder.mkdir(parents=True)
        mask = _warp(anatomy.brain_mask.astype(np.float32), coords) > 0.5
        for name in ("t1", "t1ce", "t2", "flair"):
            tissue = _contrast(anatomy.tissues, name)
            core_value, rim_value, edema_factor = TUMOUR[name]
            if grade == "LGG":
                rim_value = core_value + 0.3 * (rim_value - core_value)  # little enhancement
            signal = tissue * (1 - edema) + tissue * edema_factor * edema
            signal = signal * (1 - tumour) + (core * core_value + rim * rim_value)
            volume = _render(_warp(signal, coords), scanner, noise_rng, anatomy.voxel_mm, bias) * mask
            image = nib.Nifti1Image(np.rint(volume * _SCALE).astype(np.int16), anatomy.affine)
            write_nifti(image, folder / f"{case}_{name}.nii.gz")
        warped_seg = _warp(seg, coords, order=0) * mask
        write_nifti(nib.Nifti1Image(warped_seg.astype(np.uint8), anatomy.affine), folder / f"{case}_seg.nii.gz")
        rows.append({"subject": case, "path": f"BraTS/{grade}/{case}", "grade": grade})
    return rows


#: IXI sites: (site, paper's scanner label, profile); the paper's counts 322 / 185 / 74.
IXI_SITES = (
    ("Guys", "Gyroscan Intera", _scanner("Guys", "Philips", "Gyroscan Intera", 1.5, "T1", 1.35, 0.8, 0.03, 900.0)),
    ("HH", "Intera", _scanner("HH", "Philips", "Intera", 3.0, "T1", 0.8, 0.5, 0.025, 1400.0)),
    ("IOP", "Unspecified", _scanner("IOP", "GE", "", 1.5, "T1", 1.0, 1.8, 0.05, 1100.0)),
)
IXI_SHARES = (322, 185, 74)
SALD_SCANNER = ("Magnetom TrioTim", _scanner("SALD", "Siemens", "TrioTim", 3.0, "T1w", 1.1, 0.6, 0.03, 600.0))
#: Paper labels of each IXI site (Ballesteros Ramirez, Table 1).
IXI_SCANNER_LABELS = {site: label for site, label, _ in IXI_SITES}


def _subject_head(anatomy: _Anatomy, seed: int, index: int, scanner: ScannerProfile, lesion: bool = False,
                  contrast: str = "t1", shells: float = 1.0) -> np.ndarray:
    """One head with skull under a random deformation, seen by ``scanner``."""
    rng = np.random.default_rng([seed, index, _ANATOMY])
    noise_rng = np.random.default_rng([seed, index, _SCANNER])
    coords = anatomy.deformation(rng)
    bias = bias_field(anatomy.head.shape, rng)
    signal = _contrast(anatomy.tissues, contrast)
    if lesion:  # chronic infarct near the left basal ganglia: T1-hypointense
        lesion_rng = np.random.default_rng([seed, index, _LESION])
        centre = anatomy.lesion_centre(lesion_rng, 12.0, near_mm=(-22.0, 2.0, 4.0))
        blob = anatomy.blob(centre, float(lesion_rng.uniform(4.0, 8.0)), lesion_rng)
        signal = signal * (1 - blob) + 0.15 * blob
    head = anatomy.head_with(signal, shells)
    return _render(_warp(head, coords), scanner, noise_rng, anatomy.voxel_mm, bias)


def _site_order(n: int) -> list[int]:
    """Site index per IXI subject, in the paper's proportions (every site at least once when n >= 3)."""
    order = list(range(min(n, 3)))
    total = sum(IXI_SHARES)
    while len(order) < n:
        counts = [order.count(i) for i in range(3)]
        deficit = [IXI_SHARES[i] / total * (len(order) + 1) - counts[i] for i in range(3)]
        order.append(int(np.argmax(deficit)))
    return order


def _ballesteros(build: Path, n: int, seed: int, anatomy: _Anatomy) -> list[dict]:
    """IXI T1 from three sites and a SALD-like BIDS set; a sample sheet joins them."""
    n_sald = max(1, round(n * 494 / 1075))
    n_ixi = max(1, n - n_sald)
    rows = []
    for index, site_index in enumerate(_site_order(n_ixi)):
        site, label, scanner = IXI_SITES[site_index]
        key = f"IXI{index + 2:03d}"
        name = f"{key}-{site}-{1000 + 37 * index:04d}-T1.nii.gz"
        volume = _subject_head(anatomy, seed, index, scanner)
        path = build / "IXI" / "IXI-T1" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_nifti(nib.Nifti1Image(np.rint(volume).astype(np.int16), anatomy.affine), path)
        rows.append({"subject": key, "path": f"IXI/IXI-T1/{name}", "scanner": label, "dataset": "IXI"})
    sald = build / "SALD"
    sald.mkdir()
    (sald / "dataset_description.json").write_text(json.dumps(
        {"Name": "SALD stand-in (synthetic)", "BIDSVersion": "1.8.0"}, indent=2) + "\n")
    label, scanner = SALD_SCANNER
    (sald / "T1w.json").write_text(json.dumps({"Manufacturer": "Siemens", "ManufacturersModelName": "TrioTim",
                                               "MagneticFieldStrength": 3}, indent=2) + "\n")
    participants = []
    for j in range(n_sald):
        index = n_ixi + j
        sub = f"sub-{31274 + j:06d}"
        rng = np.random.default_rng([seed, index, _LESION])
        participants.append((sub, "F" if rng.random() < 0.6 else "M", int(rng.integers(19, 80))))
        volume = _subject_head(anatomy, seed, index, scanner)
        path = sald / sub / "anat" / f"{sub}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        write_nifti(nib.Nifti1Image(np.rint(volume).astype(np.int16), anatomy.affine), path)
        rows.append({"subject": sub, "path": f"SALD/{sub}/anat/{sub}_T1w.nii.gz", "scanner": label, "dataset": "SALD"})
    io.write_tsv(sald / "participants.tsv", pd.DataFrame(participants, columns=["participant_id", "sex", "age"]))
    io.write_tsv(build / "samples.tsv", pd.DataFrame(rows, columns=["subject", "path", "scanner", "dataset"]))
    return rows


def _kazuhiro(build: Path, n: int, seed: int, anatomy: _Anatomy) -> list[dict]:
    """T1 heads with skull from one 3 T GE scanner; about half are patients with a chronic infarct."""
    scanner = _scanner("GE", "GE MEDICAL SYSTEMS", "Signa Excite HD", 3.0, "SAG 3D FSPGR", 1.0, 0.6, 0.03, 1200.0)
    rows = []
    for index in range(n):
        group = "cva" if index % 2 else "healthy"  # the paper: 30 volunteers, 33 patients (about half)
        volume = _subject_head(anatomy, seed, index, scanner, lesion=group == "cva")
        name = f"t1w-{index + 1:03d}.nii.gz"
        write_nifti(nib.Nifti1Image(np.rint(volume).astype(np.int16), anatomy.affine), build / name)
        rows.append({"subject": f"t1w-{index + 1:03d}", "path": name, "group": group})
    io.write_tsv(build / "samples.tsv", pd.DataFrame(rows, columns=["subject", "path", "group"]))
    return rows


#: Two scanner types of a hospital PACS (DWI, trace images of b0 and b1000 in one series).
DWI_SCANNERS = (
    _scanner("dwi-a", "GE MEDICAL SYSTEMS", "Signa HDxt", 1.5, "DWI ASSET", 1.0, 1.2, 0.04, 800.0),
    _scanner("dwi-b", "GE MEDICAL SYSTEMS", "DISCOVERY MR750", 3.0, "Ax DWI", 0.9, 0.9, 0.03, 1200.0),
)
DWI_SLICE_STEP = 2  # every other slice of the phantom grid: 2 x the voxel size thick, as DWI slices are


def _ungria(build: Path, n: int, seed: int, anatomy: _Anatomy) -> list[dict]:
    """A PACS export: per patient a study folder with a localizer and one DWI series (b0 + b1000)."""
    rows = []
    affine = anatomy.affine @ np.diag([1.0, 1.0, float(DWI_SLICE_STEP), 1.0])
    for index in range(n):
        scanner = DWI_SCANNERS[index % len(DWI_SCANNERS)]
        phi = fake_identity(seed, index)
        study = build / "export" / f"{phi['patient_name'].replace('^', '_')}_{phi['birth_date']}"
        common = dict(patient_name=phi["patient_name"], patient_id=phi["patient_id"], birth_date=phi["birth_date"],
                      manufacturer=scanner.manufacturer, model_name=scanner.model_name,
                      field_strength=scanner.field_strength, institution_name=phi["institution_name"])
        # DWI: fat-suppressed EPI, so skull and scalp are dim; b0 and b1000 share the geometry
        b0 = _subject_head(anatomy, seed, index, replace(scanner, gain=scanner.gain * 3), contrast="b0",
                           shells=0.35)[:, :, ::DWI_SLICE_STEP]
        b1000 = _subject_head(anatomy, seed, index, scanner, contrast="b1000", shells=0.15)[:, :, ::DWI_SLICE_STEP]
        centre = b0.shape[2] // 2
        write_dicom_series(b0[:, :, centre - 1:centre + 2], affine @ _shift_z(centre - 1), study / "1",
                           series_description="3-Plane Loc", series_number=1,
                           uid_seed=f"standin/{seed}/{index}/loc", **common)
        series = study / "5"
        parts = []
        for b_value, volume in ((0, b0), (1000, b1000)):
            part = build / f".dwi-b{b_value}"
            write_dicom_series(volume, affine, part, series_description=scanner.series_description,
                               series_number=5, uid_seed=f"standin/{seed}/{index}/dwi", **common)
            parts.append((b_value, part))
        series.mkdir(parents=True)
        study_uid = pydicom.dcmread(next((study / "1").glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID
        instance = 1
        for b_value, part in parts:
            for path in sorted(part.glob("*.dcm")):
                ds = pydicom.dcmread(path)
                ds.DiffusionBValue = float(b_value)
                ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW" if b_value else "NONE"]
                ds.InstanceNumber = str(instance)
                ds.StudyInstanceUID = study_uid
                ds.ScanningSequence = "EP"
                ds.SequenceVariant = "SK"
                ds.MRAcquisitionType = "2D"
                ds.save_as(series / f"IM-{instance:04d}.dcm", enforce_file_format=True)
                instance += 1
            shutil.rmtree(part)
        rows.append({"subject": study.name, "path": f"export/{study.name}", "scanner": scanner.model_name})
    return rows


def _shift_z(k: int) -> np.ndarray:
    shift = np.eye(4)
    shift[2, 3] = float(k)
    return shift


_BUILDERS = {"ungria_hirte_2020": _ungria, "han_2018": _han, "ballesteros_ramirez_2025": _ballesteros,
             "kazuhiro_2018": _kazuhiro}


def make_standin(study: str, out_dir: Path, n_subjects: int | None = None, seed: int = 0,
                 resolution_mm: int = 2) -> Path:
    """Write ``study``'s stand-in cohort into ``out_dir``; return the path to give as ``input.source``.

    Built in a temporary sibling folder and moved into place, so ``out_dir`` is complete or
    untouched; only an earlier stand-in (a folder holding ``standin.json``) is replaced.
    """
    if study not in STUDIES:
        raise InputError(f"unknown study {study!r}; one of {', '.join(STUDIES)}")
    n = DEFAULT_SUBJECTS[study] if n_subjects is None else int(n_subjects)
    if not 2 <= n <= 999:
        raise InputError(f"subjects must be between 2 and 999, got {n}")
    if resolution_mm not in (1, 2, 3, 4):
        raise InputError(f"resolution_mm must be 1, 2, 3 or 4, got {resolution_mm}")
    out_dir = Path(out_dir)
    anatomy = _Anatomy(resolution_mm)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building.", dir=out_dir.parent))
    build.chmod(0o755)
    try:
        rows = _BUILDERS[study](build, n, seed, anatomy)
        io.write_json(build / STANDIN_MARKER, {
            "study": study, "subjects": len(rows), "seed": seed, "resolution_mm": resolution_mm,
            "source": SOURCE[study], "note": "Synthetic stand-in cohort (pipeline_lib.cohorts.standin); "
            "it exercises the preset's code path and supports no claim about model quality."})
        make_readable(build)

        def earlier(folder: Path) -> str | None:
            entries = list(folder.iterdir()) if folder.is_dir() else None
            if entries is None or (entries and not (folder / STANDIN_MARKER).is_file()):
                return "exists and is not an earlier stand-in cohort"
            return None

        io.replace_directory(build, out_dir, ours=earlier)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return out_dir / SOURCE[study]


# ------------------------------------------------------------------ real data: IXI + SALD sheet

_IXI_NAME = re.compile(r"^(IXI\d+)-(Guys|HH|IOP)-\d+-T1\.nii(\.gz)?$")
_SALD_NAME = re.compile(r"^(sub-[A-Za-z0-9]+)(?:_ses-[A-Za-z0-9]+)?_T1w\.nii(\.gz)?$")


def ixi_sald_sheet(ixi: Path, sald: Path, out: Path) -> pd.DataFrame:
    """The sample sheet of Ballesteros Ramirez's cohort from the real downloads: every IXI T1
    (``IXI<id>-<site>-<n>-T1.nii.gz`` below ``ixi``) and every SALD T1w (BIDS, below ``sald``),
    with the paper's scanner labels (Guys: Gyroscan Intera, HH: Intera, IOP: Unspecified, SALD:
    Magnetom TrioTim). Paths are written relative to the sheet when they lie below its folder."""
    out = Path(out)
    rows = []
    for path in sorted(Path(ixi).rglob("IXI*-T1.nii*")):
        match = _IXI_NAME.match(path.name)
        if match:
            rows.append((match.group(1), path, IXI_SCANNER_LABELS[match.group(2)], "IXI"))
    for path in sorted(Path(sald).rglob("sub-*_T1w.nii*")):
        match = _SALD_NAME.match(path.name)
        if match and "derivatives" not in path.parts:
            rows.append((match.group(1), path, SALD_SCANNER[0], "SALD"))
    if not rows:
        raise InputError("no IXI T1 or SALD T1w files found")

    def relative(path: Path) -> str:
        try:
            return str(path.resolve().relative_to(out.parent.resolve()))
        except ValueError:
            return str(path.resolve())

    table = pd.DataFrame([(key, relative(p), scanner, dataset) for key, p, scanner, dataset in rows],
                         columns=["subject", "path", "scanner", "dataset"])
    io.write_tsv(out, table)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline_lib.cohorts.standin", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    for study in STUDIES:
        one = sub.add_parser(study, help=f"write the {study} stand-in cohort")
        one.add_argument("out_dir", type=Path)
        one.add_argument("--subjects", type=int, default=None, help=f"default {DEFAULT_SUBJECTS[study]}")
        one.add_argument("--seed", type=int, default=0)
        one.add_argument("--resolution-mm", type=int, default=2, choices=(1, 2, 3, 4))
    sheet = sub.add_parser("ixi-sald-sheet", help="sample sheet of real IXI + SALD downloads (Ballesteros Ramirez)")
    sheet.add_argument("ixi", type=Path)
    sheet.add_argument("sald", type=Path)
    sheet.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "ixi-sald-sheet":
        table = ixi_sald_sheet(args.ixi, args.sald, args.out)
        print(f"{len(table)} subjects -> {args.out}")
        return 0
    source = make_standin(args.command, args.out_dir, args.subjects, args.seed, args.resolution_mm)
    print(source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
