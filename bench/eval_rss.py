"""Peak resident memory of each evaluation job against the number of slices in the dataset.

    PYTHONPATH=src nice -n 10 python bench/eval_rss.py [--sizes 2000,8000,32000] [--image-size 128]
        [--before /path/to/old/src --before-sizes 2000,8000]

For each size N this synthesises a slice dataset of N float32 images (``images.npy`` written block
by block, a ``slices.tsv`` of 40 slices per subject, 80 % of the subjects in the train split, a
two-class ``sex`` label) and one model's outputs of fixed size (256 samples, 64 reconstructions,
their labels), then runs each evaluation job, each in a fresh Python process (``--worker``), with
the source tree given by ``--src`` (default: this checkout's ``src``), and records the process's
peak resident memory (``VmHWM``: ``ru_maxrss`` carries the parent's peak over fork and exec).
The jobs run with small networks (30 steps) so the bench stays short; their memory does not depend
on the step count. The domain network job runs first at each size; the jobs that need its weights
use them.

With ``--before OLD_SRC`` the same jobs also run with another source tree (e.g. the commit before
the jobs streamed their splits) at ``--before-sizes``, and every output JSON of the two trees at
the smallest of those sizes is compared key by key: the bench fails when a value differs.

Each row also shows the job's memory request (core.resources, attempt 1) for the dataset, so a
peak above it shows. Writes ``bench/results/eval_rss.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SLICES_PER_SUBJECT = 40
N_SAMPLES, N_RECONSTRUCT = 256, 64
SMALL_CNN = {"steps": 30, "batch_size": 32}
#: Each job: what the rule's ``mem_mb`` passes to core.resources (held images beyond the blocks).
JOBS = ("domain_network", "metrics_model", "metrics_original", "memorization", "domain_metrics",
        "domain_metrics_original", "conditioning", "utility", "diversity_model", "diversity_original")


def synthesise(folder: Path, n: int, size: int) -> None:
    """images.npy (N, size, size), slices.tsv and a model's samples, reconstructions and labels."""
    import pandas as pd

    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.float32, shape=(n, size, size))
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[None, :, None]
    for start in range(0, n, 512):
        stop = min(n, start + 512)
        position = (np.arange(start, stop) % SLICES_PER_SUBJECT / SLICES_PER_SUBJECT).astype(np.float32)
        block = 0.5 * ramp * position[:, None, None] + 0.5 * rng.random((stop - start, size, size), dtype=np.float32)
        images[start:stop] = block
    images.flush()
    del images
    subject = np.arange(n) // SLICES_PER_SUBJECT
    pd.DataFrame({
        "row": np.arange(n), "subject": [f"s{s:05d}" for s in subject],
        "slice_index": np.arange(n) % SLICES_PER_SUBJECT,
        "split": np.where(subject % 5 == 4, "test", "train"), "axis": "axial",
        "sex": np.where(subject % 2 == 0, "F", "M"), "augmented": "0",
    }).to_csv(folder / "slices.tsv", sep="\t", index=False)
    np.save(folder / "samples.npy", rng.random((N_SAMPLES, size, size), dtype=np.float32))
    np.save(folder / "reconstructions.npy", rng.random((N_RECONSTRUCT, size, size), dtype=np.float32))
    pd.DataFrame({"label": ["F", "M"] * (N_SAMPLES // 2)}).to_csv(folder / "labels.tsv", sep="\t", index=False)


def run_job(job: str, folder: Path, out: Path, *, n_reconstruct: int = N_RECONSTRUCT, label_column: str = "sex") -> None:
    """One evaluation job on the synthetic dataset, as its rule calls it (``folder``: images.npy,
    slices.tsv and a model's samples.npy, reconstructions.npy and labels.tsv; ``label_column``: the
    slice table's class column, which the samples' labels name)."""
    data = dict(images=folder / "images.npy", table=folder / "slices.tsv")
    network = folder / "network.pt"
    domain = {**SMALL_CNN, "label_column": label_column}
    if job == "domain_network":
        from pipeline_lib.evaluation.domain_features import domain_network_job
        domain_network_job(**data, out_network=network, out_summary=out / "network.json", settings=domain, threads=1)
    elif job == "metrics_model":
        from pipeline_lib.evaluation.pixel_metrics import model_metrics_job
        model_metrics_job(folder / "samples.npy", folder / "reconstructions.npy", **data, out=out / f"{job}.json",
                          sharpness_scale=255.0, n_reconstruct=n_reconstruct, seed=0)
    elif job == "metrics_original":
        from pipeline_lib.evaluation.pixel_metrics import original_metrics_job
        original_metrics_job(**data, out=out / f"{job}.json", sharpness_scale=255.0, n_original=1000, seed=0)
    elif job == "memorization":
        from pipeline_lib.evaluation.memorization import memorization_job
        memorization_job(folder / "samples.npy", **data, network=network, out_audit=out / f"{job}.json",
                         out_gallery=out / f"{job}.png", settings={})
    elif job in ("domain_metrics", "domain_metrics_original"):
        from pipeline_lib.evaluation.domain_features import domain_metrics_job
        samples = folder / "samples.npy" if job == "domain_metrics" else None
        domain_metrics_job(network, **data, out=out / f"{job}.json", settings=domain, samples=samples, threads=1)
    elif job == "conditioning":
        from pipeline_lib.evaluation.conditioning import conditioning_job
        conditioning_job(folder / "samples.npy", folder / "labels.tsv", **data, out=out / f"{job}.json",
                         condition_on=label_column, settings=SMALL_CNN, threads=1)
    elif job == "utility":
        from pipeline_lib.evaluation.augmentation_utility import utility_job
        utility_job(folder / "samples.npy", folder / "labels.tsv", **data, network=network, out=out / f"{job}.json",
                    condition_on=label_column, settings={**SMALL_CNN, "seeds": 2}, threads=1)
    elif job == "diversity_model":
        from pipeline_lib.evaluation.diversity import model_diversity_job
        model_diversity_job(folder / "samples.npy", folder / "reconstructions.npy", **data, out=out / f"{job}.json",
                            settings={}, sampling={"n_reconstruct": n_reconstruct, "seed": 0})
    elif job == "diversity_original":
        from pipeline_lib.evaluation.diversity import original_diversity_job
        original_diversity_job(**data, out=out / f"{job}.json", settings={})
    else:
        raise ValueError(f"unknown job {job}")


def request_mb(job: str, n: int, size: int) -> int:
    """The job's attempt-1 request, as workflow/rules/common.smk computes it."""
    from pipeline_lib.core import resources

    dataset = resources.ImageSet(n, size * size)
    samples = None if job in ("domain_network", "metrics_original", "domain_metrics_original",
                              "diversity_original") else resources.ImageSet(N_SAMPLES, size * size)
    return resources.request_mb(resources.streamed_evaluation_mb(dataset, samples, STREAMED_HELD.get(job, 0)), 1)


#: Images the jobs read at once beyond their blocks (workflow/rules: ``held``): the diversity jobs'
#: pairs (2 x evaluation.diversity.n_pairs).
STREAMED_HELD = {"diversity_model": 2000, "diversity_original": 2000}


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(job: str, folder: Path, out: Path, src: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--worker", job, str(folder), str(out)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{job} failed with {src}:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "seconds": round(time.perf_counter() - started, 1)}


def differences(new: object, old: object, where: str) -> list[str]:
    if isinstance(old, dict):
        if not isinstance(new, dict) or set(new) != set(old):
            return [f"{where}: keys differ"]
        return [d for key in old for d in differences(new[key], old[key], f"{where}.{key}")]
    if isinstance(old, list):
        if not isinstance(new, list) or len(new) != len(old):
            return [f"{where}: lengths differ"]
        return [d for i, (a, b) in enumerate(zip(new, old)) for d in differences(a, b, f"{where}[{i}]")]
    if where.endswith("seconds"):
        return []
    return [] if new == old or (new != new and old != old) else [f"{where}: {new!r} != {old!r}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,8000,32000", help="numbers of slices, comma-separated")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--jobs", default=",".join(JOBS))
    parser.add_argument("--src", type=Path, default=REPO / "src")
    parser.add_argument("--before", type=Path, help="another source tree to measure and compare with")
    parser.add_argument("--before-sizes", default="2000,8000")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/eval_rss.json")
    parser.add_argument("--worker", nargs=3, metavar=("JOB", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job, folder, out = args.worker
        run_job(job, Path(folder), Path(out))
        print(json.dumps({"peak_rss_mb": round(peak_rss_mb(), 1)}))
        return

    sys.path.insert(0, str(args.src))
    jobs = args.jobs.split(",")
    before_sizes = {int(s) for s in args.before_sizes.split(",")} if args.before else set()
    rows, mismatches, compared = [], [], None
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="eval_rss_") as tmp:
            folder = Path(tmp)
            synthesise(folder, n, args.image_size)
            trees = [("streamed", args.src)] + ([("before", args.before)] if n in before_sizes else [])
            for label, src in trees:
                out = folder / label
                out.mkdir()
                for job in jobs:
                    result = measure(job, folder, out, src)
                    rows.append({"n_images": n, "image_size": args.image_size, "code": label, "job": job,
                                 "data_mb": round(n * args.image_size ** 2 * 4 / 1e6, 1),
                                 "request_mb": request_mb(job, n, args.image_size), **result})
                    print(rows[-1], flush=True)
            if len(trees) == 2 and compared is None:
                compared = n
                for job in jobs:
                    name = "network.json" if job == "domain_network" else f"{job}.json"
                    new, old = (json.loads((folder / label / name).read_text()) for label in ("streamed", "before"))
                    mismatches += differences(new, old, f"{n}:{job}")

    from pipeline_lib.core.io import atomic_path

    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"sizes": args.sizes, "image_size": args.image_size, "rows": rows,
               "compared_at": compared, "mismatches": mismatches}
    with atomic_path(args.out) as tmp, open(tmp, "w") as fh:
        json.dump(summary, fh, indent=1)
    sizes = sorted({r["n_images"] for r in rows})
    codes = sorted({r["code"] for r in rows}, reverse=True)
    header = " | ".join(f"{n:,} × {args.image_size}² ({n * args.image_size ** 2 * 4 / 1e6:.0f} MB) {code}"
                        for n in sizes for code in codes if any(r["n_images"] == n and r["code"] == code for r in rows))
    columns = [(n, code) for n in sizes for code in codes if any(r["n_images"] == n and r["code"] == code for r in rows)]
    lines = [f"| job | {header} |", "|---" * (len(columns) + 1) + "|"]
    for job in jobs:
        cells = []
        for n, code in columns:
            [row] = [r for r in rows if r["job"] == job and r["n_images"] == n and r["code"] == code]
            cells.append(f"{row['peak_rss_mb']:.0f}" + (f" / {row['request_mb']}" if code == "streamed" else ""))
        lines.append(f"| {job} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Peak RSS (MB, VmHWM) / the streamed job's attempt-1 request (MB, core.resources).")
    if compared is not None:
        lines.append(f"Outputs of both trees at {compared:,} slices: "
                     + ("identical in every value." if not mismatches else f"{len(mismatches)} values differ."))
    with atomic_path(args.out.with_suffix(".md")) as tmp, open(tmp, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if mismatches:
        raise SystemExit("outputs differ:\n" + "\n".join(mismatches[:50]))


if __name__ == "__main__":
    main()
