"""Peak resident memory of the train rule's data path against the number of training images.

    PYTHONPATH=src python bench/train_rss.py [--sizes 2000,16000] [--image-size 128] [--steps 5]

For each size N this synthesises a slice dataset of N float32 images (``images.npy`` written
block by block through ``np.lib.format.open_memmap``, so the synthesis never holds it either, and
a ``slices.tsv`` with every row in the train split), then runs, each in a fresh Python process
(``--worker``), a few steps of ``train_job`` (the train rule's function: the split is opened, the
data fingerprinted, batches read through the loader) on a small VAE, and records the process's
peak resident memory (``VmHWM``). With ``--reader both`` (default) it also measures the
previous data path, the whole split loaded as float32 (``core.slices.load_split``) and handed to
``train_model``, for comparison.

Peak RSS includes torch's own libraries (about 300–400 MB before any data). Writes
``bench/results/train_rss.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BLOCK = {"family": "vae", "budget": {"steps": 5}, "batch_size": 32, "seed": 0, "checkpoint_every": 10_000,
         "latent_dim": 16, "width": 8}


def synthesise(folder: Path, n: int, size: int) -> None:
    import pandas as pd

    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.float32, shape=(n, size, size))
    rng = np.random.default_rng(0)
    for start in range(0, n, 512):
        stop = min(n, start + 512)
        images[start:stop] = rng.random((stop - start, size, size), dtype=np.float32)
    images.flush()
    del images
    pd.DataFrame({"subject": [f"s{i // 40:05d}" for i in range(n)], "split": "train"}).to_csv(
        folder / "slices.tsv", sep="\t", index=False)


def worker(folder: Path, reader: str, steps: int) -> dict:
    from pipeline_lib.core.slices import load_split
    from pipeline_lib.models.training import train_job, train_model

    block = {**BLOCK, "budget": {"steps": steps}}
    before = peak_rss_mb()
    started = time.perf_counter()
    if reader == "loader":
        train_job("m", block, folder / "images.npy", folder / "slices.tsv", weights=folder / "w.pt",
                  losses=folder / "l.csv", summary=folder / "s.json", checkpoint_root=folder / "ck")
    else:
        images, _ = load_split(folder / "images.npy", folder / "slices.tsv", "train", augmented=True)
        train_model("m", block, images, None, folder / "w.pt", folder / "l.csv", folder / "ck",
                    data_files=[folder / "images.npy", folder / "slices.tsv"])
    return {"peak_rss_mb": peak_rss_mb(), "rss_before_mb": before, "seconds": time.perf_counter() - started}


def peak_rss_mb() -> float:
    """The process's peak resident set (VmHWM). Not ``ru_maxrss``: Linux carries that over from the
    parent across fork and exec, so the parent's mapped synthetic images would count."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,16000", help="numbers of training images, comma-separated")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--reader", choices=["loader", "load_split", "both"], default="both")
    parser.add_argument("--out", type=Path, default=Path("bench/results/train_rss.json"))
    parser.add_argument("--worker", nargs=2, metavar=("FOLDER", "READER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(Path(args.worker[0]), args.worker[1], args.steps)))
        return

    readers = ["loader", "load_split"] if args.reader == "both" else [args.reader]
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="train_rss_") as tmp:
            folder = Path(tmp)
            synthesise(folder, n, args.image_size)
            for reader in readers:
                done = subprocess.run([sys.executable, __file__, "--worker", str(folder), reader,
                                       "--steps", str(args.steps)], check=True, capture_output=True, text=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                data_mb = n * args.image_size ** 2 * 4 / 2 ** 20
                rows.append({"n_images": n, "image_size": args.image_size, "reader": reader,
                             "data_mb": round(data_mb, 1), **{k: round(v, 1) for k, v in result.items()}})
                print(rows[-1], flush=True)

    from pipeline_lib.core.io import atomic_path

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp, open(tmp, "w") as fh:
        json.dump({"steps": args.steps, "block": BLOCK, "rows": rows}, fh, indent=1)
    lines = ["| images | data (MB) | reader | peak RSS (MB) | seconds |", "|---|---|---|---|---|"]
    lines += [f"| {r['n_images']:,} × {r['image_size']}² | {r['data_mb']:.0f} | {r['reader']} | "
              f"{r['peak_rss_mb']:.0f} | {r['seconds']:.1f} |" for r in rows]
    with atomic_path(args.out.with_suffix(".md")) as tmp, open(tmp, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
