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

Two modes (``mode``). ``offline`` writes every augmented image into the slice dataset
(``count`` x 64 x 64 float32 per training volume: 0.8 GB per volume at the paper's 48,510).
``on_the_fly`` writes, per training volume, only the normalised slab of the volume that any
combination's plane can reach (:func:`section_slab`), and the train job draws the images from it
as batches ask for them (:class:`OnTheFlyTrainSplit`). The train split is the same sequence of
images in both modes, in the same order (each training volume's real slices, then its sampled
combinations in ascending combination number), and an image is computed by the same code
(:func:`augmented_sections`, then the dataset's fit), so the trainer's batch stream (seeded by the
run's seed, its position in the checkpoint) draws the same images in the same batches: training is
the same in both modes. Memory does not grow with ``count``: the slabs depend on the grid and the
angles only, and a combination is its number in the grid (8 bytes), decoded when drawn.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import read_json, write_json
from pipeline_lib.core.slices import SplitImages, load_table, split_rows
from pipeline_lib.imaging.slice_geometry import AXIS_INDEX, fit_slices, ras_to_display

#: ``mode``: images written into the slice dataset, or drawn from the volumes' slabs in training.
MODES = ("offline", "on_the_fly")
#: Layout of the slab index (volumes.json) this module reads and writes.
STORE_FORMAT = "pipeline_lib-augmentation-slabs/1"


@dataclass(frozen=True)
class VolumeAugmentation:
    """``count`` sampled (rotation, section, flip) combinations per training volume (0 = off)."""

    count: int = 0
    max_rotation_deg: tuple[float, float, float] = (10.0, 10.0, 5.0)
    step_deg: float = 1.0
    offsets_mm: tuple[float, ...] = (-4.0, -2.0, 0.0, 2.0, 4.0)
    flip: bool = True
    seed: int = 0
    mode: str = "offline"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"augmentation.mode must be one of {', '.join(MODES)}, not {self.mode!r}")
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


    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Axes of the combination grid: angle about x, y, z, section offset, flip."""
        return tuple(len(self.angles(a)) for a in range(3)) + (len(self.offsets_mm), 2 if self.flip else 1)


def chosen_combinations(settings: VolumeAugmentation, subject: str) -> np.ndarray:
    """The numbers (in the grid, ascending) of the ``count`` combinations of one subject."""
    if settings.count == 0:
        return np.zeros(0, dtype=np.int64)
    digest = hashlib.sha256(f"{settings.seed}:{subject}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return np.sort(rng.choice(settings.n_combinations, size=settings.count, replace=False)).astype(np.int64)


def combination(settings: VolumeAugmentation, number: int) -> dict:
    """Combination ``number`` of the grid: angles (deg) about x, y, z, offset (mm), flip."""
    ix, iy, iz, io, iflip = np.unravel_index(int(number), settings.grid_shape)
    return {"rot_x": float(settings.angles(0)[ix]), "rot_y": float(settings.angles(1)[iy]),
            "rot_z": float(settings.angles(2)[iz]), "offset_mm": settings.offsets_mm[io], "flip": bool(iflip)}


def sample_combinations(settings: VolumeAugmentation, subject: str) -> list[dict]:
    """The ``count`` combinations of one subject: angles (deg) about x, y, z, offset (mm), flip."""
    return [combination(settings, number) for number in chosen_combinations(settings, subject)]


def rotation_matrix(rot_x: float, rot_y: float, rot_z: float) -> np.ndarray:
    """R = Rz @ Ry @ Rx for angles in degrees about the world x, y, z axes."""
    ax, ay, az = np.deg2rad([rot_x, rot_y, rot_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def augmented_sections(volume: np.ndarray, affine: np.ndarray, level_mm: float, combos: list[dict],
                       axis: str = "axial", *, grid_shape: tuple[int, int, int] | None = None,
                       slab_start: tuple[int, int, int] | None = None) -> np.ndarray:
    """One (H, W) image per combination, in the display orientation of ``axis``.

    The volume (RAS voxel order, ``affine`` voxel -> mm) is rotated by the combination's angles
    about the centre of the section at ``level_mm`` (world coordinate along ``axis``), the section
    at ``level_mm + offset_mm`` is sampled, and the image is flipped left-right when asked.

    ``volume`` may instead be the slab of a volume of shape ``grid_shape`` that starts at voxel
    ``slab_start`` (:func:`section_slab`): the points are computed on the whole grid as before and
    shifted by whole voxels, which is exact in floating point, so the interpolation sees the same
    fractions and neighbours and returns the same numbers.
    """
    volume = np.asarray(volume, dtype=np.float32)
    affine = np.asarray(affine, dtype=np.float64)
    k = AXIS_INDEX[axis]
    shape = tuple(grid_shape) if grid_shape is not None else volume.shape
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
        if slab_start is not None:
            source_voxels -= np.asarray(slab_start, dtype=np.float64)[:, None]
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


def section_slab(grid_shape: tuple[int, int, int], affine: np.ndarray, level_mm: float,
                 settings: VolumeAugmentation, axis: str = "axial") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The voxel box [start, stop) of a volume that every plane of the settings' grid samples from.

    The plane of one combination is a rectangle, and its points' source positions are an affine
    image of it, so the four corners bound them; the box covers the corners of every (rotation,
    offset) of the grid (flips sample the same points), widened by one voxel beyond their floor
    and ceiling so that every point keeps all its interpolation neighbours inside the box (or
    meets the box where it meets the volume's own edge). It depends on the grid and the angles,
    never on ``count``.
    """
    affine = np.asarray(affine, dtype=np.float64)
    k = AXIS_INDEX[axis]
    spacing, origin = affine[k, k], affine[k, 3]
    centre_voxel = (np.array(grid_shape, dtype=np.float64) - 1) / 2
    centre_voxel[k] = (level_mm - origin) / spacing
    centre = affine[:3, :3] @ centre_voxel + affine[:3, 3]
    corners = []
    in_plane = [a for a in range(3) if a != k]
    for offset in settings.offsets_mm:
        for u in (0, grid_shape[in_plane[0]] - 1):
            for v in (0, grid_shape[in_plane[1]] - 1):
                corner = np.zeros(3)
                corner[k], corner[in_plane[0]], corner[in_plane[1]] = (level_mm + offset - origin) / spacing, u, v
                corners.append(corner)
    world = affine[:3, :3] @ np.array(corners).T + affine[:3, 3:4] - centre[:, None]       # 3 x P
    rotations = np.array([rotation_matrix(x, y, z) for x in settings.angles(0)
                          for y in settings.angles(1) for z in settings.angles(2)])         # R x 3 x 3
    source = np.einsum("rji,jp->rip", rotations, world) + centre[None, :, None]            # R^T (w - c) + c
    inverse = np.linalg.inv(affine)
    voxels = np.einsum("ij,rjp->rip", inverse[:3, :3], source) + inverse[None, :3, 3:4]
    low, high = voxels.min(axis=(0, 2)), voxels.max(axis=(0, 2))
    start, stop = [], []
    for axis_index, n in enumerate(grid_shape):
        first = int(np.clip(np.floor(low[axis_index]) - 1, 0, n - 1))
        last = int(np.clip(np.ceil(high[axis_index]) + 1, first, n - 1))
        start.append(first)
        stop.append(last + 1)
    return tuple(start), tuple(stop)


def write_slab_index(path: Path, settings: VolumeAugmentation, *, axis: str, size: tuple[int, int], fit: str,
                     stacked: bool, entries: list[dict[str, Any]]) -> None:
    """The index of a slab store (volumes.json): how the images are drawn and, per training volume
    (in the slice table's order), its real rows and where its slab lies on its grid."""
    write_json(path, {"format": STORE_FORMAT, "augmentation": asdict(settings), "axis": axis,
                      "size": list(size), "fit": fit, "stacked": stacked, "entries": entries})


def slab_entry(subject: str, sequence: str, rows: list[int], level_mm: float, grid_shape: tuple[int, ...],
               affine: np.ndarray, start: tuple[int, ...]) -> dict[str, Any]:
    """One training volume's record in the slab index (plain JSON values)."""
    return {"subject": subject, "sequence": sequence, "rows": [int(r) for r in rows], "level_mm": float(level_mm),
            "grid_shape": [int(n) for n in grid_shape], "slab_start": [int(n) for n in start],
            "affine": np.asarray(affine, dtype=np.float64).tolist()}


class OnTheFlyTrainSplit:
    """The train split of an ``on_the_fly`` dataset: every training volume's real slices (read from
    images.npy) followed by its ``count`` sampled combinations, drawn from its slab when indexed.

    Indexed like ``core.slices.SplitImages`` (an int, a slice or an array of positions; float32
    images in memory) and in the order the ``offline`` mode writes the same images, so the trainer
    needs nothing else. Memory: the real rows' numbers, the slabs (memory-mapped, shared between
    DataLoader workers through the page cache) and, per volume drawn from, its chosen combination
    numbers (8 bytes an image). Picklable: each process opens the slab file itself.
    """

    def __init__(self, images: Path, table: Path, store: Path, index: Path):
        meta = read_json(index)
        if meta.get("format") != STORE_FORMAT:
            raise InputError(f"{index}: not a slab index of format {STORE_FORMAT!r}")
        self.store, self.index = Path(store), Path(index)
        self.settings = VolumeAugmentation(**meta["augmentation"])
        self.axis, self.size, self.fit = meta["axis"], tuple(meta["size"]), meta["fit"]
        self.stacked, self.entries = bool(meta["stacked"]), meta["entries"]
        train = split_rows(load_table(table), "train", augmented=True)
        real_rows = np.array([r for e in self.entries for r in e["rows"]], dtype=np.int64)
        if not np.array_equal(np.sort(real_rows), np.sort(train)):
            raise InputError(f"{index} does not describe the train split of {table} (written by another "
                             "slicing run?); rerun slice_dataset")
        self.real = SplitImages(images, real_rows)
        n_real = np.array([len(e["rows"]) for e in self.entries], dtype=np.int64)
        self.n_real = n_real
        self.real_starts = np.concatenate([[0], np.cumsum(n_real)[:-1]]).astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(n_real + self.settings.count)]).astype(np.int64)
        self.item_shape = self.real.item_shape
        self.shape = (int(self.starts[-1]),) + self.item_shape
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)
        self.data_files = [self.store, self.index]
        self._slabs: np.ndarray | None = None
        self._chosen: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_slabs": None}

    def slabs(self) -> np.ndarray:
        """(volumes, channels, depth, height, width) float32, memory-mapped."""
        if self._slabs is None:
            self._slabs = np.load(self.store, mmap_mode="r")
            if len(self._slabs) != len(self.entries):
                raise InputError(f"{self.store} holds {len(self._slabs)} slabs but {self.index} lists "
                                 f"{len(self.entries)} volumes")
        return self._slabs

    def chosen(self, entry: int) -> np.ndarray:
        if entry not in self._chosen:
            self._chosen[entry] = chosen_combinations(self.settings, self.entries[entry]["subject"])
        return self._chosen[entry]

    def draw(self, entry: int, numbers: np.ndarray) -> np.ndarray:
        """The images of combinations ``numbers`` of volume ``entry``, as the offline mode makes them."""
        record = self.entries[entry]
        combos = [combination(self.settings, number) for number in numbers]
        channels = []
        for slab in self.slabs()[entry]:
            sections = augmented_sections(slab, np.array(record["affine"]), record["level_mm"], combos, self.axis,
                                          grid_shape=tuple(record["grid_shape"]),
                                          slab_start=tuple(record["slab_start"]))
            channels.append(fit_slices(np.clip(sections, 0.0, 1.0), self.size, self.fit))
        return np.stack(channels, axis=1) if self.stacked else channels[0]

    def __getitem__(self, index) -> np.ndarray:
        positions = np.arange(len(self))[index]
        if np.ndim(positions) == 0:
            return self[np.array([positions])][0]
        entry = np.searchsorted(self.starts, positions, side="right") - 1
        local = positions - self.starts[entry]
        real = local < self.n_real[entry]
        out = np.empty((len(positions),) + self.item_shape, dtype=np.float32)
        if real.any():
            out[real] = self.real[self.real_starts[entry[real]] + local[real]]
        for volume in np.unique(entry[~real]):
            where = np.flatnonzero(~real & (entry == volume))
            out[where] = self.draw(int(volume), self.chosen(int(volume))[local[where] - self.n_real[volume]])
        return out


def open_training_split(images: Path, table: Path, store: Path, index: Path,
                        condition_on: str | None = None):
    """(train images, their real table rows) of a dataset sliced with ``mode: on_the_fly``, or None
    when its slab store is empty (no augmentation, or ``offline``: the caller reads the split from
    images.npy as before)."""
    meta = read_json(index)
    if not meta.get("entries"):
        return None
    if condition_on:
        raise InputError(f"condition_on: {condition_on}: a conditional model needs one label per training image; "
                         "on-the-fly augmentation keeps no table row per drawn image yet. Use "
                         "augmentation.mode: offline for this dataset")
    split = OnTheFlyTrainSplit(images, table, store, index)
    frame = load_table(table)
    return split, frame.loc[split.real.rows].reset_index(drop=True)
