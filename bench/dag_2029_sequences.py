"""Dry run of the whole workflow for a 2,029-subject, 4-sequence cohort in the BraTS layout.

    python bench/dag_2029_sequences.py [--subjects 2029] [--out bench/results/dag_2029_sequences.json]

Like ``bench/dag_2029.py`` (same measurement, same targets: dry run within 30 s and 2 GB on
2 cores), but the cohort is a BraTS 2019-style folder: ``HGG|LGG/<case>/<case>_{t1,t1ce,t2,
flair,seg}.nii.gz`` (empty placeholder files; discovery reads names only), discovered with
``input.layout: brats`` and ``registration.reference_sequence: t1``, and sliced into two datasets
(T1 only and the four sequences pooled, Han et al.'s Concat) with one model each. So discovery groups
10,145 files into 2,029 subjects with four sequences and a mask each, and every ingest job's
inputs are the subject's five staging links.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from dag_2029 import REPO, SNAKEMAKE, TARGET_PEAK_MB, TARGET_WALL_S, job_counts, measured
from pipeline_lib.core.io import write_json

SEQUENCES = ("t1", "t1ce", "t2", "flair", "seg")


def make_cohort(root: Path, n_subjects: int) -> Path:
    """Placeholder BraTS files for ``n_subjects`` cases; the source folder."""
    source = root / "MICCAI_BraTS_2019_Data_Training"
    for i in range(n_subjects):
        case = f"BraTS19_CBICA_{i:05d}_1"
        folder = source / ("HGG" if i % 4 else "LGG") / case
        folder.mkdir(parents=True)
        for sequence in SEQUENCES:
            (folder / f"{case}_{sequence}.nii.gz").touch()
    return source


def make_checkout(work: Path, source: Path) -> None:
    shutil.copy(REPO / "Snakefile", work)
    for folder in ("workflow", "src", "envs"):
        shutil.copytree(REPO / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["input"] = {"source": str(source), "layout": "brats"}
    config.setdefault("registration", {})["reference_sequence"] = "t1"
    # Two slice datasets as in Han et al. (T1 only, and the four sequences pooled), one model each.
    geometry = {"axis": "sagittal", "selection": {"mode": "range", "first": 20, "last": 40}}
    config["datasets"] = {"t1": {"filters": {"sequence": "t1"}, "size": [32, 32], **geometry},
                          "concat": {"filters": {"sequence": ["t1", "t1ce", "t2", "flair"]}, "size": [32, 32],
                                     **geometry}}
    first, second = sorted(config["models"])[:2]
    config["models"] = {first: {**config["models"][first], "dataset": "t1"},
                        second: {**config["models"][second], "dataset": "concat"}}
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def run(n_subjects: int, scratch: Path) -> dict:
    cohort, work = scratch / "cohort", scratch / "checkout"
    cohort.mkdir()
    work.mkdir()
    started = time.perf_counter()
    source = make_cohort(cohort, n_subjects)
    make_checkout(work, source)
    setup_s = time.perf_counter() - started
    snakemake = [str(SNAKEMAKE), "--cores", "2"]
    discovery = measured([*snakemake, "discover_inputs"], work)
    dry_run = measured([*snakemake, "-n", "all"], work)
    jobs = job_counts(dry_run["output"])
    if jobs.get("ingest") != n_subjects or jobs.get("register") != n_subjects:
        raise RuntimeError(f"expected {n_subjects} ingest and register jobs, got {jobs}")
    subjects = (work / "results/inputs/subjects.tsv").read_text().splitlines()
    return {
        "n_subjects": n_subjects,
        "n_files": n_subjects * len(SEQUENCES),
        "sequences_per_subject": 4,
        "subjects_tsv_rows": len(subjects) - 1,
        "jobs": jobs,
        "setup_s": round(setup_s, 2),
        "discovery": {k: v for k, v in discovery.items() if k != "output"},
        "dry_run": {k: v for k, v in dry_run.items() if k != "output"},
        "targets": {"wall_s": TARGET_WALL_S, "peak_rss_mb": TARGET_PEAK_MB},
        "within_targets": dry_run["wall_s"] <= TARGET_WALL_S and dry_run["peak_rss_mb"] <= TARGET_PEAK_MB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=2029)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/dag_2029_sequences.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dag_seq_bench_") as scratch:
        result = run(args.subjects, Path(scratch))
    import os
    result["machine"] = {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)}
    write_json(args.out, result)
    dry = result["dry_run"]
    print(f"{args.subjects} subjects x 4 sequences, {result['jobs'].get('total')} jobs: dry run {dry['wall_s']} s, "
          f"peak {dry['peak_rss_mb']} MB (targets {TARGET_WALL_S:.0f} s, {TARGET_PEAK_MB:.0f} MB); "
          f"discovery {result['discovery']['wall_s']} s -> {args.out}")


if __name__ == "__main__":
    main()
