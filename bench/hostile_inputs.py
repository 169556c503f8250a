"""Time and peak memory of an ingest job on every hostile input (targets: < 60 s, < 2 GB each).

    python bench/hostile_inputs.py [--out bench/results/hostile_inputs.json] [--skip-large]

Builds the hostile-input corpus (``pipeline_lib.cohorts.hostile_corpus``) plus the
large cases of issue 12 at the pipeline's default ``ingest.max_voxels`` (64 M):

* a gzip bomb of 1 MiB that inflates to 1 GiB (a small image, then zeros);
* a header declaring a 1 GiB volume (1024 x 1024 x 512 int16) over 1 GiB of gzip-compressed zeros;
* compressed zeros exactly at the cap (400^3 int16: inflated, then refused as constant);
* the largest volume accepted: 400^3 float32 (256 MB, uncompressed), read, reoriented, written;
* the same size as a DICOM series (400 slices of 400 x 400), converted by dcm2niix.

Discovery runs once over the whole tree; then every discovered subject is ingested
in its own fresh process, as the workflow's ingest job does (``ingest_subject`` on
its staging link, default settings, 2 cores), and that process's wall time and
peak resident memory (``os.wait4``) are recorded. As root, the processes run without
the capabilities that bypass file permissions, as in the corpus test. A Markdown
table is written beside the JSON.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from pipeline_lib.core.io import write_json, write_text
from pipeline_lib.cohorts import hostile_corpus as hc
from pipeline_lib.imaging.dicom import write_dicom_series
from pipeline_lib.imaging.discovery import discover_inputs, display_path, write_staging

REPO = Path(__file__).resolve().parents[1]
TARGET_WALL_S, TARGET_PEAK_MB = 60.0, 2048.0
CAP_SIDE = 400  # the default ingest.max_voxels is 400^3

INGEST = """
import json, sys
from pathlib import Path
from pipeline_lib.imaging.ingest import ingest_subject
status = ingest_subject(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4])
print(json.dumps(status))
"""


def _header(shape, dtype) -> nib.Nifti1Header:
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    header["vox_offset"] = 352
    return header


def build_large(folder: Path) -> list[str]:
    """The large cases; returns their names."""
    folder.mkdir(parents=True)
    mib = b"\0" * (1 << 20)
    with gzip.open(folder / "bomb-1GiB.nii.gz", "wb", compresslevel=9) as handle:
        handle.write(nib.Nifti1Image(hc.phantom(), np.eye(4)).to_bytes())
        for _ in range(1024):
            handle.write(mib)
    with gzip.open(folder / "declared-1GiB.nii.gz", "wb", compresslevel=9) as handle:
        handle.write(_header((1024, 1024, 512), np.int16).binaryblock + b"\0" * 4)
        for _ in range(1024):
            handle.write(mib)
    with gzip.open(folder / "zeros-at-cap.nii.gz", "wb", compresslevel=1) as handle:
        handle.write(_header((CAP_SIDE,) * 3, np.int16).binaryblock + b"\0" * 4)
        plane = b"\0" * (CAP_SIDE * CAP_SIDE * 2)
        for _ in range(CAP_SIDE):
            handle.write(plane)
    volume = hc.phantom((CAP_SIDE,) * 3)
    nib.save(nib.Nifti1Image(volume, np.diag([0.6, 0.6, 0.6, 1.0])), folder / "largest-accepted.nii")
    write_dicom_series(volume.astype(np.float64), np.diag([0.6, 0.6, 0.6, 1.0]), folder / "largest-dicom",
                       patient_name="BENCH^CASE", patient_id="B1", birth_date="19000101", manufacturer="ACME",
                       model_name="Scanny", field_strength=3.0, series_description="T1", uid_seed="bench")
    return ["bomb-1GiB.nii.gz", "declared-1GiB.nii.gz", "zeros-at-cap.nii.gz", "largest-accepted.nii",
            "largest-dicom"]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size


def measured(command: list[str]) -> dict:
    """Wall time, peak RSS (MB) and output of ``command`` in a fresh process."""
    preexec = hc.drop_dac_capabilities if os.geteuid() == 0 else None
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True, preexec_fn=preexec)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        text = out.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({code}):\n{text[-3000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "output": text.strip()}


def run(scratch: Path, skip_large: bool) -> dict:
    root = scratch / "corpus"
    skipped = hc.build_corpus(root)
    judged = {display_path(os.path.abspath(root / entry)): slug
              for slug, entry in json.loads((scratch / "corpus.judged.json").read_text()).items()}
    large = [] if skip_large else build_large(root / "999-large")
    sizes = {name: round(_size(root / "999-large" / name) / 2**20, 2) for name in large}
    started = time.perf_counter()
    found = discover_inputs(root, hc.SALT, hc.SAMPLES_SCHEMA)
    write_staging(found, scratch / "staging")
    discovery_s = time.perf_counter() - started
    paths = found.linkage.set_index("subject")["path"]
    rows = []
    for subject, fmt in found.subjects[["subject", "format"]].itertuples(index=False):
        result = measured([sys.executable, "-c", INGEST, str(scratch / "staging" / subject / "input"), fmt,
                           str(scratch / "out" / subject), subject])
        case = judged.get(paths[subject], os.path.basename(paths[subject]))
        status = json.loads(result["output"].splitlines()[-1])
        rows.append({"case": case, "format": fmt, "file_mb": sizes.get(case), "decision": status["status"],
                     "reason": status["reason"] or status["warning"],
                     "wall_s": result["wall_s"], "peak_rss_mb": result["peak_rss_mb"]})
    table = pd.DataFrame(rows).sort_values("peak_rss_mb", ascending=False)
    return {
        "cases": table.to_dict(orient="records"),
        "n_ingest_jobs": len(table),
        "n_ignored_by_discovery": len(found.ignored),
        "discovery_s": round(discovery_s, 2),
        "large_cases": sizes,
        "not_built": skipped,
        "max_wall_s": float(table["wall_s"].max()),
        "max_peak_rss_mb": float(table["peak_rss_mb"].max()),
        "targets": {"wall_s": TARGET_WALL_S, "peak_rss_mb": TARGET_PEAK_MB},
        "within_targets": bool(table["wall_s"].max() < TARGET_WALL_S and table["peak_rss_mb"].max() < TARGET_PEAK_MB),
        "machine": {"cpus": os.cpu_count(), "load_average_1min_at_end": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "platform": platform.platform()},
    }


def markdown(result: dict) -> str:
    lines = [
        "# Ingest jobs on hostile inputs: wall time and peak memory",
        "",
        "`python bench/hostile_inputs.py` (one fresh process per ingest job, default settings). "
        f"{result['n_ingest_jobs']} ingest jobs; {result['n_ignored_by_discovery']} entries ignored by discovery "
        f"({result['discovery_s']} s for the whole tree). Largest: {result['max_peak_rss_mb']} MB, "
        f"{result['max_wall_s']} s (targets {TARGET_PEAK_MB:.0f} MB, {TARGET_WALL_S:.0f} s). "
        f"Load average at the end: {result['machine']['load_average_1min_at_end']} on "
        f"{result['machine']['cpus']} cores (a shared machine: times are noisy).",
        "",
        "Large cases (size on disk, MB): " + ", ".join(f"{k} {v}" for k, v in result["large_cases"].items()) + ".",
        "",
        "| case | decision | wall (s) | peak RSS (MB) | reason or warning |",
        "|---|---|---|---|---|",
    ]
    for row in result["cases"]:
        reason = row["reason"].replace("|", "\\|")
        lines.append(f"| {row['case']} | {row['decision']} | {row['wall_s']} | {row['peak_rss_mb']} | {reason} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/hostile_inputs.json")
    parser.add_argument("--skip-large", action="store_true", help="only the corpus (no 1 GiB cases)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile_bench_") as scratch:
        result = run(Path(scratch), args.skip_large)
    write_json(args.out, result)
    write_text(args.out.with_suffix(".md"), markdown(result))
    print(f"{result['n_ingest_jobs']} ingest jobs: at most {result['max_peak_rss_mb']} MB and {result['max_wall_s']} s "
          f"(within targets: {result['within_targets']}) -> {args.out}")


if __name__ == "__main__":
    main()
