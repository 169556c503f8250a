"""Which 2-D slices a volume gives, in which orientation, at which size.

The four papers cut their slices differently:

* Ungría Hirte et al.: axial, drop the 8 lowest and 6 highest of 40 registered slices
  (``selection: {mode: drop, low: 8, high: 6}``);
* Han et al.: sagittal slices #80-#149 of the 240 in BraTS space
  (``{mode: range, first: 80, last: 149}``, indices on the registered grid, 0-based as the
  paper's "#80" is read here; the paper does not say whether it counts from 0 or 1);
* Ballesteros Ramirez: the 10 central axial slices of 182x218x182 volumes, 218x182 pixels
  (``{mode: central, n: 10}``, ``size: [218, 182]``);
* Kazuhiro et al.: axial sections at -4, -2, 0, +2, +4 mm from a central transaxial level
  (``{mode: offsets_mm, level_mm: <template coordinate>, offsets_mm: [-4, -2, 0, 2, 4]}``),
  interpolated linearly between the grid's slices.

Display orientation (radiological convention, as a PACS viewer shows the images):

* axial: rows run anterior (top) to posterior, columns from the patient's right (image
  left) to the patient's left;
* coronal: rows run superior (top) to inferior, columns right (image left) to left;
* sagittal: rows run superior (top) to inferior, columns anterior (image left) to posterior.

Slices are returned in ascending world coordinate along the slicing axis (inferior first for
axial, posterior first for coronal, the patient's left first for sagittal), each with its
world position in mm, so a slice index always means one anatomical level on a registered grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline_lib.core.errors import InputError

AXES = ("axial", "coronal", "sagittal")
#: RAS voxel axis that each slicing axis steps along.
AXIS_INDEX = {"sagittal": 0, "coronal": 1, "axial": 2}
SELECTION_MODES = ("all", "drop", "range", "central", "offsets_mm")
FIT_POLICIES = ("resize", "pad", "crop")


@dataclass(frozen=True)
class SliceSelection:
    """Which slices along the axis: all of them, drop ``low``/``high`` at the ends, the index range
    [``first``, ``last``], the ``n`` central ones, or ``offsets_mm`` around ``level_mm``."""

    mode: str = "all"
    low: int = 0
    high: int = 0
    first: int | None = None
    last: int | None = None
    n: int | None = None
    level_mm: float | None = None
    offsets_mm: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in SELECTION_MODES:
            raise InputError(f"selection.mode must be one of {', '.join(SELECTION_MODES)}, not {self.mode!r}")
        object.__setattr__(self, "offsets_mm", tuple(float(v) for v in self.offsets_mm))
        if self.mode == "drop" and (self.low < 0 or self.high < 0):
            raise InputError(f"selection drop: low {self.low} / high {self.high} must not be negative")
        if self.mode == "range" and (self.first is None or self.last is None or not 0 <= self.first <= self.last):
            raise InputError(f"selection range needs 0 <= first <= last, got first={self.first}, last={self.last}")
        if self.mode == "central" and (self.n is None or self.n < 1):
            raise InputError(f"selection central needs n >= 1, got {self.n}")
        if self.mode == "offsets_mm" and (self.level_mm is None or not self.offsets_mm):
            raise InputError("selection offsets_mm needs level_mm (a template coordinate in mm) and offsets_mm")


def ras_to_display(volume: np.ndarray, axis: str) -> np.ndarray:
    """(n, H, W) slices of a RAS-ordered volume along ``axis`` in the module's display orientation,
    slice order ascending along the axis."""
    if axis not in AXES:
        raise InputError(f"axis must be one of {', '.join(AXES)}, not {axis!r}")
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise InputError(f"expected a 3-D volume, got shape {volume.shape}")
    # RAS+: x grows to the patient's right, y anteriorly, z superiorly. Radiological display puts
    # the patient's right on the image's left (large x first), anterior and superior on top.
    if axis == "axial":        # (z, y, x): rows anterior first, columns right first
        out = np.transpose(volume, (2, 1, 0))[:, ::-1, ::-1]
    elif axis == "coronal":    # (y, z, x): rows superior first, columns right first
        out = np.transpose(volume, (1, 2, 0))[:, ::-1, ::-1]
    else:                      # sagittal (x, z, y): rows superior first, columns anterior first
        out = np.transpose(volume, (0, 2, 1))[:, ::-1, ::-1]
    return np.ascontiguousarray(out)


def select_slices(volume: np.ndarray, affine: np.ndarray, axis: str, selection: SliceSelection
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The selected slices of a RAS volume (voxel axes x, y, z = R, A, S; ``affine`` voxel -> mm).

    Returns ``(slices, index, position_mm)``: (n, H, W) float32 in display orientation, the
    (fractional, for ``offsets_mm``) slice index on the volume's grid and the world coordinate in mm
    along the axis of each slice.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise InputError(f"expected a 3-D volume, got shape {volume.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if axis not in AXIS_INDEX:
        raise InputError(f"axis must be one of {', '.join(AXES)}, not {axis!r}")
    k = AXIS_INDEX[axis]
    column = affine[:3, k]
    if not (column[k] > 0 and np.allclose(np.delete(column, k), 0, atol=1e-3 * abs(column[k]))):
        raise InputError(f"the volume's voxel axis {k} does not run along the world {'RAS'[k]} axis "
                         f"(affine column {np.round(column, 4).tolist()}); reorient to RAS first")
    depth = volume.shape[k]
    spacing, origin = float(column[k]), float(affine[k, 3])
    indices = _indices(selection, depth, spacing, origin, axis)
    display = ras_to_display(volume, axis)
    slices = _interpolate(display, indices)
    return slices, indices, origin + spacing * indices


def _indices(selection: SliceSelection, depth: int, spacing: float, origin: float, axis: str) -> np.ndarray:
    mode = selection.mode
    if mode == "all":
        return np.arange(depth, dtype=np.float64)
    if mode == "drop":
        if selection.low + selection.high >= depth:
            raise InputError(f"dropping {selection.low} low and {selection.high} high slices leaves none "
                             f"of the {depth} {axis} slices")
        return np.arange(selection.low, depth - selection.high, dtype=np.float64)
    if mode == "range":
        if selection.last >= depth:
            raise InputError(f"slice range {selection.first}-{selection.last} exceeds the {depth} {axis} "
                             f"slices of the grid")
        return np.arange(selection.first, selection.last + 1, dtype=np.float64)
    if mode == "central":
        if selection.n > depth:
            raise InputError(f"{selection.n} central slices asked for, the grid has {depth} {axis} slices")
        start = (depth - selection.n) // 2
        return np.arange(start, start + selection.n, dtype=np.float64)
    wanted = (selection.level_mm + np.asarray(selection.offsets_mm, dtype=np.float64) - origin) / spacing
    outside = (wanted < 0) | (wanted > depth - 1)
    if outside.any():
        bad = np.asarray(selection.offsets_mm)[outside].tolist()
        raise InputError(f"{axis} level {selection.level_mm} mm with offsets {bad} mm lies outside the grid "
                         f"({origin:.1f} to {origin + spacing * (depth - 1):.1f} mm)")
    return wanted


def _interpolate(display: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Slices at (possibly fractional) ``indices``: linear between the two neighbours."""
    low = np.floor(indices).astype(int)
    high = np.minimum(low + 1, display.shape[0] - 1)
    weight = (indices - low).astype(np.float32)[:, None, None]
    return np.ascontiguousarray((1 - weight) * display[low] + weight * display[high], dtype=np.float32)


def fit_slices(slices: np.ndarray, size: tuple[int, int], policy: str = "resize") -> np.ndarray:
    """(n, H, W) slices at ``size`` = (height, width) pixels, float32 clipped to [0, 1].

    ``resize`` scales each axis to the target (the aspect ratio changes when the shapes differ);
    ``pad`` scales by one factor so the whole slice fits, then pads with 0 (background) to the
    target, centred; ``crop`` keeps the scale and crops or pads the centre to the target. Area
    averaging when shrinking (no aliasing), bilinear when enlarging.
    """
    slices = np.asarray(slices, dtype=np.float32)
    if slices.ndim != 3:
        raise InputError(f"expected slices shaped (n, H, W), got {slices.shape}")
    height, width = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise InputError(f"slice size {size!r}: must be positive numbers of pixels")
    if policy not in FIT_POLICIES:
        raise InputError(f"fit must be one of {', '.join(FIT_POLICIES)}, not {policy!r}")
    h0, w0 = slices.shape[1:]
    if policy == "resize":
        scaled = _scale(slices, height, width)
    elif policy == "pad":
        factor = min(height / h0, width / w0)
        scaled = _scale(slices, max(1, round(h0 * factor)), max(1, round(w0 * factor)))
    else:
        scaled = slices
    return np.clip(_centre(scaled, height, width), 0.0, 1.0)


def _scale(slices: np.ndarray, height: int, width: int) -> np.ndarray:
    h0, w0 = slices.shape[1:]
    if (h0, w0) == (height, width):
        return slices
    interpolation = cv2.INTER_AREA if height * width < h0 * w0 else cv2.INTER_LINEAR
    out = np.empty((slices.shape[0], height, width), dtype=np.float32)
    for i, image in enumerate(slices):
        out[i] = cv2.resize(image, (width, height), interpolation=interpolation)
    return out


def _centre(slices: np.ndarray, height: int, width: int) -> np.ndarray:
    """Crop or zero-pad each slice around its centre to (height, width)."""
    n, h0, w0 = slices.shape
    out = np.zeros((n, height, width), dtype=np.float32)
    sy, sx = max(0, (h0 - height) // 2), max(0, (w0 - width) // 2)
    dy, dx = max(0, (height - h0) // 2), max(0, (width - w0) // 2)
    h, w = min(h0, height), min(w0, width)
    out[:, dy:dy + h, dx:dx + w] = slices[:, sy:sy + h, sx:sx + w]
    return out
