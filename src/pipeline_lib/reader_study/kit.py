"""Reader-study kit: a blinded set of real and synthetic slices, a web page, an answer key.

Which images the kit holds is composed in ``composition.py`` (the three seed designs) or
``design.py`` (the papers' per-reader kits, familiarisation set and blocks); this module turns
that composition into images, a page and an answer key.

Nothing in the kit tells real from synthetic: every PNG is 8-bit grayscale of
one size, stored uncompressed with the same filter, so file size and chunk
layout are identical for every image (compressed sizes would betray blurry
samples); no metadata chunk; 16-hex-digit names from a seeded RNG; files are
written in name order with one fixed modification time. The answer key is
written outside the kit folder.

The page (``page/``: index.html, app.js, style.css, plus a generated
kit.js holding the sorted image names and reading rules) works from file://
and from any static server. Reading rules: one image at a time in an order
seeded by the reader ID (:func:`reader_order` mirrors it); R/S or buttons;
optional 1-5 confidence, which then moves on; with ``time_limit_s`` the image
is hidden when the time is up and the answer is still asked for, flagged
``timed_out`` (Kazuhiro et al. showed each image for 10 s and asked afterwards);
``response_ms`` runs from the image appearing to the real/synthetic decision.
Progress lives in localStorage; a reload shows the current image afresh.
Export: one CSV per reader (``reader-<ID>-<kit_id>.csv``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np
import pandas as pd

from pipeline_lib.core.slices import channel_count, load_table, split_rows
from pipeline_lib.core.errors import InputError
from pipeline_lib.core.figures import PNG_SIGNATURE as _PNG_SIGNATURE, encode_png_gray8 as _encode_png
from pipeline_lib.core.io import write_json, write_tsv
from pipeline_lib.core.guard import read_failure
from pipeline_lib.core.settings import REAL, SYNTHETIC, ReaderStudySettings, read_settings
from pipeline_lib.reader_study.composition import compose_kit
from pipeline_lib.reader_study.design import compose_design

log = logging.getLogger(__name__)

KEY_COLUMNS = ["image", "kit_id", "truth", "source", "block", "group", "source_index"]
PAGE_FILES = ("index.html", "app.js", "style.css")
# One fixed modification time (2000-01-01) for every kit file: write order must not show.
_FIXED_MTIME = 946684800
_INTERPOLATION = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR}


# ----- names ----------------------------------------------------------------

def opaque_names(n: int, seed: int) -> list[str]:
    """``n`` distinct random 16-hex-digit names from a seeded RNG (independent of any class)."""
    rng = np.random.default_rng([seed, 1])
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        name = rng.bytes(8).hex()
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def kit_identifier(names: Sequence[str], pngs: Mapping[str, bytes] | None = None) -> str:
    """Short fingerprint of a kit's image list and, when given, its image bytes.

    Responses carry it so they match their key: a kit rebuilt with other images
    (a retrained model) gets a new identifier, and older answers are refused
    instead of being scored against the wrong truth.
    """
    digest = hashlib.sha256("\n".join(sorted(names)).encode())
    for name in sorted(pngs or {}):
        digest.update(hashlib.sha256(pngs[name]).digest())
    return digest.hexdigest()[:12]


# ----- per-reader order (mirrors app.js) ------------------------------------

def reader_order(kit_id: str, reader_id: str, names: Sequence[str],
                 blocks: Mapping[str, int] | None = None) -> list[str]:
    """The order in which the page shows ``names`` (sorted) to ``reader_id``; with ``blocks``
    (image -> block number) block by block, shuffled within each.

    Same algorithm as app.js (FNV-1a seed, mulberry32, Fisher-Yates, then a stable sort by block),
    so tests and coordinators can check that a response file follows its reader's order.
    """
    order = sorted(names)
    next_float = _mulberry32(_fnv1a(f"{kit_id}:{reader_id}"))
    for i in range(len(order) - 1, 0, -1):
        j = int(next_float() * (i + 1))
        order[i], order[j] = order[j], order[i]
    if blocks:
        order.sort(key=lambda name: blocks[name])
    return order


def _fnv1a(text: str) -> int:
    value = 0x811C9DC5
    for byte in text.encode("utf-8"):
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def _mulberry32(state: int):
    mask = 0xFFFFFFFF

    def next_float() -> float:
        nonlocal state
        state = (state + 0x6D2B79F5) & mask
        t = ((state ^ (state >> 15)) * (1 | state)) & mask
        t = ((t + (((t ^ (t >> 7)) * (61 | t)) & mask)) & mask) ^ t
        return ((t ^ (t >> 14)) & mask) / 4294967296.0

    return next_float


# ----- PNG ------------------------------------------------------------------

def display_pixels(image: np.ndarray, height: int, width: int, interpolation: str = "bilinear") -> np.ndarray:
    """A [0, 1] float image resized to ``height`` x ``width`` and quantised to uint8. A stacked
    image (C, H, W) shows its channels side by side, each ``height`` x ``width``, in channel order
    (a radiologist reads all sequences of a case together): the picture is C x ``width`` wide."""
    if np.ndim(image) == 3:
        return np.concatenate([display_pixels(channel, height, width, interpolation) for channel in image], axis=1)
    resized = cv2.resize(np.asarray(image, dtype=np.float32), (width, height),
                         interpolation=_INTERPOLATION[interpolation])
    return np.round(np.clip(resized, 0.0, 1.0) * 255.0).astype(np.uint8)


def kit_png(pixels: np.ndarray) -> bytes:
    """A kit image: 8-bit grey PNG stored uncompressed, so its byte count depends on the image size
    only and never hints at its source."""
    return _encode_png(pixels, level=0)


def png_chunks(data: bytes) -> list[tuple[str, int]]:
    """(chunk type, length) of every chunk of a PNG file, in order."""
    if data[:8] != _PNG_SIGNATURE:
        raise ValueError("not a PNG file")
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks.append((kind.decode("latin-1"), length))
        pos += 12 + length
    return chunks


# ----- loading the pools ----------------------------------------------------

def real_pool(table: Path, group_by: str | None) -> pd.DataFrame:
    """Real test-split rows of slices.tsv as a pool (index = row in images.npy, group label)."""
    frame = load_table(table)
    try:
        rows = split_rows(frame, "test")
    except InputError as error:
        raise InputError(f"{table}: {error}") from None
    return pd.DataFrame({"index": rows, "group": _group_values(frame.loc[rows], group_by, table)})


def _group_values(frame: pd.DataFrame, group_by: str | None, table: Path) -> np.ndarray:
    if group_by is None:
        return np.full(len(frame), "", dtype=object)
    if group_by not in frame.columns:
        raise InputError(f"{table}: reader_study.group_by names column {group_by!r}, which is not there "
                         f"(columns: {', '.join(map(str, frame.columns))})")
    return frame[group_by].astype(str).to_numpy()


def synthetic_pool(samples: Path, labels: Path, group_by: str | None) -> pd.DataFrame:
    """A model's samples as a pool; its class labels become groups when ``group_by`` is set."""
    data = _load_stack(samples)
    table = pd.read_csv(labels, sep="\t", dtype=str, keep_default_na=False)
    if "label" not in table.columns or len(table) != len(data):
        raise InputError(f"{labels}: expected a 'label' column with one row per sample of {samples} "
                         f"({len(data)}), found columns {list(table.columns)} and {len(table)} rows")
    groups = table["label"].to_numpy(dtype=object) if group_by is not None else np.full(len(data), "", dtype=object)
    return pd.DataFrame({"index": np.arange(len(data)), "group": groups})


def _load_stack(path: Path) -> np.ndarray:
    try:
        data = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: cannot read as a .npy image stack ({error})") from None
    if data.ndim not in (3, 4) or data.shape[0] == 0:
        raise InputError(f"{path}: expected an (N, H, W) (or stacked (N, C, H, W)) image stack, got shape {data.shape}")
    return data


# ----- the kit --------------------------------------------------------------

def build_kit(images: Path, table: Path, samples: Mapping[str, tuple[Path, Path]], settings: ReaderStudySettings | Mapping, *,
              kit_dir: Path, answer_key: Path, summary: Path) -> dict:
    """The reader_kit rule: write the kit folder, the answer key (outside it) and a summary.

    ``samples`` maps model name -> (samples.npy, labels.tsv). Returns the summary.
    """
    settings = read_settings(ReaderStudySettings, settings)
    check_key_outside(kit_dir, answer_key)
    group_by = settings.group_by
    stacks = {REAL: _load_stack(Path(images))}
    pools = {REAL: real_pool(Path(table), group_by)}
    sources = {REAL: str(images)}
    if len(stacks[REAL]) != len(load_table(Path(table))):
        raise InputError(f"{images} has {len(stacks[REAL])} images but {table} has a different number of rows")
    for model, (sample_path, label_path) in sorted(samples.items()):
        stacks[model] = _load_stack(Path(sample_path))
        pools[model] = synthetic_pool(Path(sample_path), Path(label_path), group_by)
        sources[model] = str(sample_path)
        if stacks[model].shape[1:] != stacks[REAL].shape[1:]:
            raise InputError(f"{sample_path}: images are {stacks[model].shape[1:]} but the real slices in "
                             f"{images} are {stacks[REAL].shape[1:]}; every kit image must come from the same size")
    kit, training = compose_named(pools, settings, sources, suffix=".png")
    height, width = _display_shape(stacks[REAL].shape[-2:], settings.display_size)
    pngs = {}
    for row in pd.concat([kit, training], ignore_index=True).itertuples(index=False):
        image = np.asarray(stacks[row.source][int(row.source_index)], dtype=np.float32)
        if not np.isfinite(image).all():
            raise InputError(f"{sources[row.source]}: image {row.source_index} holds NaN or infinite values")
        pngs[row.image] = kit_png(display_pixels(image, height, width, settings.interpolation))
    width *= channel_count(stacks[REAL])  # a stacked image's channels side by side (display_pixels)
    return write_kit(kit, training, pngs, settings, {"image_height": height, "image_width": width},
                     kit_dir=kit_dir, answer_key=answer_key, summary=summary)


def check_key_outside(kit_dir: Path, answer_key: Path) -> None:
    """The answer key must never ship with the kit."""
    kit_dir, answer_key = Path(kit_dir).resolve(), Path(answer_key).resolve()
    if answer_key.is_relative_to(kit_dir):
        raise InputError(f"the answer key {answer_key} must not lie inside the kit folder {kit_dir}")


def compose_named(pools: Mapping[str, pd.DataFrame], settings: ReaderStudySettings, sources: Mapping[str, str],
                  suffix: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The scored composition and the familiarisation set of ``pools`` (``REAL`` and every model's),
    each row given its opaque file name (``image``, ending in ``suffix``) from the seeded names."""
    synthetic = {m: p for m, p in pools.items() if m != REAL}
    training = pd.DataFrame(columns=["truth", "source", "block", "group", "source_index"])
    if is_designed(settings):
        # Seeds 002/004's designs (design.py): per-reader sets, blocks, a familiarisation set.
        # Each reader's images get their own names, so a key row is one reader's image with one block.
        design = compose_design(pools[REAL], synthetic, settings, sources)
        training = design["familiarisation"]
        kit = pd.concat([frame.assign(reader_id=reader or "") for reader, frame in design["readers"].items()],
                        ignore_index=True)
    else:
        kit = compose_kit(pools[REAL], synthetic, settings, sources)
    names = [f"{name}{suffix}" for name in opaque_names(len(kit) + len(training), settings.seed)]
    kit.insert(0, "image", names[:len(kit)])
    training = training.assign(image=names[len(kit):])
    return kit, training


def write_kit(kit: pd.DataFrame, training: pd.DataFrame, files: Mapping[str, bytes], settings: ReaderStudySettings,
              view: Mapping, *, kit_dir: Path, answer_key: Path, summary: Path, folder: str = "images",
              page_files: Sequence[str] = PAGE_FILES, details: Mapping | None = None) -> dict:
    """Write a composed kit: its files (name -> bytes, under ``folder``), the page with ``view`` (what
    the page needs to display them: slice kits their size, volume kits their grid), the answer key
    outside the folder and the summary (with ``view`` and ``details``). Returns the summary."""
    kit = kit.copy()
    kit_id = kit_identifier(list(kit["image"]) + list(training["image"]), files)
    kit.insert(1, "kit_id", kit_id)
    page = {**_page_config(kit_id, sorted(kit["image"]), settings), **view}
    if settings.reader_ids is not None:
        page["readers"] = {r: sorted(kit.loc[kit["reader_id"] == r, "image"]) for r in settings.reader_ids}
    if "block_order" in kit.columns:
        page["image_blocks"] = {name: int(b) for name, b in sorted(zip(kit["image"], kit["block_order"]))}
    if len(training):
        page["familiarisation"] = [{"image": i, "truth": t} for i, t in zip(training["image"], training["truth"])]
    _write_kit_folder(Path(kit_dir).resolve(), files, page, settings, folder, page_files)
    columns = KEY_COLUMNS + (["reader_id"] if settings.reader_ids is not None else [])
    write_tsv(Path(answer_key).resolve(), kit.sort_values("image")[columns])
    info = {**_summary(kit, kit_id, settings), **view, **(details or {})}
    info["n_familiarisation"] = int(len(training))
    info["familiarisation_per_source"] = {str(k): int(v) for k, v in training.groupby("source").size().items()}
    if settings.reader_ids is not None:
        info["readers"] = {r: _composition(kit[kit["reader_id"] == r]) for r in settings.reader_ids}
    if "block_order" in kit.columns:
        info["blocks"] = [str(b) for b in kit.sort_values("block_order")["block"].drop_duplicates()]
    write_json(summary, info)
    log.info("reader-study kit %s: %d %s (%s preset)", kit_id, len(kit), folder, settings.preset)
    return info


def is_designed(settings: ReaderStudySettings) -> bool:
    """Whether the kit follows a seed's design (per-reader sets, blocks, familiarisation) rather than
    one composition of the preset."""
    return settings.reader_ids is not None or settings.n_familiarisation > 0 or settings.blocks != "none"


def _composition(kit: pd.DataFrame) -> dict:
    n = int(len(kit))
    n_synthetic = int((kit["truth"] == SYNTHETIC).sum())
    return {"n_images": n, "n_real": n - n_synthetic, "n_synthetic": n_synthetic,
            "synthetic_fraction": n_synthetic / n if n else float("nan")}


def _display_shape(shape: tuple[int, ...], display_size: int) -> tuple[int, int]:
    """``display_size`` pixels high; width keeps the aspect ratio."""
    height, width = shape
    return display_size, max(1, int(round(display_size * width / height)))


def kit_page_config(kit_id: str, names: Sequence[str], height: int, width: int, settings: ReaderStudySettings) -> dict:
    """What app.js needs: opaque image names (sorted), display size and the reading rules."""
    return {**_page_config(kit_id, names, settings), "image_height": height, "image_width": width}


def _page_config(kit_id: str, names: Sequence[str], settings: ReaderStudySettings) -> dict:
    """The page's fields every kit has: opaque names (sorted) and the reading rules."""
    return {
        "format_version": 1,
        "kit_id": kit_id,
        "title": settings.title,
        "images": sorted(names),
        "time_limit_s": settings.time_limit_s,
        "ask_confidence": bool(settings.ask_confidence),
    }


def page_template(name: str) -> str:
    """Text of one shipped page file (package data under pipeline_lib/reader_study/page/)."""
    return resources.files("pipeline_lib.reader_study").joinpath("page", name).read_text(encoding="utf-8")


def _write_kit_folder(kit_dir: Path, files: Mapping[str, bytes], page: Mapping, settings: ReaderStudySettings,
                      folder: str, page_files: Sequence[str]) -> None:
    """Build the folder beside its destination and swap it in, so a killed job leaves no half kit."""
    kit_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kit_dir.name}.", dir=kit_dir.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        (tmp / folder).mkdir()
        # Name order, not composition order: creation order must not group the classes.
        for name in sorted(files):
            (tmp / folder / name).write_bytes(files[name])
        for name in page_files:
            (tmp / name).write_text(page_template(name), encoding="utf-8")
        (tmp / "kit.js").write_text(
            f"// Generated by pipeline_lib.reader_study.kit: the {folder} list (opaque names) and reading rules.\n"
            f"window.READER_KIT = {json.dumps(dict(page), sort_keys=True, indent=1)};\n", encoding="utf-8")
        (tmp / "README.txt").write_text(_coordinator_readme(page, settings, folder), encoding="utf-8")
        for path in sorted(tmp.rglob("*")):
            os.utime(path, (_FIXED_MTIME, _FIXED_MTIME))
        if kit_dir.exists():
            shutil.rmtree(kit_dir)
        os.replace(tmp, kit_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _coordinator_readme(page: Mapping, settings: ReaderStudySettings, noun: str) -> str:
    limit = page["time_limit_s"]
    return "\n".join([
        f"Reader-study kit {page['kit_id']} ({len(page['images'])} {noun})",
        "",
        "For the study coordinator:",
        "1. Send this whole folder (e.g. zipped) to every reader. It needs no internet and no installation.",
        "2. Each reader opens index.html in a current web browser (double-click, or serve the folder",
        "   with any static web server) and follows the instructions on the page.",
        "3. Answers are kept in the reader's browser until downloaded; at the end the page downloads one",
        f"   CSV file per reader (reader-<ID>-{page['kit_id']}.csv). Collect these files into the pipeline's",
        # The kit rule leaves the scoring keys out of its settings (changing them must not rebuild the
        # kit), so responses_dir here is only the default: the report names the folder in use.
        f"   reader-responses folder (reader_study.responses_dir, '{settings.responses_dir}/' unless configured;",
        "   with kits of several datasets, its sub-folder named after the dataset; the comparison report's",
        "   Reader study section names it) and rerun the pipeline to score them.",
        "",
        f"Time limit per image: {f'{limit:g} s (the image is hidden afterwards; the answer is still asked for)' if limit else 'none'}.",
        f"Confidence (1-5) asked: {'yes' if page['ask_confidence'] else 'no'}.",
        "The answer key is not part of this folder; keep it away from the readers.",
        "",
    ])


def _summary(kit: pd.DataFrame, kit_id: str, settings: ReaderStudySettings) -> dict:
    counts = kit.groupby("source").size()
    return {
        "kit_id": kit_id,
        "preset": settings.preset,
        "seed": settings.seed,
        "n_images": int(len(kit)),
        "n_real": int((kit["truth"] == REAL).sum()),
        "n_synthetic": int((kit["truth"] == SYNTHETIC).sum()),
        "synthetic_fraction": float((kit["truth"] == SYNTHETIC).mean()),
        "per_source": {str(k): int(v) for k, v in counts.items()},
        "interpolation": settings.interpolation,
        "time_limit_s": settings.time_limit_s,
        "ask_confidence": bool(settings.ask_confidence),
        "group_by": settings.group_by,
    }


def reader_kit_job(images: Path, table: Path, sample_files: Sequence[str | Path], label_files: Sequence[str | Path],
                   models: Sequence[str], settings: Mapping, *, kit_dir: Path, answer_key: Path,
                   summary: Path) -> dict:
    """The rule's entry point: pair the per-model sample and label files by ``models`` order."""
    if not (len(models) == len(sample_files) == len(label_files)):
        raise InputError(f"reader_kit: {len(models)} models but {len(sample_files)} sample and "
                         f"{len(label_files)} label files")
    # a run that failed (core/guard.py) has a failed record for samples: the kit goes on without it
    samples = {m: (Path(s), Path(lab)) for m, s, lab in zip(models, sample_files, label_files)
               if read_failure(s) is None}
    return build_kit(Path(images), Path(table), samples, settings, kit_dir=Path(kit_dir),
                     answer_key=Path(answer_key), summary=Path(summary))
