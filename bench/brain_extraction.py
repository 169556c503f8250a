"""Brain extractors measured on this machine: seconds per subject, peak memory, Dice with a reference.

    .venv/bin/python bench/brain_extraction.py [--methods deepbet,robex,bet] [--threads 2]

Cases (real heads with skull and scalp, and a reference brain mask for each):

* ``colin27_1mm``: Colin27 (Debian's mricron-data ``ch2.nii.gz``, 181 x 217 x 181, 1 mm);
  references ``ch2bet`` (> 0; FSL BET output shipped with MRIcron) and ``ch2better``
  (> 0; the hand-improved mask MRIcron ships, 0.5 mm, resampled here);
* ``phantom_2mm`` / ``phantom_1mm``: the demo's head phantom (the MNI152 brain in CSF,
  skull and scalp shells); reference: the template's brain (> 0.05) it was built around.

Each (method, case) runs in its own process (``--one``), so peak RSS
(``ru_maxrss`` of the process and of ROBEX's child processes) and import costs
are per subject, as in a pipeline job; ``--threads`` sets torch, OpenMP and numba
threads. Wall time includes loading the extractor (deepbet's two TorchScript
files) but not the Python start-up. Writes ``bench/results/brain_extraction.json``
and ``.md`` with the load average before and after (the machine is shared;
timings are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CASES = ("colin27_1mm", "phantom_2mm", "phantom_1mm")
METHODS = ("deepbet", "robex", "bet")


def load_case(case: str):
    """(head image in RAS, {reference name: boolean mask on the head's grid})."""
    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    from pipeline_lib.cohorts import ground_truth as gt
    from pipeline_lib.cohorts.demo_cohort import head_phantom, load_mni_template_image

    if case == "colin27_1mm":
        head_path, brain_path = gt.require_colin27()
        head = nib.as_closest_canonical(nib.load(str(head_path)))
        references = {"ch2bet": np.asarray(nib.load(str(brain_path)).dataobj) > 0}
        better = brain_path.with_name("ch2better.nii.gz")
        if better.is_file():
            image = nib.load(str(better))
            # ch2better is 0.5 mm on another box: sample it at the head's voxel centres
            index = np.indices(head.shape, dtype=np.float64).reshape(3, -1)
            voxels = np.linalg.inv(image.affine) @ head.affine @ np.vstack([index, np.ones(index.shape[1])])
            values = ndimage.map_coordinates(np.asarray(image.dataobj) > 0, voxels[:3], order=0)
            references["ch2better"] = values.reshape(head.shape) > 0
        data = np.asarray(head.dataobj, dtype=np.float32)
        return nib.Nifti1Image(data, head.affine), references
    resolution = 2 if case == "phantom_2mm" else 1
    brain = load_mni_template_image(resolution)
    head = head_phantom(brain)
    margin = (head.shape[0] - brain.shape[0]) // 2
    reference = np.pad(np.asarray(brain.dataobj) > 0.05, margin)
    data = np.asarray(head.dataobj, dtype=np.float32) * 1000
    return nib.Nifti1Image(data, head.affine), {"template brain": reference}


def run_one(method: str, case: str, threads: int) -> dict:
    import numpy as np

    from pipeline_lib.imaging import brain_extraction as be
    from pipeline_lib.imaging.registration import dice

    head, references = load_case(case)
    start = time.perf_counter()
    mask = be.extract_brain(head, method, threads=threads)
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "method": method, "case": case, "shape": list(head.shape),
        "voxel_mm": float(np.linalg.norm(head.affine[:3, 0])), "threads": threads,
        "seconds": round(seconds, 1), "peak_rss_mb": round(max(own, children)),
        "brain_ml": round(be.mask_volume_ml(mask, head), 1),
        "dice": {name: round(dice(mask, ref), 4) for name, ref in references.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "brain_extraction.json")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, args.threads)))
        return
    env = {**os.environ, **{v: str(args.threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                              "NUMBA_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")}}
    load_before = os.getloadavg()
    rows = []
    for case in args.cases.split(","):
        for method in args.methods.split(","):
            done = subprocess.run([sys.executable, __file__, "--one", method, case, "--threads", str(args.threads)],
                                  capture_output=True, text=True, env=env)
            if done.returncode != 0:
                rows.append({"method": method, "case": case, "error": done.stderr.strip().splitlines()[-1]})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    result = {"command": "python bench/brain_extraction.py " + " ".join(sys.argv[1:]),
              "load_average_before": [round(v, 2) for v in load_before],
              "load_average_after": [round(v, 2) for v in os.getloadavg()],
              "cpu_count": os.cpu_count(), "rows": rows}
    from pipeline_lib.core.io import write_json, write_text

    write_json(args.out, result)
    write_text(args.out.with_suffix(".md"), render(result))


def render(result: dict) -> str:
    lines = [f"Command: `{result['command']}`  ",
             f"Load average before / after (1, 5, 15 min): {result['load_average_before']} / "
             f"{result['load_average_after']} on {result['cpu_count']} cores (shared machine: noisy).", "",
             "| case | method | threads | seconds | peak RSS (MB) | brain (ml) | Dice with reference |",
             "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['case']} | {row['method']} | | error: {row['error']} | | | |")
            continue
        dice = ", ".join(f"{k} {v:.3f}" for k, v in row["dice"].items())
        lines.append(f"| {row['case']} | {row['method']} | {row['threads']} | {row['seconds']:.1f} | "
                     f"{row['peak_rss_mb']} | {row['brain_ml']:.0f} | {dice} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
