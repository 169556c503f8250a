"""Per-item costs of the evaluation jobs that no other bench times: the rates of core/resources.py's
time limits (docs/RESOURCES.md, "Time limits").

    PYTHONPATH=src nice -n 19 python bench/rule_rates.py [--image-size 64] [--out bench/results/rule_rates.json]

Each measurement runs one library job twice on a synthetic slice dataset (bench/eval_rss.py's), each
time in a fresh Python process with one thread, at two sizes of the one input the rate is about, and
takes the slope: (seconds at the larger size - seconds at the smaller) / (items between them), so
the interpreter's and torch's start-up (the formulas' fixed part) drops out. Seconds are timed
around the job call inside the worker. On a shared machine the slope is noisy; the formulas
multiply it by a safety factor (core/resources.RULE_SAFETY).

* ``cnn_step``: the domain network's training (evaluation.domain), 10 and 60 steps of batch 32:
  seconds per step and per MB of a float32 batch (the conditioning and utility classifiers are the
  same small CNN).
* ``domain_forward``: the real reference row in the domain feature space, 2,000 and 8,000 slices:
  seconds per slice and per MB (every slice of both splits goes through the network once).
* ``memorization``: 256 samples against 2,000 and 8,000 slices: seconds per (sample x training slice)
  pair and per MB of one image.
* ``ms_ssim_pair``: the real reference row's MS-SSIM, 200 and 4,000 pairs: seconds per pair per MB.
* ``intensity``: the samples' grey levels against 2,000 and 8,000 slices: seconds per slice per MB.
* ``fid_repeat``: one repeat of a repeated FID (two sets of 3,000 2,048-d features: their means,
  covariances and the Fréchet distance), 1 and 3 repeats: seconds per repeat.
* ``matmul``: a float64 matrix product of side 1,024 and 2,048: seconds per multiply-add (the
  feature statistics' dense algebra: FID, KID, PRDC).

``--only NAME,...`` measures those and keeps the other rows of an existing ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from eval_rss import N_SAMPLES, synthesise  # noqa: E402

#: name -> (what varies, the smaller and the larger value, the job)
MEASUREMENTS = {
    "cnn_step": ("steps", 10, 60),
    "domain_forward": ("slices", 2000, 8000),
    "memorization": ("slices", 2000, 8000),
    "ms_ssim_pair": ("pairs", 200, 4000),
    "intensity": ("slices", 2000, 8000),
    "matmul": ("matrix side", 1024, 2048),
    "fid_repeat": ("repeats", 1, 3),
}
NOTE = ("Each row is from the latest run that measured it (`--only` reruns keep the other rows); the load "
        "average is the latest run's.")
#: Measurements on features or matrices: no image dataset, no per-MB rate.
WITHOUT_IMAGES = {"matmul", "fid_repeat"}


def run_job(name: str, value: int, folder: Path, out: Path) -> float:
    """Seconds of one job call, as its rule calls it."""
    data = dict(images=folder / "images.npy", table=folder / "slices.tsv")
    network = folder / "network.pt"
    started = time.perf_counter()
    if name in ("cnn_step", "network"):
        from pipeline_lib.evaluation.domain_features import domain_network_job
        domain_network_job(**data, out_network=network if name == "network" else out / "network.pt", out_summary=out / "network.json",
                           settings={"steps": value, "batch_size": 32, "label_column": "sex"}, threads=1)
    elif name == "domain_forward":
        from pipeline_lib.evaluation.domain_features import domain_metrics_job
        domain_metrics_job(network, **data, out=out / "domain.json", settings={"n_reference": None}, threads=1)
    elif name == "memorization":
        from pipeline_lib.evaluation.memorization import memorization_job
        memorization_job(folder / "samples.npy", **data, network=network, out_audit=out / "memorization.json",
                         out_gallery=out / "memorization.png", settings={})
    elif name == "ms_ssim_pair":
        from pipeline_lib.evaluation.diversity import original_diversity_job
        original_diversity_job(**data, out=out / "diversity.json", settings={"n_pairs": value, "n_reference": None})
    elif name == "intensity":
        from pipeline_lib.evaluation.intensity import intensity_job
        intensity_job(folder / "samples.npy", **data, out=out / "intensity.json")
    elif name == "matmul":  # the feature statistics' dense algebra (float64, as the features)
        import numpy as np

        a = np.random.default_rng(0).random((value, value))
        started = time.perf_counter()
        a @ a
    elif name == "fid_repeat":  # one repeat of a repeated FID: two subsets' statistics and their distance
        import numpy as np

        from pipeline_lib.core.inception import feature_statistics, frechet_distance

        rng = np.random.default_rng(0)
        sets = [rng.standard_normal((3000, 2048)) for _ in range(2)]
        started = time.perf_counter()
        for _ in range(value):
            frechet_distance(*feature_statistics(sets[0]), *feature_statistics(sets[1]))
    else:
        raise ValueError(f"unknown measurement {name}")
    return time.perf_counter() - started


def measure(name: str, value: int, folder: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(dir=folder) as out:
        done = subprocess.run([sys.executable, __file__, "--worker", name, str(value), str(folder), out],
                              env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} at {value} failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--only", default=",".join(MEASUREMENTS))
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/rule_rates.json")
    parser.add_argument("--worker", nargs=4, metavar=("NAME", "VALUE", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(1)
        name, value, folder, out = args.worker
        print(run_job(name, int(value), Path(folder), Path(out)))
        return

    image_mb = args.image_size ** 2 * 4 / 1e6
    load_before = os.getloadavg()
    rows = []
    names = args.only.split(",")
    with tempfile.TemporaryDirectory(prefix="rule_rates_") as tmp:
        folders = {}
        for n in (2000, 8000) if set(names) - WITHOUT_IMAGES else ():
            folders[n] = Path(tmp) / str(n)
            folders[n].mkdir()
            synthesise(folders[n], n, args.image_size)
        for folder in folders.values():  # the network the domain and memorization jobs read
            measure("network", 10, folder)
        for name in names:
            varies, low, high = MEASUREMENTS[name]
            if varies == "slices":
                seconds = [measure(name, n, folders[n]) for n in (low, high)]
            else:
                seconds = [measure(name, v, folders.get(2000, Path(tmp))) for v in (low, high)]
            items = high - low
            if name == "memorization":
                items *= N_SAMPLES
            if name == "matmul":  # multiply-adds
                items = high ** 3 - low ** 3
            per_item = (seconds[1] - seconds[0]) / items
            per_mb = None if name in WITHOUT_IMAGES else per_item / (32 * image_mb if name == "cnn_step" else image_mb)
            rows.append({"rate": name, "varies": varies, "low": low, "high": high,
                         "seconds_low": round(seconds[0], 2), "seconds_high": round(seconds[1], 2),
                         "seconds_per_item": per_item, "seconds_per_item_mb": per_mb})
            print(rows[-1], flush=True)

    from pipeline_lib.core.io import atomic_path

    if args.out.exists():  # a partial rerun (--only) keeps the other rates
        kept = [r for r in json.loads(args.out.read_text())["rows"] if r["rate"] not in {r["rate"] for r in rows}]
        rows = kept + rows
    summary = {"image_size": args.image_size, "samples": N_SAMPLES, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
               "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in os.getloadavg()],
               "rows": rows}
    with atomic_path(args.out) as tmp, open(tmp, "w") as fh:
        json.dump(summary, fh, indent=1)
    lines = ["# Per-item costs of the evaluation jobs (`bench/rule_rates.py`)", "",
             f"Command: `PYTHONPATH=src nice -n 19 python bench/rule_rates.py --image-size {args.image_size}`. "
             f"Machine: {summary['machine']}, one thread per job; load average (1, 5, 15 min) "
             f"{' '.join(map(str, summary['load_before']))} before, {' '.join(map(str, summary['load_after']))} after "
             "(a shared machine: the slopes are noisy).", "",
             "| rate | varies | seconds at low / high | s per item | s per item per MB |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['rate']} | {row['varies']} {row['low']:,} -> {row['high']:,} | "
                     f"{row['seconds_low']} / {row['seconds_high']} | {row['seconds_per_item']:.3g} | "
                     + (f"{row['seconds_per_item_mb']:.3g} |" if row["seconds_per_item_mb"] is not None else "|"))
    lines += ["", NOTE]
    with atomic_path(args.out.with_suffix(".md")) as tmp, open(tmp, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
