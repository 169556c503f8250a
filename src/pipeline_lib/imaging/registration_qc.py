"""Registration quality control: the affine's scales, shear and handedness, the brain-mask overlap
and the intensity correlation, the gate that flags a subject, and the overlay a reader checks.

Kept apart from :mod:`~pipeline_lib.imaging.registration` (which runs ANTs) so that these checks
read and test without ANTs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline_lib.core.io import atomic_path  # noqa: E402
from pipeline_lib.core.settings import RegistrationSettings  # noqa: E402


def affine_qc(template_to_subject: np.ndarray) -> dict:
    """Scale factors, shear and handedness of the subject -> template map.

    The map's 3x3 part ``A`` is factored as stretch x rotation (left polar
    decomposition, ``A = P Q`` with ``P`` symmetric): ``P``'s diagonal holds the
    scale along the template's x, y and z (below 1: the subject is shrunk, e.g.
    a head squeezed into a brain outline), its normalised off-diagonal terms
    the shear, i.e. how far the stretch leaves the axes. Rotations change
    neither. ``determinant`` < 0 means the map mirrors.
    """
    linear = np.linalg.inv(np.asarray(template_to_subject, dtype=np.float64)[:3, :3])
    u, singular, _ = np.linalg.svd(linear)
    stretch = u @ np.diag(singular) @ u.T
    scales = np.diag(stretch)
    normalised = stretch / np.sqrt(np.outer(scales, scales))
    shear = np.abs(normalised[np.triu_indices(3, k=1)])
    return {
        "scale_x": round(float(scales[0]), 6),
        "scale_y": round(float(scales[1]), 6),
        "scale_z": round(float(scales[2]), 6),
        "max_shear": round(float(shear.max()), 6),
        "determinant": round(float(np.linalg.det(linear)), 6),
    }


def gate(qc: Mapping, cfg: RegistrationSettings) -> list[str]:
    """The failed QC checks of one subject, each with its number and bound ([] = passed)."""
    reasons = []
    if qc["mask_dice"] < cfg.min_mask_dice:
        reasons.append(f"brain mask overlap {qc['mask_dice']:.2f} < {cfg.min_mask_dice:.2f}")
    low, high = cfg.scale_range
    scales = [qc["scale_x"], qc["scale_y"], qc["scale_z"]]
    if not all(low <= s <= high for s in scales):
        reasons.append(f"scales {'/'.join(f'{s:.2f}' for s in scales)} outside {low:g}–{high:g}")
    if qc["max_shear"] > cfg.max_shear:
        reasons.append(f"shear {qc['max_shear']:.2f} > {cfg.max_shear:g}")
    if qc["determinant"] <= 0:
        reasons.append("the affine mirrors the volume (negative determinant)")
    if qc["correlation_after"] < cfg.min_correlation:
        reasons.append(f"correlation in the brain mask {qc['correlation_after']:.2f} < {cfg.min_correlation:g}")
    return reasons


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean arrays (0 when both are empty)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return round(2.0 * int(np.logical_and(a, b).sum()) / total, 6) if total else 0.0


def masked_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of ``a`` and ``b`` over ``mask``; 0 when either is constant there."""
    x = a[mask].astype(np.float64)
    y = b[mask].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0

def _overlay_title(subject: str, qc: Mapping, reasons: list[str]) -> str:
    line = (f"{subject}  {qc['transform']}  Dice {qc['mask_dice']:.2f}  r = {qc['correlation_after']:.2f}  "
            f"scales {qc['scale_x']:.2f}/{qc['scale_y']:.2f}/{qc['scale_z']:.2f}")
    return line + ("\nFLAGGED: " + "; ".join(reasons) if reasons else "")


def save_overlay(path: Path, registered: Any, target: Any, brain_mask: np.ndarray, title: str) -> None:
    """Three orthogonal mid-slices of ``registered`` (an ANTs image on ``target``'s grid, a
    registration.Target) in grey, the subject's brain mask in yellow
    and the template's brain mask in red.

    Views are shown in radiological convention (patient right on the image
    left), anterior / superior up, with the grid's voxel aspect ratio.
    """
    moving = registered.numpy()
    sx, sy, sz = target.reference.spacing
    nx, ny, nz = moving.shape
    # arrays are RAS: axis 0 left->right, 1 posterior->anterior, 2 inferior->superior
    # (name, cut, pixel height / width): rows run anterior->posterior or superior->inferior
    views = [
        ("axial", lambda v: v[::-1, ::-1, nz // 2].T, sy / sx),
        ("coronal", lambda v: v[::-1, ny // 2, ::-1].T, sz / sx),
        ("sagittal", lambda v: v[nx // 2, ::-1, ::-1].T, sz / sy),
    ]
    vmax = float(np.percentile(moving[moving > 0], 99)) if np.any(moving > 0) else 1.0
    masks = [(brain_mask.astype(np.float32), "#ffd000"), (target.reference_mask.astype(np.float32), "#ff3030")]
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 3.1), dpi=80)
    for ax, (name, cut, aspect) in zip(axes, views):
        ax.imshow(cut(moving), cmap="gray", vmin=0, vmax=vmax, aspect=aspect, interpolation="nearest")
        for mask, colour in masks:
            if cut(mask).max() > 0:
                ax.contour(cut(mask), levels=[0.5], colors=[colour], linewidths=0.8)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title + "\nyellow: subject's brain mask, red: template's", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
