"""Peak resident memory of each rule's data path at the papers' published cohort sizes and at
40,000 subjects, against the memory the workflow requests for that job (issue 22).

    PYTHONPATH=src:bench nice -n 10 python bench/rule_rss.py [--cohorts ungria_hirte_2029,...]
        [--jobs train,sample,...] [--time-cap 900] [--scratch DIR]

A cohort is a preset's slice dataset at a stated size (``COHORTS``): Ungría Hirte et al.'s 2,029
subjects (26 axial slices each at 128 px), Han et al.'s Concat dataset on BraTS 2021 (1,251
cases x 4 sequences x 70 sagittal slices at 128 px), Ballesteros Ramirez's IXI + SALD (1,075
subjects x 10 slices at 256 px, four scanner labels) and a 40,000-subject cohort with Ungría
Hirte's slicing (1,040,000 slices, 68 GB of float32). For each, this writes ``images.npy`` at full
size as a sparse file (``np.lib.format.open_memmap``: the first ``WRITTEN`` images hold a ramp
plus noise; every other image only a first row of its own value, so it takes one page of disk and
no two images are alike) and a ``slices.tsv`` of every row (subject,
split, labels), then runs each rule's library function in a fresh one-thread process, as the rule
calls it:

- ``slice_dataset``: ``build_slice_dataset`` over one registered NIfTI per subject on the preset's
  registration grid (every subject's entry names one of 8 files, so the cohort is read in full
  without 40,000 files on disk);
- ``train``: ``train_job`` with the preset's model block (published width and batch) for 3 steps:
  the split opened, fingerprinted and read through the loader;
- ``sample``: ``sample_job`` on those weights: the preset's sample count and reconstructions;
- the evaluation jobs of ``bench/eval_rss.py`` (its ``run_job``) on those samples, with small
  networks (30 steps; memory does not depend on the step count).

Each job's peak is the process's ``VmHWM``; the request is the job's attempt-1 ``mem_mb`` from
``pipeline_lib.core.resources`` with the arguments ``workflow/rules/common.smk`` passes it. A job
still running after ``--time-cap`` seconds is stopped and reported with the peak it had reached
(polled from ``/proc``), marked as partial: its verdict covers only that part.

- ``real_features``: ``real_features_job`` on ``FEATURE_IMAGES`` images of the train split (Inception
  runs at about 5 images/s on these CPUs, so a published split takes hours), compared with the
  request for that many images: the fixed part; the features of more images add 2 x 16 KB each.

Not run here: ``model_features``, ``fid_samples`` and ``distribution_metrics`` (their inputs are a
run's samples and feature files, not the cohort); ``bench/metrics.py`` measures FID at Ungría
Hirte's scale. Kazuhiro et al.'s on-the-fly
augmentation: ``bench/augmentation_rss.py``.

Writes ``bench/results/rule_rss.json`` and ``.md`` (rows of earlier runs of other cohorts are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import eval_rss  # noqa: E402  (the evaluation jobs, called as their rules call them)

#: Images of a synthetic dataset that hold content; the rest of the file is a hole (zeros).
WRITTEN = 4096
TRAIN_STEPS = 3
#: Distinct registered volumes the slice_dataset job reads (each subject names one of them).
DISTINCT_VOLUMES = 8


@dataclass(frozen=True)
class Cohort:
    preset: str
    dataset: str
    model: str
    subjects: int
    sequences: tuple[str, ...]
    slices_per_volume: int
    size: int
    #: the slice table's class column and its values (conditioning, utility, domain network)
    label_column: str
    labels: tuple[str, ...]
    test_fraction: float
    #: slice_dataset is run (False where reading the cohort's volumes takes too long on 2 CPUs)
    slice: bool = True

    @property
    def images(self) -> int:
        return self.subjects * len(self.sequences) * self.slices_per_volume


COHORTS = {
    # a tenth of the cohort: what grows with the number of slices shows against the next column
    "ungria_hirte_203": Cohort("ungria_hirte_2020", "dwi", "vae", 203, ("image",), 26, 128, "sex", ("F", "M"), 0.2),
    "ungria_hirte_2029": Cohort("ungria_hirte_2020", "dwi", "vae", 2029, ("image",), 26, 128, "sex", ("F", "M"), 0.2),
    # Han et al.'s Concat: every sequence's slices as grey images (the preset's concat_128)
    "han_concat_1251": Cohort("han_2018", "concat_128", "dcgan_concat_128", 1251, ("t1", "t1ce", "t2", "flair"), 70,
                              128, "sex", ("F", "M"), 0.1, slice=False),
    "ballesteros_1075": Cohort("ballesteros_ramirez_2025", "central10", "cvae", 1075, ("image",), 10, 256,
                               "scanner", ("IXI-Guys", "IXI-HH", "IXI-IOP", "SALD"), 0.2, slice=False),
    # slice_dataset would write 68 GB of slices here (more than this machine's free disk): its
    # growth shows between the two columns above
    "biobank_40000": Cohort("ungria_hirte_2020", "dwi", "vae", 40000, ("image",), 26, 128, "sex", ("F", "M"), 0.2,
                            slice=False),
}
JOBS = ("slice_dataset", "train", "sample") + eval_rss.JOBS + ("real_features",)
#: Images of the train split the real_features job runs through Inception (about 5 images/s on
#: these CPUs): its blocks are read from the full-size file; the features of the rest of the split
#: would add 2 x 16 KB each, as core.resources.features_mb counts them.
FEATURE_IMAGES = 512
#: Jobs that read the domain network's weights.
NETWORK_JOBS = ("memorization", "domain_metrics", "domain_metrics_original", "utility")
#: Jobs that only write "not conditional" for an unconditional model (nothing to measure).
CONDITIONAL_JOBS = ("conditioning", "utility")


def preset(cohort: Cohort) -> dict:
    import yaml

    return yaml.safe_load((REPO / "presets" / f"{cohort.preset}.yaml").read_text())


def subject_table(cohort: Cohort):
    import pandas as pd

    subjects = [f"sub-{i:05d}" for i in range(cohort.subjects)]
    return pd.DataFrame({"subject": subjects, cohort.label_column: [cohort.labels[i % len(cohort.labels)]
                                                                     for i in range(cohort.subjects)],
                         "grade": "HGG"})


def synthesise(folder: Path, cohort: Cohort) -> None:
    """images.npy at full size (sparse beyond WRITTEN) and its slices.tsv."""
    import pandas as pd

    n, size = cohort.images, cohort.size
    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.float32, shape=(n, size, size))
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[None, :, None]
    for start in range(0, min(n, WRITTEN), 512):
        stop = min(n, start + 512, WRITTEN)
        images[start:stop] = 0.5 * ramp + 0.5 * rng.random((stop - start, size, size), dtype=np.float32)
    images.flush()
    offset, image_bytes = int(images.offset), size * size * 4
    del images
    # every further image gets a first row of its own (one page of disk each), so no two images
    # are identical: a set of identical images is a case of its own (ties in the PRDC balls)
    with open(folder / "images.npy", "r+b") as handle:
        for i in range(WRITTEN, n):
            os.pwrite(handle.fileno(), np.full(size, (i * 0.6180339887) % 1.0, np.float32).tobytes(),
                      offset + i * image_bytes)
    per_subject = len(cohort.sequences) * cohort.slices_per_volume
    subject = np.arange(n) // per_subject
    within = np.arange(n) % per_subject
    # every 1/test_fraction-th subject is a test subject, as split_subjects draws about that many
    test_every = int(round(1 / cohort.test_fraction))
    pd.DataFrame({
        "row": np.arange(n), "subject": np.char.add("sub-", np.char.zfill(subject.astype(str), 5)),
        "slice_index": within % cohort.slices_per_volume,
        "split": np.where(subject % test_every == test_every - 1, "test", "train"), "axis": "axial",
        "augmented": 0, "sequence": np.asarray(cohort.sequences)[within // cohort.slices_per_volume],
        cohort.label_column: np.asarray(cohort.labels)[subject % len(cohort.labels)],
    }).to_csv(folder / "slices.tsv", sep="\t", index=False)


def registered_volumes(folder: Path, cohort: Cohort, grid: tuple[int, int, int]) -> dict:
    """subject -> {sequence -> NIfTI}: DISTINCT_VOLUMES head-like volumes on ``grid``, shared."""
    import nibabel as nib

    rng = np.random.default_rng(1)
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in grid], indexing="ij")
    head = (sum(a ** 2 for a in axes) < 0.8).astype(np.float32)
    paths = []
    for i in range(DISTINCT_VOLUMES):
        path = folder / "registered" / f"volume{i}.nii"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = head * (100 + 20 * rng.random(grid, dtype=np.float32))
        nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0])), path)
        paths.append(path)
    return {f"sub-{i:05d}": {sequence: paths[(i + k) % DISTINCT_VOLUMES] for k, sequence in enumerate(cohort.sequences)}
            for i in range(cohort.subjects)}


def model_block(cohort: Cohort) -> dict:
    block = dict(preset(cohort)["models"][cohort.model])
    block.update(seed=0, budget={"steps": TRAIN_STEPS}, checkpoint_every=10 ** 6)
    return block


def sampling(cohort: Cohort) -> dict:
    return {"n": 1000, "n_reconstruct": 1000, "seed": 0, **(preset(cohort).get("sampling") or {})}


def run_job(job: str, folder: Path, cohort: Cohort) -> dict:
    """One rule's library call on the cohort's synthetic files under ``folder``."""
    from pipeline_lib.core.jobs import return_freed_host_memory
    from pipeline_lib.core.runtime import configure_threads

    return_freed_host_memory()  # as core.jobs.start_job does for every rule's script
    configure_threads(1)
    if job == "slice_dataset":
        from pipeline_lib.imaging.slicing import SliceSpec, build_slice_dataset

        config = preset(cohort)
        grid = tuple(config["registration"]["grid"])
        registered = registered_volumes(folder / "slicing", cohort, grid)
        table = build_slice_dataset(registered, subject_table(cohort), folder / "slicing" / "images.npy",
                                    folder / "slicing" / "slices.tsv",
                                    SliceSpec.from_settings(config["datasets"][cohort.dataset]))
        return {"rows": len(table)}
    if job == "train":
        from pipeline_lib.models.training import train_job

        train_job(cohort.model, model_block(cohort), folder / "images.npy", folder / "slices.tsv",
                  weights=folder / "weights.pt", losses=folder / "losses.csv", summary=folder / "summary.json",
                  checkpoint_root=folder / "checkpoints", validation=folder / "validation.tsv",
                  snapshots=folder / "snapshots.png", threads=1)
        return {}
    if job == "sample":
        from pipeline_lib.models.sampling import sample_job

        sample_job(folder / "weights.pt", folder / "images.npy", folder / "slices.tsv", sampling(cohort),
                   samples=folder / "samples.npy", grid=folder / "grid.png",
                   reconstructions=folder / "reconstructions.npy", labels=folder / "labels.tsv", threads=1)
        return {"samples": int(np.load(folder / "samples.npy", mmap_mode="r").shape[0])}
    if job == "real_features":
        from pipeline_lib.evaluation.fid import fid_weights_job, real_features_job

        weights = fid_weights_job(folder / "pt_inception.pth")
        done = real_features_job(weights, folder / "images.npy", folder / "slices.tsv", "train",
                                 folder / "features.npz", settings={"max_real": FEATURE_IMAGES, "device": "cpu"},
                                 threads=1)
        return {"featurised": done["n_images"]}
    out = folder / "evaluation"
    out.mkdir(exist_ok=True)
    eval_rss.run_job(job, folder, out, n_reconstruct=sampling(cohort)["n_reconstruct"],
                     label_column=cohort.label_column)
    return {}


def request_mb(job: str, cohort: Cohort, n_samples: int) -> int:
    """The job's attempt-1 mem_mb as workflow/rules/common.smk computes it (mem_slice_dataset,
    mem_train, mem_sample, mem_streamed)."""
    from pipeline_lib.core import resources

    dataset = resources.ImageSet(cohort.images, cohort.size ** 2)
    block, config = model_block(cohort), preset(cohort)
    if job == "slice_dataset":
        mb = resources.slice_dataset_mb(dataset, tuple(config["registration"]["grid"]))
    elif job == "train":
        mb = resources.train_mb(block["family"], int(block["batch_size"]), dataset)
    elif job == "real_features":
        mb = resources.features_mb(resources.ImageSet(min(FEATURE_IMAGES, dataset.images), dataset.pixels))
    elif job == "sample":
        # common.smk's mem_sample counts sampling.n, also for a per-class plan (n_per_class x classes)
        settings = sampling(cohort)
        mb = resources.sample_mb(block["family"], settings["n"] + settings["n_reconstruct"], int(block["batch_size"]), dataset)
    else:
        original = job in ("domain_network", "metrics_original", "domain_metrics_original", "diversity_original")
        samples = None if original else resources.ImageSet(n_samples, dataset.pixels)
        mb = resources.streamed_evaluation_mb(dataset, samples, eval_rss.STREAMED_HELD.get(job, 0))
    return resources.request_mb(mb, 1)


def ensure_network(folder: Path, cohort: Cohort) -> None:
    """network.pt for the jobs that read it when the domain_network job was stopped before writing
    it (its evaluation of a biobank's training split outlasts the time cap): the same job on the
    first WRITTEN images, in this process and not measured; the weights do not change the memory
    of the jobs that use them."""
    import pandas as pd

    if (folder / "network.pt").exists():
        return
    from pipeline_lib.core.io import write_npy, write_tsv
    from pipeline_lib.evaluation.domain_features import domain_network_job

    head = folder / "network_head"
    head.mkdir(exist_ok=True)
    n = min(WRITTEN, cohort.images)
    write_npy(head / "images.npy", np.array(np.load(folder / "images.npy", mmap_mode="r")[:n]))
    write_tsv(head / "slices.tsv", pd.read_csv(folder / "slices.tsv", sep="\t", nrows=n))
    domain_network_job(head / "images.npy", head / "slices.tsv", out_network=folder / "network.pt",
                       out_summary=head / "network.json",
                       settings={**eval_rss.SMALL_CNN, "label_column": cohort.label_column}, threads=1)


def status_mb(pid: int, key: str = "VmHWM") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(job: str, folder: Path, cohort: Cohort, time_cap: float) -> dict:
    """Run one job in a fresh process; its own VmHWM at the end, or the last polled one when it
    had to be stopped at ``time_cap``."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO / 'bench'}", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--worker", job, str(folder), json.dumps(asdict(cohort))], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    peak, anon = 0.0, 0.0
    while child.poll() is None:
        peak = max(peak, status_mb(child.pid) or 0.0)
        anon = max(anon, status_mb(child.pid, "RssAnon") or 0.0)
        if time.perf_counter() - started > time_cap:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            return {"peak_rss_mb": round(peak, 1), "peak_anon_mb": round(anon, 1), "seconds": round(time.perf_counter() - started, 1),
                    "finished": False}
        time.sleep(0.5)
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"{job} on {cohort} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "peak_anon_mb": round(anon, 1), "seconds": round(time.perf_counter() - started, 1),
            "finished": True}


def render(rows: list[dict]) -> str:
    cohorts = [name for name in COHORTS if any(r["cohort"] == name for r in rows)]
    head = " | ".join(f"{name}: {COHORTS[name].images:,} × {COHORTS[name].size}² "
                      f"({COHORTS[name].images * COHORTS[name].size ** 2 * 4 / 1e9:.1f} GB)" for name in cohorts)
    lines = [f"| job | {head} |", "|---" * (len(cohorts) + 1) + "|"]
    for job in JOBS:
        cells = []
        for name in cohorts:
            found = [r for r in rows if r["cohort"] == name and r["job"] == job]
            if not found:
                cells.append("unconditional: a note only" if job in CONDITIONAL_JOBS
                             and not model_block(COHORTS[name]).get("condition_on") else "not run")
                continue
            row = found[-1]
            mark = "" if row["finished"] else f" (stopped at {row['seconds']:.0f} s)"
            verdict = "ok" if row["peak_rss_mb"] <= row["request_mb"] else "**over**"
            cells.append(f"{row['peak_rss_mb']:,.0f} / {row['request_mb']:,} {verdict}{mark}")
        lines.append(f"| {job} | " + " | ".join(cells) + " |")
    lines += ["", "Peak RSS (MB, VmHWM of a fresh one-thread process) / the job's attempt-1 request (mem_mb, "
              "core.resources as common.smk calls it). real_features: "
              f"{FEATURE_IMAGES} images of the train split through Inception, against the request for that many "
              "(each further image adds 2 x 16 KB of features to both). Seconds per job: rule_rss.json."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohorts", default=",".join(COHORTS))
    parser.add_argument("--jobs", default=",".join(JOBS))
    parser.add_argument("--time-cap", type=float, default=900.0, help="seconds after which a job is stopped")
    parser.add_argument("--scratch", type=Path, help="folder for the synthetic cohorts (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/rule_rss.json")
    parser.add_argument("--worker", nargs=3, metavar=("JOB", "FOLDER", "COHORT_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        job, folder, fields = args.worker
        cohort = Cohort(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(fields).items()})
        result = run_job(job, Path(folder), cohort)
        print(json.dumps({**result, "peak_rss_mb": round(status_mb(os.getpid()), 1)}))
        return

    from pipeline_lib.core.io import atomic_path

    previous = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    names, jobs = args.cohorts.split(","), args.jobs.split(",")
    rows = [r for r in previous if r["cohort"] not in names or r["job"] not in jobs]
    for name in names:
        cohort = COHORTS[name]
        with tempfile.TemporaryDirectory(prefix=f"rule_rss_{name}_", dir=args.scratch) as tmp:
            folder = Path(tmp)
            started = time.perf_counter()
            synthesise(folder, cohort)
            print(f"{name}: {cohort.images:,} images synthesised in {time.perf_counter() - started:.0f} s", flush=True)
            n_samples = 0
            for job in jobs:
                if job == "slice_dataset" and not cohort.slice:
                    continue
                if job in CONDITIONAL_JOBS and not model_block(cohort).get("condition_on"):
                    continue
                if job in NETWORK_JOBS:
                    ensure_network(folder, cohort)
                result = measure(job, folder, cohort, args.time_cap)
                n_samples = result.get("samples", n_samples)
                rows.append({"cohort": name, "job": job, "n_images": cohort.images, "image_size": cohort.size,
                             "request_mb": request_mb(job, cohort, n_samples or sampling(cohort)["n"]), **result})
                print(rows[-1], flush=True)
                if job == "slice_dataset":
                    shutil.rmtree(folder / "slicing", ignore_errors=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out) as tmp, open(tmp, "w") as fh:
            json.dump({"written_images": WRITTEN, "train_steps": TRAIN_STEPS, "rows": rows}, fh, indent=1)
        with atomic_path(args.out.with_suffix(".md")) as tmp, open(tmp, "w") as fh:
            fh.write(render(rows))
    print(render(rows))


if __name__ == "__main__":
    main()
