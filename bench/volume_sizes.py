"""Disk and memory of volume datasets (``datasets.<name>`` with ``kind: volume``), on paper and measured.

    PYTHONPATH=src python bench/volume_sizes.py [--measure 8,32] [--grid 96,112,96]
        [--out bench/results/volume_sizes.json]

On paper (arithmetic, no data): for the demo and for published sizes, the bytes of ``volumes.npy``
(N x C x X x Y x Z float32, plus the 128-byte .npy header), the building job's memory request
(core.volumes.volume_dataset_mb: flat in N) and what one training batch of volumes holds (batch x
C x X x Y x Z float32, the loader's read; a model's activations come on top and are measured with the
3-D families). Published sizes: Pinaya et al. 2022 (UK Biobank, 31,740 T1 volumes, 160 x 224 x 160
voxels), the MNI152 2009a template grid at 1 mm (197 x 233 x 189, the registration template) and BraTS
(4 sequences, 240 x 240 x 155).

Measured (``--measure``): for each cohort size N a fresh Python process builds a volume dataset of
N synthetic registered volumes on ``--grid`` (imaging.volumes.build_volume_dataset, whole grid) and
reports its peak resident memory (VmHWM) and wall time, so flat memory in N can be checked.
Writes the JSON to ``--out`` and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOAT32 = 4
NPY_HEADER = 128
MB, GB = 1024 ** 2, 1024 ** 3

#: (name, subjects, channels, grid, source of the numbers)
CASES = [
    ("demo, 32 a side", 12, 1, (32, 32, 32), "demo cohort (12 phantoms), box [32, 32, 32]"),
    ("demo, 48 a side", 12, 1, (48, 48, 48), "demo cohort (12 phantoms), box [48, 48, 48]"),
    ("BraTS, 4 sequences", 1251, 4, (240, 240, 155), "BraTS 2021 training cases, 1 mm"),
    ("MNI152 2009a grid, 1 mm", 31740, 1, (197, 233, 189), "UK Biobank size on the registration template's grid"),
    ("Pinaya et al. 2022", 31740, 1, (160, 224, 160), "UK Biobank T1, Pinaya et al. 2022 (31,740 subjects)"),
]
BATCH = 2  # Pinaya et al.'s LDM trained with small batches per GPU; memory scales linearly with it


def on_paper(cases=CASES, batch: int = BATCH) -> list[dict]:
    from pipeline_lib.core.volumes import volume_dataset_mb

    rows = []
    for name, subjects, channels, grid, source in cases:
        volume_bytes = channels * math.prod(grid) * FLOAT32
        rows.append({
            "case": name, "source": source, "subjects": subjects, "channels": channels, "grid": list(grid),
            "volume_mb": round(volume_bytes / MB, 2),
            "dataset_gb": round((subjects * volume_bytes + NPY_HEADER) / GB, 3),
            "build_request_mb": round(volume_dataset_mb(grid, None)),
            "batch_mb": round(batch * volume_bytes / MB, 1), "batch": batch,
        })
    return rows


def _worker(n: int, grid: tuple[int, int, int], folder: Path) -> dict:
    """Build a volume dataset of ``n`` synthetic volumes in this process; its peak RSS and time."""
    import nibabel as nib
    import numpy as np

    from pipeline_lib.core.volumes import VolumeDatasetSettings
    from pipeline_lib.imaging.volumes import build_volume_dataset

    rng = np.random.default_rng(0)
    registered = {}
    for i in range(n):
        data = np.zeros(grid, np.float32)
        inner = tuple(slice(s // 4, 3 * s // 4) for s in grid)
        data[inner] = rng.random(data[inner].shape, dtype=np.float32) + 0.5
        path = folder / f"sub-{i:010x}.nii"
        nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0])), str(path))
        registered[f"sub-{i:010x}"] = path
    before = _peak_kb()
    start = time.perf_counter()
    build_volume_dataset(registered, None, folder / "out/volumes.npy", folder / "out/volumes.tsv",
                         folder / "out/grid.json", VolumeDatasetSettings())
    seconds = time.perf_counter() - start
    size = (folder / "out/volumes.npy").stat().st_size
    return {"subjects": n, "grid": list(grid), "seconds": round(seconds, 2), "dataset_mb": round(size / MB, 1),
            "peak_rss_mb": round(_peak_kb() / 1024, 1), "peak_rss_before_build_mb": round(before / 1024, 1)}


def _peak_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def measure(sizes: list[int], grid: tuple[int, int, int]) -> list[dict]:
    out = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as folder:
            result = subprocess.run([sys.executable, __file__, "--worker", str(n), "--grid", ",".join(map(str, grid)),
                                     "--folder", folder], check=True, capture_output=True, text=True)
            out.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return out


def markdown(result: dict) -> str:
    lines = ["# Volume datasets: disk and memory", "",
             f"Command: `{result['command']}`", "",
             "## On paper (float32, N x C x X x Y x Z)", "",
             "| case | subjects | C | grid | one volume | volumes.npy | build job request | a batch of "
             f"{BATCH} |", "|---|---|---|---|---|---|---|---|"]
    for row in result["on_paper"]:
        lines.append(f"| {row['case']} | {row['subjects']:,} | {row['channels']} | {'x'.join(map(str, row['grid']))} | "
                     f"{row['volume_mb']} MB | {row['dataset_gb']} GB | {row['build_request_mb']:,} MB | "
                     f"{row['batch_mb']} MB |")
    lines += ["", "Sources: " + "; ".join(f"{row['case']}: {row['source']}" for row in result["on_paper"]) + ".", ""]
    if result.get("measured"):
        lines += ["## Measured: building a volume dataset (whole grid, synthetic volumes)", "",
                  "| subjects | grid | volumes.npy | peak RSS | RSS before the build | seconds |",
                  "|---|---|---|---|---|---|"]
        for row in result["measured"]:
            lines.append(f"| {row['subjects']} | {'x'.join(map(str, row['grid']))} | {row['dataset_mb']} MB | "
                         f"{row['peak_rss_mb']} MB | {row['peak_rss_before_build_mb']} MB | {row['seconds']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", default="", help="cohort sizes to build and measure, e.g. 8,32 (empty: none)")
    parser.add_argument("--grid", default="96,112,96", help="grid of the measured synthetic volumes")
    parser.add_argument("--out", default="bench/results/volume_sizes.json")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    grid = tuple(int(v) for v in args.grid.split(","))
    if args.worker is not None:
        print(json.dumps(_worker(args.worker, grid, Path(args.folder))))
        return
    from pipeline_lib.core.io import write_json, write_text

    sizes = [int(v) for v in args.measure.split(",") if v]
    result = {"command": "PYTHONPATH=src python bench/volume_sizes.py " + " ".join(sys.argv[1:]),
              "on_paper": on_paper(), "measured": measure(sizes, grid) if sizes else []}
    write_json(args.out, result)
    write_text(Path(args.out).with_suffix(".md"), markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
