"""Learning runs of the presets' paper models on their stand-in cohorts (issue 23).

    PYTHONPATH=src nice -n 15 python bench/learning_runs_presets.py --study ballesteros_ramirez_2025
        [--subjects 24] [--models cvae,cvae_mse] [--steps-scale 1]

bench/learning_runs.py trains every family on demo-cohort slices; this bench trains what a preset
trains, on data shaped like the paper's, through the pipeline's own preprocessing:

1. the study's stand-in cohort (``cohorts.standin.make_standin``: a PACS export of DWI heads for
   Ungría Hirte et al., BraTS cases for Han et al., IXI + SALD for Ballesteros Ramirez) with
   ``--subjects`` subjects, under ``--work``;
2. the pipeline itself (``snakemake --profile profiles/local``) up to the slice datasets the
   preset's models train on, with ``presets/<study>.yaml`` and its demo-scale override
   ``presets/demo/<study>.yaml`` (the CPU-sized grid, image size and widths ``make demo
   PRESET=<study>`` uses): ingest, registration, brain extraction, the preset's selection and
   normalisation;
3. each model of ``STEPS[study]`` (and, when named in ``--models``, the diagnostic ``VARIANTS``: a
   model with some keys changed): its block as the pipeline merges it (preset, then the demo
   override), its budget replaced by the bench's step count, trained by learning_runs.run_case
   (the library's trainer, the trainer's FID at steps 0, half-way and the end against a fixed
   subset of the dataset's training slices; the real test slices are the other end of the scale).

Kazuhiro et al.'s DCGAN trains as the train job trains it: on rotations, sections and flips drawn on
the fly from the training volumes (``augmentation.mode: on_the_fly``, ``count`` per volume from the
demo override), its FID against the real training sections.

Writes bench/results/learning_runs_presets_<study>.json and .md and the sample grids under
bench/results/learning_runs_presets_<study>/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402
import yaml  # noqa: E402

from learning_runs import (FID_SHARE_BAR, SEED, background_level, real_test_fid, run_case,  # noqa: E402
                           scaled_block, write_results)
from pipeline_lib.core.figures import save_grid  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

# Step budgets per study and model: the demo-cohort rows' budgets for the same families
# (bench/results/learning_runs.md) where they met the bar.
STEPS: dict[str, dict[str, int]] = {
    "ballesteros_ramirez_2025": {"cvae": 2000, "cvae_mse": 2000},
    "ungria_hirte_2020": {"vae": 6000, "dfc_vae": 1000, "intro_vae": 1200, "stylegan": 3000},
    "han_2018": {"dcgan_t1_128": 6000, "wgan_t1_128": 10000},
    "kazuhiro_2018": {"dcgan": 1500},
}
# Diagnostic rows of models that missed: (the preset's model, keys that replace its block's, steps).
VARIANTS: dict[str, dict[str, tuple[str, dict[str, Any], int]]] = {
    # the DCGAN's FID oscillates (45 % half-way, 52 % at 6000): the learning rate decayed to 0, which
    # ended WGAN-GP's oscillation on the demo cohort (bench/results/learning_runs_notes.md)
    "han_2018": {"dcgan_t1_128_cosine": ("dcgan_t1_128", {"lr_schedule": "cosine"}, 6000),
                 # the WGAN misses on both cohorts (73-80 %): does the decay help weight clipping too?
                 "wgan_t1_128_cosine": ("wgan_t1_128", {"lr_schedule": "cosine"}, 10000),
                 # ... it does not (79 %): five times the budget (10,000 generator updates)?
                 "wgan_t1_128_50000": ("wgan_t1_128", {}, 50000)},
}
# keys of a model block that the bench sets itself or that belong to the workflow: run_case measures
# the FID curve instead of the test loss (validate_every) and checkpoints at its FID steps
WORKFLOW_KEYS = ("enabled", "dataset", "seeds", "validate_every", "checkpoint_every")


def cases_of(study: str) -> dict[str, tuple[str, dict[str, Any], int]]:
    """Every row the bench can run for ``study``: its models (name -> the model, no change, steps)
    and the diagnostic VARIANTS, which run only when named in ``--models``."""
    return {**{name: (name, {}, steps) for name, steps in STEPS[study].items()}, **VARIANTS.get(study, {})}


def update(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into ``base`` key by key, as Snakemake merges --configfile files."""
    out = dict(base)
    for key, value in override.items():
        out[key] = update(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def preset_config(study: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for path in (ROOT / "presets" / f"{study}.yaml", ROOT / "presets" / "demo" / f"{study}.yaml"):
        config = update(config, yaml.safe_load(path.read_text()) or {})
    return config


def build_slices(study: str, datasets: list[str], subjects: int, work: Path) -> None:
    """The stand-in cohort and the pipeline's slice datasets of it (skipped when already there)."""
    from pipeline_lib.cohorts.standin import SOURCE, make_standin

    cohort = work / "standin"
    if not (cohort / "standin.json").exists():
        make_standin(study, cohort, n_subjects=subjects, seed=SEED)
    targets = [f"results/slices/{name}/images.npy" for name in datasets]
    run = work / "run"
    command = [str(Path(sys.executable).parent / "snakemake"), "--profile", str(ROOT / "profiles" / "local"),
               "--snakefile", str(ROOT / "Snakefile"), "--directory", str(run), *targets,
               "--configfile", str(ROOT / "presets" / f"{study}.yaml"), str(ROOT / "presets" / "demo" / f"{study}.yaml"),
               "--config", f"input={{source: {cohort / SOURCE[study]}}}"]
    print("[learning_runs_presets]", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def augmented_split(run: Path, dataset: str):
    """The training split drawn on the fly from the dataset's volumes (the train job's), or None for
    a dataset without on-the-fly augmentation."""
    from pipeline_lib.imaging.augmentation import open_training_split

    folder = run / "results" / "slices" / dataset
    found = open_training_split(folder / "images.npy", folder / "slices.tsv", folder / "volumes.npy",
                                folder / "volumes.json")
    return None if found is None else found[0]


def dataset_arrays(run: Path, dataset: str, condition_on: str | None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Train/test images (N, S, S) of one slice dataset, with class indices when a model conditions."""
    from pipeline_lib.core.slices import load_split

    data: dict[str, np.ndarray] = {}
    class_names: list[str] = []
    images, table = run / "results" / "slices" / dataset / "images.npy", run / "results" / "slices" / dataset / "slices.tsv"
    for split in ("train", "test"):
        array, rows = load_split(images, table, split)
        data[f"{split}_images"] = np.asarray(array, dtype=np.float32)
        if condition_on:
            class_names = class_names or sorted(rows[condition_on].unique())
            data[f"{split}_labels"] = rows[condition_on].map({c: i for i, c in enumerate(class_names)}).to_numpy()
    return data, class_names


def save_real_grid(images: np.ndarray, path: Path) -> None:
    """16 training slices drawn with the seed (a stride would pick one slice level of every subject)."""
    rows = np.sort(np.random.default_rng(SEED).choice(len(images), min(16, len(images)), replace=False))
    save_grid(images[rows], path)


def render(payload: dict[str, Any]) -> str:
    lines = [f"# Learning runs of {payload['study']}'s paper models on its stand-in cohort (issue 23)", "",
             f"Command: `{payload['command']}`  ", f"Machine: {payload['machine']}  ",
             f"Data: {payload['data']}  ",
             f"FID: the trainer's cheap FID, {payload['fid_images']} samples against a fixed subset of as many "
             f"training slices of the model's dataset (few images bias FID upwards: compare within a dataset only).  ",
             f"Bar: final FID <= {FID_SHARE_BAR:.0%} of the untrained FID, and samples show anatomy (grids, by eye).",
             "", "| model | family | dataset | steps | wall time | FID untrained -> final (share) | FID curve "
             "| real test | bar | background (real) | grids |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in [n for n in cases_of(payload["study"]) if n in payload["cases"]]:
        row = payload["cases"][name]
        dataset = payload["datasets"][row["dataset"]]
        if "error" in row:
            lines.append(f"| {name} | {row['family']} | {row['dataset']} | - | - | failed: {row['error']} | | | no | | |")
            continue
        curve = ", ".join(f"{s}: {f:.0f}" for s, f in row["fid_curve"])
        lines.append(
            f"| {name} | {row['family']} | {row['dataset']} ({dataset['train']} slices, {dataset['image_size']} px) | "
            f"{row['steps']} | {row['wall_s'] / 60:.1f} min | {row['fid_untrained']:.1f} -> {row['fid_final']:.1f} "
            f"({row['fid_share']:.0%}) | {curve} | {dataset['real_test_fid']:.1f} | "
            f"{'meets' if row['meets_fid_bar'] else '**misses**'} | {row['background_end']:.3f} "
            f"({dataset['real_background']:.3f}) | [start]({row['grid_start']}) [end]({row['grid_end']}) |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", required=True, choices=sorted(STEPS))
    parser.add_argument("--models", default="", help="comma-separated models of the study (default: all of STEPS)")
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--fid-images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every budget (a smoke run: 0.01)")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    known = cases_of(args.study)
    names = [n for n in args.models.split(",") if n] or list(STEPS[args.study])
    unknown = sorted(set(names) - set(known))
    if unknown:
        parser.error(f"unknown models {unknown} of {args.study}; known: {', '.join(known)}")
    work = args.work or Path(f"/tmp/learning_runs_presets/{args.study}_{args.subjects}")
    out = args.out or RESULTS / f"learning_runs_presets_{args.study}.json"
    work.mkdir(parents=True, exist_ok=True)
    config = preset_config(args.study)
    from pipeline_lib.core.settings.datasets import model_dataset

    blocks = {name: {**config["models"][known[name][0]], **known[name][1]} for name in names}
    dataset_of = {name: model_dataset(config, known[name][0]) for name in names}
    datasets = sorted(set(dataset_of.values()))
    build_slices(args.study, datasets, args.subjects, work)

    grids = out.parent / out.stem
    grids.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    payload = {"command": f"PYTHONPATH=src nice -n 15 python bench/learning_runs_presets.py --study {args.study}",
               "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), torch {torch.__version__}, "
                          f"{args.threads} thread(s)",
               "study": args.study,
               "data": f"the {args.study} stand-in cohort ({args.subjects} subjects, cohorts/standin.py) through the "
                       f"pipeline's preprocessing with presets/{args.study}.yaml and presets/demo/{args.study}.yaml",
               "fid_images": args.fid_images, "seed": SEED, "datasets": dict(previous.get("datasets", {})),
               "cases": dict(previous.get("cases", {}))}
    if any(previous.get(k) != payload[k] for k in ("data", "fid_images", "seed")):
        payload["cases"], payload["datasets"] = {}, {}
    for name in names:
        block = {k: v for k, v in blocks[name].items() if k not in WORKFLOW_KEYS}
        dataset = dataset_of[name]
        data, class_names = dataset_arrays(work / "run", dataset, block.get("condition_on"))
        if dataset not in payload["datasets"]:
            save_real_grid(data["train_images"], grids / f"real_{dataset}.png")
            payload["datasets"][dataset] = {
                "train": int(len(data["train_images"])), "test": int(len(data["test_images"])),
                "image_size": int(data["train_images"].shape[-1]),
                "real_test_fid": real_test_fid(data, args.fid_images),
                "real_background": background_level(data["train_images"])}
        data_file = work / f"{dataset}.npz"
        np.savez(data_file, **data)
        block = scaled_block({**block, "budget": {"steps": known[name][2]}}, args.steps_scale)
        print(f"[learning_runs_presets] {name}: {block['budget']['steps']} steps on {dataset}", flush=True)
        try:
            row = run_case(name, block, data, data_file, work, args.fid_images, grids, class_names or None,
                           train_set=augmented_split(work / "run", dataset))
        except Exception as exc:  # one model's failure is a finding, not the end of the others
            row = {"family": block["family"], "error": f"{type(exc).__name__}: {exc}"}
        payload["cases"][name] = {**row, "dataset": dataset}
        write_results(out, payload, case=name, renderer=render)
        print(f"[learning_runs_presets] {name}: {json.dumps(row, default=str)[:400]}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
