"""Atomic file writing: a killed job must never leave a half-written output."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from pipeline_lib.core.errors import InputError


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file lives in the same directory so the final ``os.replace``
    is atomic on POSIX file systems. The temporary name keeps the final suffix
    (e.g. ``.nii.gz``) because several writers choose the format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600 files; outputs should get the usual permissions under the umask.
    os.chmod(tmp, 0o666 & ~_current_umask())
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path) -> dict:
    """A JSON file's contents; errors name the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as JSON ({exc})") from exc


def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def write_npy(path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


class NpyRows:
    """A ``.npy`` file of ``shape`` laid out at ``path`` (np.lib.format.open_memmap writes the header
    and sizes the file) and filled with ``pwrite``: ``rows[i] = a``, ``rows[i:j] = a`` or
    ``rows[i, c] = a`` (one channel of row ``i``). Not through the mapping: written pages of a
    mapping count in the job's resident set until the kernel reclaims them, so a cohort-sized
    mapping would grow the job's memory with the cohort; written file pages are the page cache's."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype=np.float32):
        layout = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))
        self.shape, self.dtype, self.offset = tuple(layout.shape), layout.dtype, int(layout.offset)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        del layout
        self._handle = open(path, "r+b")

    def __setitem__(self, index, values) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        if isinstance(index, tuple):
            row, channel = index
            start = self.offset + int(row) * self.row_bytes + int(channel) * self.row_bytes // self.shape[1]
            expected = int(np.prod(self.shape[2:], dtype=np.int64))
        elif isinstance(index, slice):
            first, stop, step = index.indices(self.shape[0])
            if step != 1:
                raise ValueError("NpyRows writes contiguous rows only")
            start = self.offset + first * self.row_bytes
            expected = (stop - first) * self.row_bytes // self.dtype.itemsize
        else:
            start = self.offset + int(index) * self.row_bytes
            expected = self.row_bytes // self.dtype.itemsize
        if values.size != expected:
            raise ValueError(f"{values.size} values for a place of {expected}")
        os.pwrite(self._handle.fileno(), values.tobytes(), start)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "NpyRows":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_tsv(path) -> pd.DataFrame:
    """A TSV table as strings: IDs like 007 stay intact, empty cells stay empty strings."""
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def write_tsv(path, frame) -> None:
    """Write a pandas DataFrame as TSV atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def replace_directory(new: Path, target: Path, *, ours: Callable[[Path], str | None]) -> None:
    """Move the finished folder ``new`` onto ``target``, replacing an earlier one.

    ``ours(target)`` returns None when ``target`` is an earlier output of the same
    writer, else why it is not (then nothing is touched and InputError says so).
    The old folder is moved aside before the new one takes its name, so a crash
    leaves either the old or the new folder at ``target``, never a mix.
    """
    new, target = Path(new), Path(target)
    if target.exists():
        problem = ours(target)
        if problem:
            raise InputError(f"{target}: {problem}; refusing to replace it")
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / "previous")
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)
