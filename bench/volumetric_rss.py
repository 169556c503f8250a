"""Peak memory of the volumetric evaluation of one 3-D run against cohorts of growing size.

    PYTHONPATH=src python bench/volumetric_rss.py [--sizes 32,256] [--side 64] [--samples 8]
        [--out bench/results/volumetric_rss.json]

For each cohort size N the parent writes a volume dataset of N training and 4 test synthetic volumes
of ``--side`` voxels a side (volumes.npy written a volume at a time, volumes.tsv, grid.json) and
``--samples`` sampled volumes; a fresh Python process then runs evaluation/volumetric.volumetric_job
on them and reports its peak resident memory (VmHWM), the resident memory before the job and the
wall time. The slice features are 4 x 4 mean-pooled pixels instead of the FID Inception's (whose
weights and activations are a fixed ~2.5 GB on top, core.resources.INCEPTION_MB, the same for
every N; on 2 CPU cores Inception alone would take most of an hour at N = 256), so what grows with
N is what the job itself holds. Writes the JSON to ``--out`` and a Markdown table beside it, with
the job's request (core.volumes.volumetric_evaluation_mb) for comparison.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1024 ** 2
TEST = 4


def _phantom(rng, side: int):
    import numpy as np

    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, side)] * 3, indexing="ij"))
    radii = rng.uniform(0.55, 0.9, 3)[:, None, None, None]
    inside = ((grid / radii) ** 2).sum(axis=0) <= 1
    texture = 0.5 + 0.2 * np.sin(grid[0] * rng.uniform(2, 6)) * np.cos(grid[1] * rng.uniform(2, 6))
    return np.where(inside, texture, 0.0).astype(np.float32)[None]


def write_cohort(folder: Path, n_train: int, side: int, n_samples: int) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    total = n_train + TEST
    np.lib.format.open_memmap(folder / "volumes.npy", mode="w+", dtype=np.float32, shape=(total, 1, side, side, side))
    for i in range(total):
        target = np.load(folder / "volumes.npy", mmap_mode="r+")
        target[i] = _phantom(rng, side)
        target.flush()
        del target
    pd.DataFrame({"row": range(total), "subject": [f"sub-{i:010x}" for i in range(total)],
                  "split": ["train"] * n_train + ["test"] * TEST, "augmented": 0, "sequence": "t1"}
                 ).to_csv(folder / "volumes.tsv", sep="\t", index=False)
    (folder / "grid.json").write_text(json.dumps({"shape": [side] * 3, "spacing_mm": [2.0] * 3,
                                                  "affine": np.diag([2.0, 2.0, 2.0, 1.0]).tolist()}))
    np.save(folder / "samples.npy", np.stack([_phantom(rng, side) for _ in range(n_samples)]))


def _pooled(slices):
    import numpy as np

    images = np.asarray(slices[:], dtype=np.float64)
    n, h, w = images.shape
    return images[:, :h - h % 4, :w - w % 4].reshape(n, h // 4, 4, w // 4, 4).mean(axis=(2, 4)).reshape(n, -1)


def _peak_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _worker(folder: Path) -> dict:
    import numpy as np

    from pipeline_lib.core.volumes import volumetric_evaluation_mb
    from pipeline_lib.evaluation import volumetric  # noqa: F401 (its imports before the baseline)
    from pipeline_lib.evaluation.pixel_metrics import laplacian_variance

    laplacian_variance(np.zeros((1, 4, 4), np.float32))  # cv2 imported before the baseline too
    import monai.metrics  # noqa: F401

    before = _peak_kb()
    start = time.perf_counter()
    volumetric.volumetric_job(folder / "samples.npy", folder / "volumes.npy", folder / "volumes.tsv",
                              folder / "grid.json", folder / "none.pth", out_json=folder / "out.json",
                              out_png=folder / "out.png", n_pairs=100, kernel_size=4,
                              features=_pooled)
    seconds = time.perf_counter() - start
    samples = np.load(folder / "samples.npy", mmap_mode="r").shape
    volumes = np.load(folder / "volumes.npy", mmap_mode="r").shape
    return {"train": volumes[0] - TEST, "test": TEST, "samples": samples[0], "side": samples[-1],
            "dataset_mb": round((folder / "volumes.npy").stat().st_size / MB, 1), "seconds": round(seconds, 1),
            "rss_before_mb": round(before / 1024, 1), "peak_rss_mb": round(_peak_kb() / 1024, 1),
            "request_mb_with_inception": round(volumetric_evaluation_mb(samples, volumes))}


def measure(sizes: list[int], side: int, n_samples: int) -> list[dict]:
    out = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as folder:
            write_cohort(Path(folder), n, side, n_samples)
            result = subprocess.run([sys.executable, __file__, "--worker", folder], check=True,
                                    capture_output=True, text=True)
            out.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return out


def markdown(result: dict) -> str:
    lines = ["# Volumetric evaluation: peak memory against the cohort's size", "",
             f"Command: `{result['command']}`", "",
             "Slice features: 4 x 4 mean pooling instead of the FID Inception (a fixed ~2.5 GB more for every "
             "cohort size, in the request's figure).", "",
             "| training volumes | test | samples | side | volumes.npy | RSS before the job | peak RSS | "
             "seconds | request (with Inception) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result["measured"]:
        lines.append(f"| {row['train']} | {row['test']} | {row['samples']} | {row['side']} | {row['dataset_mb']} MB | "
                     f"{row['rss_before_mb']} MB | {row['peak_rss_mb']} MB | {row['seconds']} | "
                     f"{row['request_mb_with_inception']:,} MB |")
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="32,256", help="training-volume counts to measure")
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--out", default="bench/results/volumetric_rss.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(Path(args.worker))))
        return
    from pipeline_lib.core.io import write_json, write_text

    result = {"command": "PYTHONPATH=src python " + " ".join(["bench/volumetric_rss.py", *sys.argv[1:]]),
              "measured": measure([int(v) for v in args.sizes.split(",")], args.side, args.samples)}
    out = Path(args.out)
    write_json(out, result)
    write_text(out.with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
