"""The slice dataset handed between stages (images.npy + slices.tsv) and checked image stacks.

Images are float32 (N, H, W) in [0, 1]; ``slices.tsv`` has one row per image. A stacked dataset
(``datasets.<name>.channels``) has (N, C, H, W) images, one channel per sequence, and its
``sequence`` column names the channels joined by "+" (:func:`image_channels`).

Models train on and sample the channels together; everything that measures grey images (every
metric, the report's figures) reads them through :func:`grey_images` / :func:`grey_rows` (or
``grey=True`` of the loaders), which pool the C channels of each image as C grey images,
channel-major per image (image 0's channels, then image 1's, ...), as Han et al.'s "Concat"
dataset pools the sequences. A grey (N, H, W) dataset passes through unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.numbers import index_number

# Images checked at a time (bounds the float copies of a memory-mapped stack).
_VALIDATE_BLOCK = 256


def load_table(table: Path) -> pd.DataFrame:
    return pd.read_csv(table, sep="\t", dtype={"subject": str, "split": str}, keep_default_na=False)


def open_images(images: Path) -> np.ndarray:
    """Memory-mapped (N, H, W) (or stacked (N, C, H, W)) float32 array: large cohorts need not fit
    in memory twice."""
    return np.load(images, mmap_mode="r")


#: Joins the channel (sequence) names of a stacked dataset in slices.tsv's ``sequence`` column.
CHANNEL_JOIN = "+"


def channel_count(images: np.ndarray) -> int:
    """C of a stacked (N, C, H, W) array or of volumes (N, C, X, Y, Z), 1 for a grey (N, H, W) one."""
    return int(images.shape[1]) if images.ndim in (4, 5) else 1


def image_channels(images: Path | np.ndarray, table: pd.DataFrame) -> list[str]:
    """The channel (sequence) names of a stacked dataset, in channel order; [] for a grey one.

    Read from the ``sequence`` column ("t1+t1ce+t2+flair", the same on every row) and checked
    against the image array's C.
    """
    data = open_images(images) if isinstance(images, (str, os.PathLike)) else images
    if data.ndim == 3:
        return []
    if data.ndim != 4:
        raise InputError(f"{images if not isinstance(images, np.ndarray) else 'images'}: expected "
                         f"(N, H, W) or stacked (N, C, H, W) images, got shape {data.shape}")
    joined = set(table["sequence"].astype(str)) if "sequence" in table.columns else set()
    names = joined.pop().split(CHANNEL_JOIN) if len(joined) == 1 else []
    if len(names) != data.shape[1]:
        raise InputError(f"stacked images have {data.shape[1]} channels but the slice table's 'sequence' "
                         f"column does not name them (one value joined by '{CHANNEL_JOIN}'; found "
                         f"{sorted(map(str, joined)) or 'no sequence column'})")
    return names


def grey_images(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) as (N·C, H, W) grey images, channel-major per image (a view when it can be);
    a grey (N, H, W) stack is returned as it is."""
    if images.ndim == 4:
        return images.reshape((-1,) + images.shape[2:])
    return images


def grey_rows(rows: pd.DataFrame | pd.Series, channels: int | list[str]):
    """The per-image ``rows`` (table rows or sample labels) repeated once per channel, in the
    order of :func:`grey_images`. Given the channel names, a table's ``sequence`` becomes each grey
    image's own sequence, so the grey view reads like a pooled dataset of those sequences. One
    channel: ``rows`` as they are."""
    names = list(channels) if not isinstance(channels, int) else []
    count = len(names) if names else int(channels)
    if count <= 1:
        return rows
    out = rows.iloc[np.repeat(np.arange(len(rows)), count)].reset_index(drop=True)
    if names and isinstance(out, pd.DataFrame):
        out["sequence"] = names * len(rows)
    return out


def dataset_geometry(table: pd.DataFrame, images: np.ndarray) -> dict[str, Any]:
    """What the slices are, for a run's summary and its model card: size [height, width], axis,
    the range of (non-augmented) slice indices and, for a stacked dataset, its channel names."""
    out: dict[str, Any] = {"size": [int(images.shape[-2]), int(images.shape[-1])]}
    if "axis" in table.columns and len(table):
        out["axis"] = ", ".join(sorted(set(table["axis"].astype(str))))
    if "slice_index" in table.columns and len(table):
        real = table[table["augmented"].astype(str) != "1"] if "augmented" in table.columns else table
        index = pd.to_numeric(real["slice_index"], errors="coerce").dropna()
        if len(index):
            out["slice_index"] = {"first": index_number(index.min()), "last": index_number(index.max()),
                                  "positions": int(index.nunique())}
    names = image_channels(images, table)
    if names:
        out["channel_names"] = names
    return out


def split_rows(table: pd.DataFrame, split: str, augmented: bool = False) -> np.ndarray:
    """Row numbers of one split. Offline-augmented images (``augmented`` 1, training subjects only)
    are left out unless ``augmented``: only training reads them, never a real reference set."""
    keep = table["split"] == split
    if not augmented and "augmented" in table.columns:
        keep &= table["augmented"].astype(str) != "1"
    rows = table.index[keep].to_numpy()
    if len(rows) == 0:
        raise InputError(f"the slice table has no '{split}' rows")
    return rows


def subset_rows(rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most ``n`` of ``rows``, drawn without replacement by ``seed``, in ascending order."""
    if n >= len(rows):
        return np.sort(rows)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=n, replace=False))


def _split_table(images: Path, table: Path, split: str, augmented: bool) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The slice table, the row numbers of ``split`` and the memory-mapped images, checked to agree."""
    frame = load_table(table)
    rows = split_rows(frame, split, augmented)
    data = open_images(images)
    if len(data) != len(frame):
        raise InputError(f"{images} has {len(data)} images but {table} has {len(frame)} rows")
    return frame, rows, data


def load_split(images: Path, table: Path, split: str, n: int | None = None,
               seed: int = 0, augmented: bool = False, grey: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
    """Images (float32, in memory) and table rows of one split, optionally a seeded subset of ``n``
    images; the offline-augmented images only with ``augmented`` (see :func:`split_rows`). With
    ``grey`` a stacked dataset's images come as grey images with their rows repeated per channel
    (:func:`grey_images`, :func:`grey_rows`): what every metric reads."""
    frame, rows, data = _split_table(images, table, split, augmented)
    if n is not None:
        rows = subset_rows(rows, n, seed)
    chosen, chosen_rows = np.asarray(data[rows], dtype=np.float32), frame.loc[rows].reset_index(drop=True)
    if grey:
        return grey_images(chosen), grey_rows(chosen_rows, image_channels(data, frame) or 1)
    return chosen, chosen_rows


class SplitImages:
    """The images of some rows of ``images.npy``, read from the file on request, never all at once.

    Indexing (an int, a slice or an array of positions, in any order) returns float32 images in
    memory, as :func:`load_split` would have; ``len``, ``shape`` and ``ndim`` are those of the
    split. With ``grey`` a stacked (N, C, H, W) file is seen as its channels' grey images, C per
    row in the order of :func:`grey_images`, each read on its own. Rows are read with ``pread``
    from the geometry the memory-mapped array reports rather than through the mapping: pages of a
    mapping stay in the process's resident set once touched, so an epoch over a memory-mapped split
    would grow the resident set to the file's size, while reads go through the page cache, which
    the kernel reclaims. Picklable (the file is reopened in each process), so DataLoader workers
    can share it. :meth:`take` gives the view of some of its positions, still on disk.
    """

    def __init__(self, images: Path, rows: np.ndarray, grey: bool = False):
        self.path, self.rows = Path(images), np.asarray(rows, dtype=np.int64)
        data = open_images(self.path)
        # Grey images of a stacked file are the units read: channel c of row r is unit r·C + c.
        per_row = int(data.shape[1]) if grey and data.ndim == 4 else 1
        self.per_row = per_row
        self.units = (self.rows[:, None] * per_row + np.arange(per_row)).ravel()
        self.item_shape = tuple(data.shape[2:]) if grey and data.ndim == 4 else tuple(data.shape[1:])
        self.dtype = data.dtype
        self._sized()
        self.item_bytes = int(np.prod(self.item_shape, dtype=np.int64)) * data.dtype.itemsize
        # np.save writes C order; a Fortran-ordered file has no contiguous rows, so it is indexed
        # through the mapping instead.
        self.offset = int(data.offset) if data.flags.c_contiguous else None
        self._fd: int | None = None
        self._fd_pid: int | None = None

    def _sized(self) -> None:
        self.shape = (len(self.units),) + self.item_shape
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return len(self.units)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fd": None, "_fd_pid": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._fd_pid == os.getpid():
            os.close(self._fd)

    def take(self, positions) -> "SplitImages":
        """The images at ``positions`` (in that order) as a view that still reads from disk."""
        view = object.__new__(SplitImages)
        view.__setstate__(self.__getstate__())
        view.units = self.units[np.asarray(positions, dtype=np.int64)]
        view.rows = view.units // self.per_row
        view._sized()
        return view

    def _file(self) -> int:
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd, self._fd_pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getitem__(self, index) -> np.ndarray:
        positions = np.arange(len(self.units))[index]
        if np.ndim(positions) == 0:
            return self[np.array([positions])][0]
        wanted = self.units[positions]
        if self.offset is None:
            data = open_images(self.path)
            picked = data[wanted // self.per_row, wanted % self.per_row] if self.per_row > 1 else data[wanted]
            return np.asarray(picked, dtype=np.float32).reshape((len(wanted),) + self.item_shape)
        out = np.empty((len(wanted),) + self.item_shape, dtype=np.float32)
        fd = self._file()
        for j, unit in enumerate(wanted):
            raw = os.pread(fd, self.item_bytes, self.offset + int(unit) * self.item_bytes)
            if len(raw) != self.item_bytes:
                raise InputError(f"{self.path}: image {unit // self.per_row} is cut short (the file is truncated)")
            out[j] = np.frombuffer(raw, dtype=self.dtype).reshape(self.item_shape)
        return out


class ConcatImages:
    """Image stacks (arrays or :class:`SplitImages`) seen as one, each read only where indexed:
    a training set of real slices on disk and samples in memory without copying either."""

    def __init__(self, *parts):
        self.parts = [part for part in parts]
        self.item_shape = tuple(self.parts[0].shape[1:])
        for part in self.parts[1:]:
            if tuple(part.shape[1:]) != self.item_shape:
                raise InputError(f"images of {tuple(part.shape[1:])} cannot join images of {self.item_shape}")
        self.starts = np.cumsum([0] + [len(part) for part in self.parts])
        self.shape = (int(self.starts[-1]),) + self.item_shape
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        positions = np.arange(len(self))[index]
        if np.ndim(positions) == 0:
            return self[np.array([positions])][0]
        out = np.empty((len(positions),) + self.item_shape, dtype=np.float32)
        part_of = np.searchsorted(self.starts, positions, side="right") - 1
        for p, part in enumerate(self.parts):
            mine = np.flatnonzero(part_of == p)
            if len(mine):
                out[mine] = part[positions[mine] - self.starts[p]]
        return out


def take_images(images, positions) -> Any:
    """``images[positions]`` without reading them when ``images`` is on disk (:meth:`SplitImages.take`);
    an in-memory array gives its float32 rows."""
    if isinstance(images, SplitImages):
        return images.take(positions)
    return np.asarray(images[np.asarray(positions, dtype=np.int64)], dtype=np.float32)


def open_split(images: Path, table: Path, split: str, augmented: bool = False, n: int | None = None,
               seed: int = 0, grey: bool = False) -> tuple[SplitImages, pd.DataFrame]:
    """Like :func:`load_split` (optionally a seeded subset of ``n``, optionally the grey view), but
    the images stay on disk and are read when indexed (:class:`SplitImages`): memory flat in the
    split's size. The same rows, in the same order, as :func:`load_split`."""
    frame, rows, data = _split_table(images, table, split, augmented)
    if n is not None:
        rows = subset_rows(rows, n, seed)
    chosen_rows = frame.loc[rows].reset_index(drop=True)
    if grey:
        return SplitImages(images, rows, grey=True), grey_rows(chosen_rows, image_channels(data, frame) or 1)
    return SplitImages(images, rows), chosen_rows


def validate_images(images: np.ndarray, what: str, stacked: bool = False) -> np.ndarray:
    """Check that ``images`` is a non-empty finite (N, H, W) stack in [0, 1] (with ``stacked``, a
    (N, C, H, W) stack is accepted too).

    ``what`` names the array (or the file it came from) in error messages.
    Returns the array unchanged (no copy); raises InputError otherwise.
    """
    if not isinstance(images, (np.ndarray, SplitImages, ConcatImages)):
        raise InputError(f"{what}: expected a numpy array, got {type(images).__name__}")
    if images.ndim != 3 and not (stacked and images.ndim == 4):
        raise InputError(f"{what}: expected images shaped (N, H, W){' or (N, C, H, W)' if stacked else ''}, "
                         f"got shape {images.shape}")
    if min(images.shape) == 0:
        raise InputError(f"{what}: empty image stack, shape {images.shape}")
    if not (np.issubdtype(images.dtype, np.floating) or np.issubdtype(images.dtype, np.integer)):
        raise InputError(f"{what}: expected a numeric array, got dtype {images.dtype}")
    for start in range(0, images.shape[0], _VALIDATE_BLOCK):
        block = images[start:start + _VALIDATE_BLOCK]
        if not np.all(np.isfinite(block)):
            raise InputError(f"{what}: non-finite values (NaN or Inf) in images {start}..{start + len(block) - 1}")
        lo, hi = float(block.min()), float(block.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"{what}: intensities must lie in [0, 1]; images {start}..{start + len(block) - 1} "
                f"span [{lo:.6g}, {hi:.6g}]"
            )
    return images


def load_checked_images(path: str | os.PathLike, grey: bool = False) -> np.ndarray:
    """Load an ``.npy`` image stack ((N, H, W), or stacked (N, C, H, W)) and validate it; errors
    name the file. With ``grey`` a stacked array comes as grey images (:func:`grey_images`)."""
    path = Path(path)
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as a .npy image stack ({exc})") from exc
    images = validate_images(images, str(path), stacked=True)
    return grey_images(images) if grey else images
