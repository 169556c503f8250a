"""Peak resident memory and speed of Kazuhiro et al.'s augmentation against ``count``.

    PYTHONPATH=src python bench/augmentation_rss.py [--counts 100,1000,48510] [--subjects 8]
        [--batches 20] [--workers 0] [--offline-counts 100,1000]

A phantom cohort (``--subjects`` smooth noisy ellipsoid "heads" on the preset's registered grid,
128 x 152 x 128 voxels of 1.5 mm, half of them training subjects) is sliced with the preset's
dataset block (``presets/kazuhiro_2018.yaml``, ``basal_ganglia``: 5 sections at MNI z = +4 mm,
64 px, the paper's rotation grid) at each ``count``. Each step runs in a fresh Python process
(``--worker``) that reports its own peak resident set (``VmHWM``):

* ``slice``: ``build_slice_dataset`` (the slice_dataset rule's function);
* ``loader``: the train job's data path: the train split opened as the trainer gets it
  (``imaging.augmentation.open_training_split`` on the fly, ``core.slices.open_split`` offline),
  the trainer's ``BatchStream`` over it (its permutation of every image of the split), and
  ``--batches`` batches of the preset's 128 images through ``models.loader.batch_loader``;
  images/s is the batches' images over their wall time.

``on_the_fly`` runs at every ``--counts``; ``offline`` (every image written by slicing) at
``--offline-counts`` for comparison (at 48,510 it writes 0.8 GB per training volume). The machine
this ran on is shared: images/s are indicative. Writes ``bench/results/augmentation_rss.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GRID, SPACING = (128, 152, 128), 1.5
BATCH = 128


def preset_dataset(count: int, mode: str) -> dict:
    import yaml

    preset = yaml.safe_load((REPO / "presets/kazuhiro_2018.yaml").read_text())
    block = dict(preset["datasets"]["basal_ganglia"])
    block["augmentation"] = {**block["augmentation"], "count": count, "mode": mode}
    return block


def phantom_cohort(folder: Path, n: int) -> dict[str, Path]:
    import nibabel as nib

    affine = np.diag([SPACING] * 3 + [1.0])
    affine[:3, 3] = [-(g - 1) * SPACING / 2 for g in GRID]
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, g, dtype=np.float32) for g in GRID], indexing="ij"))
    radius = np.sqrt((grid ** 2).sum(axis=0))
    del grid
    out = {}
    for i in range(n):
        rng = np.random.default_rng(i)
        data = np.where(radius < 0.85, 40 + 20 * rng.random(GRID, dtype=np.float32), 0.0).astype(np.float32)
        data += 80 * (np.abs(radius - 0.8) < 0.04)
        path = folder / f"sub-{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), str(path))
        out[f"sub-{i:03d}"] = path
    return out


def paths(folder: Path) -> dict[str, Path]:
    return {k: folder / f for k, f in (("images", "images.npy"), ("table", "slices.tsv"),
                                       ("volumes", "volumes.npy"), ("index", "volumes.json"))}


def slice_worker(cohort: Path, folder: Path, count: int, mode: str) -> dict:
    from pipeline_lib.imaging.slicing import SliceSpec, build_slice_dataset

    registered = {p.name.split(".")[0]: p for p in sorted(cohort.glob("sub-*.nii.gz"))}
    folder.mkdir(parents=True, exist_ok=True)
    files = paths(folder)
    started = time.perf_counter()
    table = build_slice_dataset(registered, None, files["images"], files["table"],
                                SliceSpec.from_settings(preset_dataset(count, mode)),
                                out_volumes=files["volumes"], out_volume_index=files["index"])
    return {"seconds": time.perf_counter() - started, "peak_rss_mb": peak_rss_mb(), "table_rows": len(table),
            "images_mb": files["images"].stat().st_size / 2 ** 20,
            "volumes_mb": files["volumes"].stat().st_size / 2 ** 20}


def loader_worker(folder: Path, batches: int, workers: int) -> dict:
    import torch

    from pipeline_lib.core.slices import open_split
    from pipeline_lib.imaging.augmentation import open_training_split
    from pipeline_lib.models.loader import batch_loader, take
    from pipeline_lib.models.training import BatchStream

    files = paths(folder)
    before = peak_rss_mb()
    split = (open_training_split(files["images"], files["table"], files["volumes"], files["index"])
             or open_split(files["images"], files["table"], "train", augmented=True))
    images = split[0]
    stream = BatchStream(len(images), BATCH, torch.Generator().manual_seed(0))
    loader = iter(batch_loader(stream, images, None, seed=0, device=torch.device("cpu"), workers=workers))
    take(loader, stream)  # the first batch starts the workers; not timed
    started = time.perf_counter()
    for _ in range(batches):
        x, _ = take(loader, stream)
        assert x.shape[0] == stream.batch_size and torch.isfinite(x).all()
    seconds = time.perf_counter() - started
    return {"train_images": len(images), "rss_before_mb": before, "peak_rss_mb": peak_rss_mb(),
            "images_per_s": batches * stream.batch_size / seconds}


def peak_rss_mb() -> float:
    """The process's peak resident set (VmHWM); not ru_maxrss, which Linux carries over across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="100,1000,48510")
    parser.add_argument("--offline-counts", default="100,1000")
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/augmentation_rss.json")
    parser.add_argument("--slice-worker", nargs=4, metavar=("COHORT", "FOLDER", "COUNT", "MODE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--loader-worker", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.slice_worker:
        cohort, folder, count, mode = args.slice_worker
        print(json.dumps(slice_worker(Path(cohort), Path(folder), int(count), mode)))
        return
    if args.loader_worker:
        print(json.dumps(loader_worker(Path(args.loader_worker), args.batches, args.workers)))
        return

    runs = [("on_the_fly", int(c)) for c in args.counts.split(",") if c]
    runs += [("offline", int(c)) for c in args.offline_counts.split(",") if c]
    rows = []
    with tempfile.TemporaryDirectory(prefix="augmentation_rss_") as tmp:
        cohort = Path(tmp) / "cohort"
        cohort.mkdir()
        phantom_cohort(cohort, args.subjects)
        for mode, count in runs:
            folder = Path(tmp) / f"{mode}-{count}"
            sliced = child("--slice-worker", str(cohort), str(folder), str(count), mode)
            loaded = child("--loader-worker", str(folder), "--batches", str(args.batches),
                           "--workers", str(args.workers))
            rows.append({"mode": mode, "count": count, "train_images": loaded["train_images"],
                         "images_mb": round(sliced["images_mb"], 1), "volumes_mb": round(sliced["volumes_mb"], 1),
                         "slice_peak_rss_mb": round(sliced["peak_rss_mb"]),
                         "slice_seconds": round(sliced["seconds"], 1),
                         "loader_rss_before_mb": round(loaded["rss_before_mb"]),
                         "loader_peak_rss_mb": round(loaded["peak_rss_mb"]),
                         "images_per_s": round(loaded["images_per_s"])})
            print(rows[-1], flush=True)
            shutil.rmtree(folder)

    from pipeline_lib.core.io import atomic_path

    load = os.getloadavg()[0]
    meta = {"load_average_1min_at_end": round(load, 1), "subjects": args.subjects, "grid": GRID,
            "spacing_mm": SPACING, "batch": BATCH,
            "batches": args.batches, "workers": args.workers, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp, open(tmp, "w") as fh:
        json.dump(meta, fh, indent=1)
    lines = [f"{args.subjects} phantom subjects ({args.subjects // 2} training), grid {GRID[0]}×{GRID[1]}×{GRID[2]} "
             f"at {SPACING} mm, the preset's basal_ganglia dataset (64 px); loader: {args.batches} batches of "
             f"{BATCH}, {args.workers} worker(s); load average {load:.1f} at the end (shared machine).", "",
             "| mode | count | train images | images.npy (MB) | volumes.npy (MB) | slice peak RSS (MB) | "
             "slice s | loader peak RSS (MB) | loader images/s |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['count']:,} | {r['train_images']:,} | {r['images_mb']} | {r['volumes_mb']} | "
              f"{r['slice_peak_rss_mb']} | {r['slice_seconds']} | {r['loader_peak_rss_mb']} | {r['images_per_s']} |"
              for r in rows]
    with atomic_path(args.out.with_suffix(".md")) as tmp, open(tmp, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
