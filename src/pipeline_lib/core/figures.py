"""Small PNG images shared by several stages: 8-bit grey PNG encoding, image grids and orthogonal
views of volumes."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from pipeline_lib.core.io import atomic_path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_png_gray8(pixels: np.ndarray, level: int = 9) -> bytes:
    """Deterministic 8-bit grey PNG of a uint8 image: IHDR, one IDAT, IEND; nothing else (no date,
    no software tag), so the same pixels always give the same bytes.

    ``level`` is the deflate level; 0 stores the rows uncompressed, so the byte count depends on
    the image size only, never on its content (the reader-study kit needs that).
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError(f"expected a 2-D uint8 image, got {pixels.dtype} {pixels.shape}")
    height, width = pixels.shape
    raw = np.zeros((height, width + 1), dtype=np.uint8)  # filter byte 0 (none) before every row
    raw[:, 1:] = pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (PNG_SIGNATURE + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), level)) + _png_chunk(b"IEND", b""))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] as 8-bit grey levels (rounded)."""
    return np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8)


def tile(images: np.ndarray, ncols: int = 8, pad: int = 2) -> np.ndarray:
    """Arrange (N, H, W) images into one (rows*H, cols*W) mosaic with a white border."""
    n, h, w = images.shape
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    canvas = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y:y + h, x:x + w] = img
    return canvas


def save_grid(images: np.ndarray, path: Path, ncols: int = 8, max_images: int = 64) -> None:
    """Write the first ``max_images`` of (N, H, W) images in [0, 1] as an 8-bit grey PNG grid.

    Stacked (N, C, H, W) images show each image's C channels side by side (about ``ncols`` columns
    and ``max_images`` tiles in all, never splitting an image over two rows)."""
    if images.ndim == 4:
        channels = images.shape[1]
        per_row = max(1, ncols // channels)
        images = images[:max(1, max_images // channels)].reshape((-1,) + images.shape[2:])
        ncols, max_images = per_row * channels, len(images)
    mosaic = tile(np.clip(images[:max_images], 0, 1), ncols=ncols)
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(encode_png_gray8(to_uint8(mosaic)))


def save_pairs(originals: np.ndarray, reconstructions: np.ndarray, path: Path, n: int = 8) -> None:
    """Originals in the top row, their reconstructions below."""
    k = min(n, len(originals))
    stacked = np.concatenate([originals[:k], reconstructions[:k]])
    save_grid(stacked, path, ncols=k, max_images=2 * k)


#: The planes of :func:`orthogonal_views`, in their column order.
VIEW_PLANES = ("axial", "coronal", "sagittal")


def middle_slices(volume: np.ndarray) -> list[np.ndarray]:
    """The middle axial, coronal and sagittal slices of one RAS-ordered (X, Y, Z) volume, in the
    slice datasets' radiological display (imaging.slice_geometry.ras_to_display: the patient's right
    on the image's left, anterior resp. superior up; tested equal)."""
    x, y, z = (n // 2 for n in volume.shape)
    return [volume[::-1, ::-1, z].T, volume[::-1, y, ::-1].T, volume[x, ::-1, ::-1].T]


def orthogonal_views(volumes: np.ndarray, n: int = 4, pad: int = 2) -> np.ndarray:
    """One row per volume of the first ``n`` of (N, C, X, Y, Z) volumes (a stacked volume's channels
    one after another), each row its middle axial, coronal and sagittal slices side by side (tiles
    as large as the largest slice, slices centred), on a white border: a (rows*H, 3*W) mosaic."""
    if volumes.ndim != 5:
        raise ValueError(f"expected volumes shaped (N, C, X, Y, Z), got {volumes.shape}")
    rows = [middle_slices(v) for volume in volumes[:n] for v in volume]
    side = max(max(s.shape) for row in rows for s in row)
    tiles = np.zeros((len(rows) * len(VIEW_PLANES), side, side), dtype=np.float32)
    for i, image in enumerate(s for row in rows for s in row):
        top, left = (side - image.shape[0]) // 2, (side - image.shape[1]) // 2
        tiles[i, top:top + image.shape[0], left:left + image.shape[1]] = image
    return tile(np.clip(tiles, 0, 1), ncols=len(VIEW_PLANES), pad=pad)


def save_orthogonal_views(volumes: np.ndarray, path: Path, n: int = 4) -> None:
    """:func:`orthogonal_views` of ``volumes`` in [0, 1] as an 8-bit grey PNG."""
    with atomic_path(path, suffix=".png") as tmp:
        tmp.write_bytes(encode_png_gray8(to_uint8(orthogonal_views(volumes, n))))
