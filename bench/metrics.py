"""Evaluation benchmark (issue 4): Ungría Hirte et al.'s metrics at full scale, and FID for 7 models vs pytorch-fid's CLI.

    python bench/metrics.py [--part all|pixel|fid] [--real 500 --sets 7 --per-set 200 --size 64]

Part 1, Ungría Hirte et al.'s metrics. ``pipeline_lib.evaluation.pixel_metrics.sample_metrics`` (dataset
similarity, ISD, minimum ISD, Laplacian variance) for 1,000 samples against
52,754 originals of 128 × 128 px: random float32 data in [0, 1], the originals
a memory-mapped ``.npy`` in a temporary folder (3.5 GB, freshly written, so
mostly in the page cache). Timed as a whole, three times; target ≤ 10 s on 2
cores. Exactness: the same function on a small subset (40 samples in
near-duplicate pairs, 300 originals) against the per-pair definitions
computed pair by pair in float64, and the Laplacian against a direct 5-point
stencil with reflect-101 borders.

Part 2, FID of 7 sample sets against one real set, on the same images both ways:

* ours — one Python process: load the FID Inception once (channels_last,
  float32), compute the real set's features and statistics once, then for
  each set its features and the Fréchet distance (``pipeline_lib.evaluation.fid``), from
  the ``.npy`` stacks the pipeline hands between stages;
* pytorch-fid — 7 calls of ``python -m pytorch_fid REAL_DIR SET_DIR`` on PNG
  folders of the same images (each call computes both folders' statistics,
  as the command line does), with the weights file that
  ``fid_inception_weights`` builds offline placed where pytorch-fid looks
  (``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth`` of a
  scratch TORCH_HOME), so nothing downloads.

Images are 8-bit quantised before both paths (PNG is 8-bit), so both see
identical pixels. They are axial slices of the MNI152 template (nilearn,
offline) with random shifts, intensity changes and noise; set k adds blur and
noise growing with k, so the 7 FIDs differ. Wall-clock times of the whole
processes (interpreter start-up and imports included) are reported with
their ratio (target ≥ 4×), and the FIDs of both paths are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
N_SAMPLES, N_ORIGINALS, SIZE_001 = 1000, 52754, 128
CHECK_SAMPLES, CHECK_ORIGINALS = 40, 300


def machine() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
        "platform": platform.platform(),
    }


# -- part 1: Ungría Hirte et al.'s metrics ------------------------------------------------------------
def random_stack(path: Path, n: int, size: int, seed: int) -> np.ndarray:
    """A memory-mapped (n, size, size) float32 .npy of uniform [0, 1) values, written in chunks."""
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, size, size))
    for start in range(0, n, 2048):
        stop = min(start + 2048, n)
        out[start:stop] = rng.random((stop - start, size, size), dtype=np.float32)
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


def per_pair_reference(samples: np.ndarray, originals: np.ndarray) -> dict[str, float]:
    """Seed 001's definitions evaluated pair by pair in float64 (slow; small sets only)."""
    a = samples.astype(np.float64)
    b = originals.astype(np.float64)
    ds = np.mean([np.mean((x - y) ** 2) for x in a for y in b])
    pair = np.array([[np.mean((x - y) ** 2) for y in a] for x in a])
    off = ~np.eye(len(a), dtype=bool)
    isd = pair[off].mean()
    min_isd = np.where(off, pair, np.inf).min(axis=1).mean()
    sharp = []
    for image in a * 255.0:
        p = np.pad(image, 1, mode="reflect")  # numpy's reflect = OpenCV's BORDER_REFLECT_101
        lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * image
        sharp.append(lap.var())
    return {"dataset_similarity": ds, "isd": isd, "min_isd": min_isd,
            "sharpness_mean": float(np.mean(sharp)), "sharpness_std": float(np.std(sharp))}


def near_duplicate_pairs(samples: np.ndarray) -> np.ndarray:
    """Make every odd image a near-copy of the one before (MSE ≈ 3e-7): then minimum ISD
    consists of near-duplicate distances only, the case that the float32 product form gets wrong."""
    rng = np.random.default_rng(3)
    out = samples.copy()
    base = np.clip(samples[0::2], 0.01, 0.99)
    out[0::2] = base
    out[1::2] = base[: len(out[1::2])] + rng.uniform(-1e-3, 1e-3, size=base[: len(out[1::2])].shape).astype(np.float32)
    return out


def bench_pixel_metrics(repeats: int = 3) -> dict[str, Any]:
    from pipeline_lib.evaluation.pixel_metrics import sample_metrics

    with tempfile.TemporaryDirectory(prefix="bench_metrics_") as tmp:
        t0 = time.perf_counter()
        originals = random_stack(Path(tmp) / "originals.npy", N_ORIGINALS, SIZE_001, seed=1)
        samples = random_stack(Path(tmp) / "samples.npy", N_SAMPLES, SIZE_001, seed=2)
        write_s = time.perf_counter() - t0
        times, result = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = sample_metrics(samples, originals)
            times.append(time.perf_counter() - t0)
        small_s = near_duplicate_pairs(np.array(samples[:CHECK_SAMPLES]))
        small_o = np.array(originals[:CHECK_ORIGINALS])
        ours = sample_metrics(small_s, small_o)
        t0 = time.perf_counter()
        reference = per_pair_reference(small_s, small_o)
        reference_s = time.perf_counter() - t0
    errors = {k: abs(ours[k] - v) / abs(v) for k, v in reference.items()}
    return {
        "n_samples": N_SAMPLES, "n_originals": N_ORIGINALS, "image_size": SIZE_001,
        "data": "uniform random float32, originals memory-mapped .npy (freshly written)",
        "data_write_s": write_s,
        "times_s": times, "best_s": min(times), "median_s": float(np.median(times)),
        "target_s": 10.0, "meets_target": float(np.median(times)) <= 10.0,
        "result": result,
        "exactness": {"n_samples": CHECK_SAMPLES, "n_originals": CHECK_ORIGINALS,
                      "relative_errors": errors, "max_relative_error": max(errors.values()),
                      "per_pair_reference_s": reference_s},
    }


# -- part 2: FID --------------------------------------------------------------------------
def make_fid_images(n_real: int, n_sets: int, per_set: int, size: int, seed: int = 0):
    """8-bit-quantised (n, size, size) float32 stacks: a real set and n_sets degraded sample sets."""
    from nilearn.datasets import load_mni152_template
    from scipy import ndimage

    volume = np.asarray(load_mni152_template(resolution=2).get_fdata(), dtype=np.float64)
    volume /= volume.max()
    lo, hi = int(volume.shape[2] * 0.3), int(volume.shape[2] * 0.75)
    slices = [ndimage.zoom(np.rot90(volume[:, :, z]), (size / volume.shape[1], size / volume.shape[0]), order=1)
              for z in range(lo, hi)]
    slices = np.clip(np.stack(slices), 0, 1)
    rng = np.random.default_rng(seed)

    def draw(n: int, blur: float, noise: float) -> np.ndarray:
        out = np.empty((n, size, size), dtype=np.float32)
        for i in range(n):
            img = slices[rng.integers(len(slices))]
            img = ndimage.shift(img, rng.uniform(-3, 3, size=2), order=1, mode="constant")
            img = np.clip(img * rng.uniform(0.85, 1.15), 0, 1) ** rng.uniform(0.8, 1.25)
            if blur:
                img = ndimage.gaussian_filter(img, blur)
            img = img + rng.normal(0, noise, img.shape)
            out[i] = np.clip(img, 0, 1)
        return (np.round(out * 255) / 255).astype(np.float32)

    real = draw(n_real, 0.0, 0.02)
    sets = [draw(per_set, 0.35 * k, 0.02 + 0.01 * k) for k in range(n_sets)]
    return real, sets


def write_png_folder(images: np.ndarray, folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L").save(folder / f"{i:05d}.png")


def ours_worker(spec_path: Path) -> None:
    """Our path in one process: real features + statistics once, then features + FID per set."""
    import torch

    from pipeline_lib.evaluation import fid

    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    net = fid.load_feature_network(spec["weights"], device=spec["device"], channels_last=True)
    timings["load_network_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    real = fid.extract_features(np.load(spec["real"]), net, batch_size=50)
    fid.save_feature_file(Path(spec["work"]) / "real.npz", real)
    timings["real_features_s"] = time.perf_counter() - t0
    values, set_times = [], []
    for path in spec["sets"]:
        t0 = time.perf_counter()
        feats = fid.extract_features(np.load(path), net, batch_size=50)
        values.append(fid.frechet_distance_features(feats, real))
        set_times.append(time.perf_counter() - t0)
    timings["per_set_s"] = set_times
    Path(spec["out"]).write_text(json.dumps({"fid": values, "timings": timings}))


def run_ours(work: Path, weights: Path, real_npy: Path, set_npys: list[Path], threads: int) -> dict[str, Any]:
    spec = {"weights": str(weights), "device": "cpu", "real": str(real_npy), "threads": threads,
            "sets": [str(p) for p in set_npys], "work": str(work), "out": str(work / "ours.json")}
    (work / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--ours-worker", str(work / "spec.json")],
                   check=True, env=env)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, **json.loads((work / "ours.json").read_text())}


def run_cli(torch_home: Path, real_dir: Path, set_dirs: list[Path]) -> dict[str, Any]:
    env = {**os.environ, "TORCH_HOME": str(torch_home)}
    values, times = [], []
    for folder in set_dirs:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytorch_fid", "--device", "cpu", "--batch-size", "50",
                               str(real_dir), str(folder)], check=True, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        match = re.search(r"FID:\s+([-+0-9.eE]+)", proc.stdout)
        if match is None:
            raise RuntimeError(f"pytorch_fid printed no FID: {proc.stdout!r} {proc.stderr[-2000:]!r}")
        values.append(float(match.group(1)))
    return {"wall_s": float(sum(times)), "per_call_s": times, "fid": values}


def bench_fid(n_real: int, n_sets: int, per_set: int, size: int) -> dict[str, Any]:
    import torch

    from pipeline_lib.core.pretrained import FID_INCEPTION_FILE, fid_inception_weights

    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench_fid_") as tmp:
        work = Path(tmp)
        torch_home = work / "torch_home"
        weights = fid_inception_weights(work / "fid.pth")
        hub = torch_home / "hub" / "checkpoints"
        hub.mkdir(parents=True)
        shutil.copyfile(weights, hub / FID_INCEPTION_FILE)
        real, sets = make_fid_images(n_real, n_sets, per_set, size)
        np.save(work / "real.npy", real)
        write_png_folder(real, work / "png" / "real")
        set_npys, set_dirs = [], []
        for k, images in enumerate(sets):
            set_npys.append(work / f"set{k}.npy")
            np.save(set_npys[-1], images)
            set_dirs.append(work / "png" / f"set{k}")
            write_png_folder(images, set_dirs[-1])
        load_before = os.getloadavg()
        ours = run_ours(work, weights, work / "real.npy", set_npys, threads)
        cli = run_cli(torch_home, work / "png" / "real", set_dirs)
        load_after = os.getloadavg()
    rel = [abs(a - b) / abs(b) for a, b in zip(ours["fid"], cli["fid"])]
    return {
        "n_real": n_real, "n_sets": n_sets, "per_set": per_set, "image_size": size,
        "images": "MNI152 axial slices, random shift/intensity/noise; set k: blur 0.35k px, noise 0.02+0.01k; 8-bit",
        "ours": ours, "pytorch_fid_cli": cli,
        "speedup": cli["wall_s"] / ours["wall_s"], "target_speedup": 4.0,
        "meets_target": cli["wall_s"] / ours["wall_s"] >= 4.0,
        "max_relative_fid_difference": max(rel), "relative_fid_differences": rel,
        "inception_forwards": {"ours": n_real + n_sets * per_set, "cli": n_sets * (n_real + per_set)},
        "load_average_before_after": [load_before, load_after],
    }


# -- output ----------------------------------------------------------------------------
def markdown(results: dict[str, Any]) -> str:
    lines = ["# Evaluation benchmark (`bench/metrics.py`)", ""]
    m = results.get("machine", {})
    lines += [f"Machine: {m.get('cpu_count')} CPU cores, torch {m.get('torch')} with {m.get('torch_threads')} "
              f"threads, Python {m.get('python')}; load average at start {m.get('load_average_at_start')}.", ""]
    if "pixel" in results:
        s = results["pixel"]
        e = s["exactness"]
        lines += ["## Seed-001 metrics (DS, ISD, minimum ISD, Laplacian variance)", "",
                  "| samples | originals | size | time (median of 3) | best | target | max rel. error vs per-pair |",
                  "|---|---|---|---|---|---|---|",
                  f"| {s['n_samples']:,} | {s['n_originals']:,} | {s['image_size']} px | {s['median_s']:.2f} s | "
                  f"{s['best_s']:.2f} s | ≤ {s['target_s']:.0f} s | {e['max_relative_error']:.1e} "
                  f"({e['n_samples']} samples in near-duplicate pairs, {e['n_originals']} originals) |", ""]
    if "fid" in results:
        f = results["fid"]
        lines += [f"## FID for {f['n_sets']} sample sets against one real set", "",
                  f"{f['n_sets']} sets × {f['per_set']} images vs {f['n_real']} real images, {f['image_size']} px "
                  f"({f['images']}); CPU. 1-minute load average before / after the FID part: "
                  f"{f['load_average_before_after'][0][0]:.1f} / {f['load_average_before_after'][1][0]:.1f} "
                  f"on {m.get('cpu_count')} cores (other jobs shared the machine; both paths ran under it).", "",
                  "| path | wall time | Inception forwards |", "|---|---|---|",
                  f"| ours (one process, real statistics once, channels_last float32) | {f['ours']['wall_s']:.1f} s | "
                  f"{f['inception_forwards']['ours']:,} |",
                  f"| `python -m pytorch_fid REAL SET` × {f['n_sets']} | {f['pytorch_fid_cli']['wall_s']:.1f} s | "
                  f"{f['inception_forwards']['cli']:,} |",
                  f"| **speed-up** | **{f['speedup']:.2f}×** (target ≥ {f['target_speedup']:.0f}×) | |", "",
                  "| set | FID ours | FID pytorch-fid | relative difference |", "|---|---|---|---|"]
        for k, (a, b, r) in enumerate(zip(f["ours"]["fid"], f["pytorch_fid_cli"]["fid"],
                                          f["relative_fid_differences"])):
            lines.append(f"| {k} | {a:.4f} | {b:.4f} | {r:.1e} |")
        lines.append("")
    commands = sorted({results[part]["command"] for part in ("pixel", "fid") if part in results})
    lines += [f"Command: `{c}` (from the repository root, `.venv/bin/python`)" for c in commands] + [""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["all", "pixel", "fid"], default="all")
    parser.add_argument("--real", type=int, default=500, help="real images for FID")
    parser.add_argument("--sets", type=int, default=7, help="sample sets for FID")
    parser.add_argument("--per-set", type=int, default=200, help="images per sample set")
    parser.add_argument("--size", type=int, default=64, help="image side for FID (pixels)")
    parser.add_argument("--out", type=Path, default=RESULTS / "metrics.json")
    parser.add_argument("--ours-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ours_worker:
        ours_worker(args.ours_worker)
        return
    sys.path.insert(0, str(ROOT / "src"))
    from pipeline_lib.core.io import write_json, write_text

    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["machine"] = machine()
    results["command"] = "python bench/metrics.py " + " ".join(sys.argv[1:])
    if args.part in ("all", "pixel"):
        results["pixel"] = {**bench_pixel_metrics(), "command": results["command"]}
        print(json.dumps({k: v for k, v in results["pixel"].items() if k != "result"}, indent=1), flush=True)
    if args.part in ("all", "fid"):
        results["fid"] = {**bench_fid(args.real, args.sets, args.per_set, args.size), "command": results["command"]}
    write_json(args.out, results)
    write_text(args.out.with_suffix(".md"), markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
