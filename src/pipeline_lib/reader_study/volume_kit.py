"""Reader-study kit of volumes: blinded real and generated 3-D volumes a reader scrolls through.

The same study as the slice kit (``kit.py``): the same compositions and designs (presets, per-reader
sets, familiarisation, blocks; ``composition.py``, ``design.py``), the same opaque seeded names,
answer key columns and response files, so ``scoring.py`` scores a volume session unchanged. What
differs is what a case is: a whole volume of a volume dataset (``results/volumes/<name>/volumes.npy``,
(N, C, X, Y, Z) float32 in [0, 1], RAS voxel order) or of a 3-D run
(``results/volume_samples/<model>/seed<seed>/volumes.npy``, (n, C, X, Y, Z)).

Each volume is stored 8-bit (round(255 v)), C-order (C, X, Y, Z), base64 in a small script
``volumes/<16 hex digits>.js`` that the page loads with a ``<script>`` element: that works from
file:// (where a page may not read files with fetch) and from any static server, and needs no
library. Uncompressed on purpose, as the slice kit's PNGs: every volume file of a kit has the same
byte count (a compressed size would betray a smooth sample); the same fixed modification time.

The page is the slice kit's (``page/``) in volume mode (``mode: volume`` in kit.js) plus
``volume.js``, the viewer: three linked panes (axial, coronal, sagittal, in the slice datasets'
radiological display: the patient's right on the image's left, anterior and superior up, as
``imaging/slice_geometry.ras_to_display``), each scrolled by mouse wheel, slider or arrow keys, a
crosshair set by a click that moves the other two planes to that point, and window/level (drag, or
the presets) applied to the stored grey levels. Pane sizes follow the grid's voxel spacing, so an
anisotropic grid is shown in its true proportions.
"""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.guard import read_failure
from pipeline_lib.core.settings import REAL, ReaderStudySettings, read_settings
from pipeline_lib.core.slices import SplitImages, load_table
from pipeline_lib.core.volumes import read_grid
from pipeline_lib.reader_study.kit import PAGE_FILES, check_key_outside, compose_named, real_pool, write_kit

log = logging.getLogger(__name__)

VOLUME_FOLDER = "volumes"
#: A volume kit ships the viewer beside the slice page's files.
VOLUME_PAGE_FILES = PAGE_FILES + ("volume.js",)
_SCRIPT = re.compile(rb'^window\.READER_VOLUME\("([0-9a-f]{16}\.js)","([A-Za-z0-9+/=]*)"\);\n$')


def volume_voxels(volume: np.ndarray) -> np.ndarray:
    """A (C, X, Y, Z) volume in [0, 1] as the kit stores it: uint8, round(255 v), clipped."""
    return np.round(np.clip(np.asarray(volume, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def volume_script(name: str, voxels: np.ndarray) -> bytes:
    """The kit file of one volume: a script handing its name and base64 voxels (C-order) to the page.
    Its length depends on the name's length and the grid only."""
    payload = base64.b64encode(np.ascontiguousarray(voxels, dtype=np.uint8).tobytes()).decode("ascii")
    return f'window.READER_VOLUME("{name}","{payload}");\n'.encode("ascii")


def read_volume_script(data: bytes, shape: Sequence[int]) -> tuple[str, np.ndarray]:
    """The name and (C, X, Y, Z) uint8 voxels of a kit's volume file (the inverse of :func:`volume_script`)."""
    match = _SCRIPT.match(data)
    if match is None:
        raise ValueError("not a reader-kit volume file")
    return match.group(1).decode("ascii"), np.frombuffer(base64.b64decode(match.group(2)), np.uint8).reshape(shape)


def _load_volumes(path: Path) -> SplitImages:
    """Every volume of ``path``, read from the file one at a time when indexed (``pread``, not a memory
    map, whose touched pages would stay in the job's resident set)."""
    try:
        data = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: cannot read as a .npy volume stack ({error})") from None
    if data.ndim != 5 or data.shape[0] == 0:
        raise InputError(f"{path}: expected (N, C, X, Y, Z) volumes, got shape {data.shape}")
    return SplitImages(path, np.arange(len(data)))


def generated_pool(volumes: SplitImages, labels: Path | None, group_by: str | None, source: Path) -> pd.DataFrame:
    """A 3-D run's volumes as a pool; with ``group_by`` its labels.tsv ``label`` column (when the run
    wrote one) gives the groups, else every volume is of no group."""
    groups = np.full(len(volumes), "", dtype=object)
    if group_by is not None and labels is not None:
        table = pd.read_csv(labels, sep="\t", dtype=str, keep_default_na=False)
        if "label" not in table.columns or len(table) != len(volumes):
            raise InputError(f"{labels}: expected a 'label' column with one row per volume of {source} "
                             f"({len(volumes)}), found columns {list(table.columns)} and {len(table)} rows")
        groups = table["label"].to_numpy(dtype=object)
    return pd.DataFrame({"index": np.arange(len(volumes)), "group": groups})


def build_volume_kit(volumes: Path, table: Path, samples: Mapping[str, Path | tuple[Path, Path | None]],
                     settings: ReaderStudySettings | Mapping, *, kit_dir: Path, answer_key: Path, summary: Path,
                     spacing_mm: Sequence[float] | None = None) -> dict:
    """A volume kit: the test volumes of a volume dataset (``volumes``, ``table``: its volumes.npy and
    volumes.tsv) against 3-D runs' volumes (``samples``: model -> volumes.npy, or (volumes.npy,
    labels.tsv or None)), composed by ``settings`` as a slice kit. ``spacing_mm`` (x, y, z; the
    dataset's grid.json) sizes the panes; None = isotropic. Returns the summary."""
    settings = read_settings(ReaderStudySettings, settings)
    check_key_outside(kit_dir, answer_key)
    stacks = {REAL: _load_volumes(Path(volumes))}
    if len(stacks[REAL]) != len(load_table(Path(table))):
        raise InputError(f"{volumes} has {len(stacks[REAL])} volumes but {table} has a different number of rows")
    pools = {REAL: real_pool(Path(table), settings.group_by)}
    sources = {REAL: str(volumes)}
    for model, files in sorted(samples.items()):
        path, labels = (files, None) if isinstance(files, (str, Path)) else files
        stacks[model] = _load_volumes(Path(path))
        if stacks[model].shape[1:] != stacks[REAL].shape[1:]:
            raise InputError(f"{path}: volumes are {stacks[model].shape[1:]} (C, X, Y, Z) but the real volumes in "
                             f"{volumes} are {stacks[REAL].shape[1:]}; every kit volume must be on the same grid")
        pools[model] = generated_pool(stacks[model], None if labels is None else Path(labels), settings.group_by,
                                      Path(path))
        sources[model] = str(path)
    spacing = [1.0, 1.0, 1.0] if spacing_mm is None else [float(v) for v in spacing_mm]
    if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise InputError(f"voxel spacing must be three positive mm values (x, y, z), not {spacing_mm!r}")
    kit, training = compose_named(pools, settings, sources, suffix=".js")
    rows = pd.concat([kit, training], ignore_index=True)
    files = _VolumeFiles(dict(zip(rows["image"], zip(rows["source"], rows["source_index"].astype(int)))), stacks, sources)
    channels, *grid = stacks[REAL].shape[1:]
    view = {"mode": "volume", "volume": {"shape": [int(v) for v in grid], "channels": int(channels),
                                         "spacing_mm": spacing, "interpolation": settings.interpolation}}
    one = len(files[next(iter(files))])
    sizes = {"bytes_per_volume": one, "volume_bytes": one * len(files)}
    return write_kit(kit, training, files, settings, view, kit_dir=kit_dir, answer_key=answer_key, summary=summary,
                     folder=VOLUME_FOLDER, page_files=VOLUME_PAGE_FILES, details=sizes)


class _VolumeFiles(Mapping):
    """The kit's volume files by name, each made when read: a kit is hashed and written one volume at a
    time, so building it holds one volume whatever the kit's size (a kit of 100 volumes on Pinaya et
    al.'s grid is 765 MB)."""

    def __init__(self, rows: Mapping[str, tuple[str, int]], stacks: Mapping[str, np.ndarray],
                 sources: Mapping[str, str]):
        self.rows, self.stacks, self.sources = rows, stacks, sources

    def __getitem__(self, name: str) -> bytes:
        source, index = self.rows[name]
        volume = np.asarray(self.stacks[source][index], dtype=np.float32)
        if not np.isfinite(volume).all():
            raise InputError(f"{self.sources[source]}: volume {index} holds NaN or infinite values")
        return volume_script(name, volume_voxels(volume))

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def volume_kit_job(volumes: Path, table: Path, grid: Path, sample_files: Sequence[str | Path], models: Sequence[str],
                   settings: Mapping, *, kit_dir: Path, answer_key: Path, summary: Path) -> dict:
    """A rule's entry point: the volume dataset's files and grid.json, the runs' volumes.npy paired with
    ``models`` by order; a failed run (core/guard.py's record) is left out of the kit."""
    if len(models) != len(sample_files):
        raise InputError(f"reader volume kit: {len(models)} models but {len(sample_files)} volume files")
    samples = {m: Path(s) for m, s in zip(models, sample_files) if read_failure(s) is None}
    return build_volume_kit(Path(volumes), Path(table), samples, settings, kit_dir=Path(kit_dir),
                            answer_key=Path(answer_key), summary=Path(summary),
                            spacing_mm=read_grid(grid).get("spacing_mm"))
