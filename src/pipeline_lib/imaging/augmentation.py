"""Offline 3-D augmentation before slicing (Kazuhiro et al.).

Kazuhiro et al. rotated each AC-PC-aligned T1 volume "in the right/left direction with angles
from -10 to 10°, up/right direction with angles from -10 to 10° and cephalad/caudal direction
with angles from -5 to 5° with step size of 1°", took 5 transaxial sections at -4, -2, 0, 2, 4 mm
from the central section, and flipped each left-right: 21 x 21 x 11 x 5 x 2 = 48,510 images per
volume. The paper's axis names are read here as rotations about the left-right (x), the
anterior-posterior (y) and the superior-inferior (z) axis, in that order (it does not define them
further); the centre of rotation is the centre of the central section.

Instead of all 48,510 combinations, ``count`` are sampled per volume without replacement, from a
random stream seeded by ``seed`` and the subject's pseudonym, so a subject's images do not depend
on which other subjects are in the cohort. Each image is sampled directly on its rotated plane
(trilinear interpolation of the volume at the plane's points), so the cost is one 2-D image per
combination, not one 3-D resampling.

Augmented images belong to the training split only: the caller never augments a test subject,
so no augmented image reaches the test split or the real reference sets.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipeline_lib.core.errors import InputError
from pipeline_lib.imaging.slice_geometry import AXIS_INDEX, ras_to_display


@dataclass(frozen=True)
class VolumeAugmentation:
    """``count`` sampled (rotation, section, flip) combinations per training volume (0 = off)."""

    count: int = 0
    max_rotation_deg: tuple[float, float, float] = (10.0, 10.0, 5.0)
    step_deg: float = 1.0
    offsets_mm: tuple[float, ...] = (-4.0, -2.0, 0.0, 2.0, 4.0)
    flip: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_rotation_deg", tuple(float(v) for v in self.max_rotation_deg))
        object.__setattr__(self, "offsets_mm", tuple(float(v) for v in self.offsets_mm))
        if self.count < 0:
            raise InputError(f"augmentation.count must be 0 or more, got {self.count}")
        if len(self.max_rotation_deg) != 3 or min(self.max_rotation_deg) < 0:
            raise InputError("augmentation.max_rotation_deg must be three angles >= 0 (about x, y, z)")
        if self.step_deg <= 0:
            raise InputError(f"augmentation.step_deg must be positive, got {self.step_deg}")
        if not self.offsets_mm:
            raise InputError("augmentation.offsets_mm must list at least one section offset")
        if self.count > self.n_combinations:
            raise InputError(f"augmentation.count {self.count} exceeds the {self.n_combinations} combinations")

    def angles(self, axis: int) -> np.ndarray:
        limit = self.max_rotation_deg[axis]
        steps = int(round(limit / self.step_deg))
        return np.arange(-steps, steps + 1) * self.step_deg

    @property
    def n_combinations(self) -> int:
        n = 1
        for axis in range(3):
            n *= len(self.angles(axis))
        return n * len(self.offsets_mm) * (2 if self.flip else 1)


def sample_combinations(settings: VolumeAugmentation, subject: str) -> list[dict]:
    """The ``count`` combinations of one subject: angles (deg) about x, y, z, offset (mm), flip."""
    if settings.count == 0:
        return []
    digest = hashlib.sha256(f"{settings.seed}:{subject}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    shape = [len(settings.angles(a)) for a in range(3)] + [len(settings.offsets_mm), 2 if settings.flip else 1]
    chosen = np.sort(rng.choice(settings.n_combinations, size=settings.count, replace=False))
    combos = []
    for flat in chosen:
        ix, iy, iz, io, iflip = np.unravel_index(int(flat), shape)
        combos.append({"rot_x": float(settings.angles(0)[ix]), "rot_y": float(settings.angles(1)[iy]),
                       "rot_z": float(settings.angles(2)[iz]), "offset_mm": settings.offsets_mm[io],
                       "flip": bool(iflip)})
    return combos


def rotation_matrix(rot_x: float, rot_y: float, rot_z: float) -> np.ndarray:
    """R = Rz @ Ry @ Rx for angles in degrees about the world x, y, z axes."""
    ax, ay, az = np.deg2rad([rot_x, rot_y, rot_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def augmented_sections(volume: np.ndarray, affine: np.ndarray, level_mm: float, combos: list[dict],
                       axis: str = "axial") -> np.ndarray:
    """One (H, W) image per combination, in the display orientation of ``axis``.

    The volume (RAS voxel order, ``affine`` voxel -> mm) is rotated by the combination's angles
    about the centre of the section at ``level_mm`` (world coordinate along ``axis``), the section
    at ``level_mm + offset_mm`` is sampled, and the image is flipped left-right when asked.
    """
    volume = np.asarray(volume, dtype=np.float32)
    affine = np.asarray(affine, dtype=np.float64)
    k = AXIS_INDEX[axis]
    shape = volume.shape
    spacing, origin = affine[k, k], affine[k, 3]
    centre_voxel = (np.array(shape, dtype=np.float64) - 1) / 2
    centre_voxel[k] = (level_mm - origin) / spacing
    centre = affine[:3, :3] @ centre_voxel + affine[:3, 3]
    inverse = np.linalg.inv(affine)
    out = []
    for combo in combos:
        index = (level_mm + combo["offset_mm"] - origin) / spacing
        if not 0 <= index <= shape[k] - 1:
            raise InputError(f"section at {level_mm + combo['offset_mm']} mm lies outside the volume")
        plane = [ras_to_display(g, axis)[0] for g in _plane_grids(shape, k, index)]
        voxels = np.stack([p.ravel() for p in plane])                       # 3 x P
        world = affine[:3, :3] @ voxels + affine[:3, 3:4]
        rotation = rotation_matrix(combo["rot_x"], combo["rot_y"], combo["rot_z"])
        source = rotation.T @ (world - centre[:, None]) + centre[:, None]   # sample the unrotated head
        source_voxels = inverse[:3, :3] @ source + inverse[:3, 3:4]
        image = ndimage.map_coordinates(volume, source_voxels, order=1, mode="constant", cval=0.0)
        image = image.reshape(plane[0].shape).astype(np.float32)
        out.append(image[:, ::-1] if combo["flip"] else image)
    return np.stack(out) if out else np.zeros((0, 0, 0), dtype=np.float32)


def _plane_grids(shape: tuple[int, int, int], k: int, index: float) -> list[np.ndarray]:
    """Voxel-coordinate grids of the section ``index`` along axis ``k``, kept 3-D (length 1 along
    ``k``) so ``ras_to_display`` lays them out like image slices."""
    ranges = [np.arange(n, dtype=np.float64) for n in shape]
    ranges[k] = np.array([index], dtype=np.float64)
    return list(np.meshgrid(*ranges, indexing="ij"))
