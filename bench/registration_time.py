"""Time and memory of one register job (brain extraction + registration + QC) at Ungría Hirte et al.'s grid.

    .venv/bin/python bench/registration_time.py [--threads 1,2] [--repeats 2]

For each input (Colin27 at 1 mm, 181 x 217 x 181, from Debian's mricron-data; the
demo's head phantom at 1 mm and at 2 mm) the ``register`` rule's library call
(``run_registration_job``: template and grid set-up, deepbet, ANTs Affine brain to
brain, resampling onto 128 x 128 x 40, QC and overlay) runs in a fresh process,
as a pipeline job does, with ``--threads`` for ITK, torch and OpenMP. The wall
time of the call (Python start-up and imports, about 5 s, not included) and the
process's peak RSS are recorded, with the load average (shared machine: noisy).
Writes ``bench/results/registration_time.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
INPUTS = ("colin27_1mm", "phantom_1mm", "phantom_2mm")
GRID = [128, 128, 40]


def write_input(name: str, folder: Path) -> Path:
    """An ingested subject folder (status.json + volume.nii.gz) holding ``name``."""
    import nibabel as nib
    import numpy as np

    from pipeline_lib.cohorts import ground_truth as gt
    from pipeline_lib.cohorts.demo_cohort import head_phantom, load_mni_template_image
    from pipeline_lib.imaging.ingest import ingest_subject

    folder.mkdir(parents=True, exist_ok=True)
    if name == "colin27_1mm":
        source = gt.require_colin27()[0]
    else:
        head = head_phantom(load_mni_template_image(1 if name == "phantom_1mm" else 2))
        source = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(head.dataobj) * 1000, head.affine), str(source))
    ingest_subject(source, "nifti", folder / "ingest", "sub-0000000000")
    return folder / "ingest"


def run_one(ingest_dir: Path, out_dir: Path, threads: int) -> dict:
    from pipeline_lib.imaging.registration import run_registration_job

    start = time.perf_counter()
    status = run_registration_job(ingest_dir, out_dir, "sub-0000000000", {"grid": GRID},
                                  {"brain_extraction": "deepbet"}, threads=threads)
    seconds = time.perf_counter() - start
    qc = json.loads((out_dir / "qc.json").read_text()) if (out_dir / "qc.json").is_file() else {}
    return {"status": status["status"], "seconds": round(seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "mask_dice": qc.get("mask_dice")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--inputs", default=",".join(INPUTS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "registration_time.json")
    parser.add_argument("--one", nargs=3, metavar=("INGEST_DIR", "OUT_DIR", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(Path(args.one[0]), Path(args.one[1]), int(args.one[2]))))
        return
    from pipeline_lib.core.io import write_json, write_text

    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="reg-time-") as tmp:
        for name in args.inputs.split(","):
            ingest_dir = write_input(name, Path(tmp) / name)
            for threads in (int(t) for t in args.threads.split(",")):
                env = {**os.environ, **{v: str(threads) for v in (
                    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")}}
                for repeat in range(args.repeats):
                    out = Path(tmp) / name / f"out-{threads}-{repeat}"
                    done = subprocess.run([sys.executable, __file__, "--one", str(ingest_dir), str(out), str(threads)],
                                          capture_output=True, text=True, env=env)
                    row = {"input": name, "threads": threads, "repeat": repeat}
                    if done.returncode != 0:
                        row["error"] = done.stderr.strip().splitlines()[-1]
                    else:
                        row.update(json.loads(done.stdout.strip().splitlines()[-1]))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    result = {"command": "python bench/registration_time.py " + " ".join(sys.argv[1:]), "grid": GRID,
              "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in os.getloadavg()], "cpu_count": os.cpu_count(),
              "rows": rows}
    write_json(args.out, result)
    write_text(args.out.with_suffix(".md"), render(result))


def render(result: dict) -> str:
    lines = [f"Command: `{result['command']}`  ",
             f"deepbet + ANTs Affine brain to brain + QC, grid {'x'.join(map(str, result['grid']))}. "
             f"Load average before / after: {result['load_average_before']} / {result['load_average_after']} "
             f"on {result['cpu_count']} cores (shared machine: noisy).", "",
             "| input | threads | status | seconds | peak RSS (MB) | brain-mask Dice |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['input']} | {r['threads']} | error: {r['error']} | | | |")
        else:
            lines.append(f"| {r['input']} | {r['threads']} | {r['status']} | {r['seconds']} | {r['peak_rss_mb']} | "
                         f"{r['mask_dice']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
