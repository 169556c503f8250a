"""Learning runs of the 3-D families (issue 26): do their sampled volumes improve with training?

    PYTHONPATH=src nice -n 15 python bench/learning_runs_3d.py [--cases ddpm3d,ldm3d,wgan_gp3d]

The 3-D counterpart of bench/learning_runs.py, with its bar: the final FID at most half the
untrained model's, and samples that show anatomy (views, by eye).

Data: demo-cohort subjects simulated on the 2 mm MNI template (the 2-D learning runs' subjects),
brain only, each volume normalised as slicing does (95th percentile, divided by its maximum), a
96-voxel cube about the template's centre averaged 3 x 3 x 3 onto 32^3 (6 mm voxels: the grid of
configs/demo-3d.yaml), split into train and test by subject as a volume dataset is.

FID: the 2.5-D FID (evaluation/volumetric.three_plane_fid: the mean of the axial, coronal and
sagittal FIDs on the FID Inception's pool3 features) of ``--samples`` volumes against the training
volumes, at the volumetric job's slice positions (8 per plane across the central half). Few slices
bias FID upwards: compare within this table only; the test volumes against the same reference are
in the header. Also per case: brain volume (mL, voxels above 0.1) of the samples beside the real
training volumes', and the background (outer eighth of the central slices, real about 0).

The blocks are configs/demo-3d.yaml's (ddpm3d, wgan_gp3d) and bench/ldm3d_demo.py's CPU settings
(ldm3d), each with a step budget of its own. Writes bench/results/learning_runs_3d.json and .md and
orthogonal views (samples left, real test volumes right) under bench/results/learning_runs_3d/.
Cases run one after another; ``--cases`` processes side by side keep each other's rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

from learning_runs import (SEED, background_level, parse_case_arguments, run_cases, verdict,  # noqa: E402
                           write_results)
from pipeline_lib.cohorts.demo_cohort import load_mni_template_image, scanner_profile, simulate_subject  # noqa: E402
from pipeline_lib.core.figures import encode_png_gray8, to_uint8  # noqa: E402
from pipeline_lib.imaging.slicing import normalise_volume, split_subjects  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
N_SCANNERS = 2
CUBE, FACTOR = 96, 3  # 2 mm voxels cropped to 96^3, averaged 3 x 3 x 3: 32^3 of 6 mm
VOXEL_MM = 2.0 * FACTOR
SAME_SCALE = ("data", "n_samples", "seed")  # rows of one table share these

# configs/demo-3d.yaml's earlier ddpm3d block (600 steps there)
DDPM3D = {"family": "ddpm3d", "unet_channels": [16, 32, 64], "attention_levels": [False, False, False],
          "num_head_channels": [0, 0, 64], "num_res_blocks": 1, "norm_num_groups": 16, "lr": 1.0e-3,
          "batch_size": 2, "ddim_steps": 25, "ema_decay": 0.99}
# bench/ldm3d_demo.py's CPU settings (configs/demo-3d.yaml's ldm3d block)
LDM3D = {"family": "ldm3d", "ae_channels": [16, 32, 32], "ae_attention_levels": [False, False, False],
         "ae_nonlocal_attention": False, "ae_norm_num_groups": 8, "ae_num_res_blocks": 1, "latent_channels": 3,
         "ae_lr": 5e-4, "perceptual": {"backbone": "none"}, "adversarial_weight": 0.0, "unet_channels": [32, 64],
         "attention_levels": [False, True], "num_head_channels": [0, 32], "num_res_blocks": 1,
         "norm_num_groups": 16, "lr": 5e-4, "batch_size": 4, "ddim_steps": 25}

CASES: dict[str, dict[str, Any]] = {
    "ddpm3d": {**DDPM3D, "budget": {"steps": 1200}},
    "ldm3d": {**LDM3D, "autoencoder_steps": 200, "budget": {"steps": 1200}},
    # the rows above that missed, with more steps: budget or configuration?
    "ddpm3d_4000": {**DDPM3D, "budget": {"steps": 4000}},
    "ddpm3d_10000": {**DDPM3D, "budget": {"steps": 10000}},
    "ldm3d_5000": {**LDM3D, "autoencoder_steps": 500, "budget": {"steps": 5000}},
    # a budget that fits the 3-D demo's 15 minutes beside the GAN (a thread each)
    "ldm3d_3000": {**LDM3D, "autoencoder_steps": 400, "budget": {"steps": 3000}},
    # the 3-D demo's 15 minutes: a shorter autoencoder stage (300 of 4500 steps, 0.7 s each against
    # 0.08 s for a diffusion step) and 4000 critic steps for the GAN beside it
    "ldm3d_4500": {**LDM3D, "autoencoder_steps": 300, "budget": {"steps": 4500}},
    # the row above conditioned on each training volume's brain volume (Pinaya et al.'s covariate):
    # do samples follow the brain volume they are asked for?
    "ldm3d_5000_brain_volume": {**LDM3D, "autoencoder_steps": 500, "budget": {"steps": 5000},
                                "condition_on_covariates": ["brain_volume_ml"]},
    # ... where the demo cohort's brain volumes span 1,875-2,344 mL (+-11 %), less than the error of
    # one sample's measured volume. Here every subject is scaled about the grid's centre by its own
    # factor (0.7-1.1 linear, about 0.34-1.33 x the volume): a covariate of large effect, the first
    # check that conditioning can learn at all (``size_spread`` is the bench's, not the trainer's)
    "ldm3d_5000_sized": {**LDM3D, "autoencoder_steps": 500, "budget": {"steps": 5000},
                         "condition_on_covariates": ["brain_volume_ml"], "size_spread": [0.7, 1.1]},
    # configs/demo-3d.yaml's block (its budget before the demo's 4000 steps): 5000 critic steps are 1000
    # generator updates
    "wgan_gp3d": {"family": "wgan_gp3d", "width": 8, "latent_dim": 128, "batch_size": 8, "lr": 5.0e-4,
                  "budget": {"steps": 5000}},
    "wgan_gp3d_4000": {"family": "wgan_gp3d", "width": 8, "latent_dim": 128, "batch_size": 8, "lr": 5.0e-4,
                       "budget": {"steps": 4000}},
}


def demo_volumes(n_subjects: int, seed: int, test_fraction: float = 0.25) -> dict[str, np.ndarray]:
    """Train/test volumes (N, 1, 32, 32, 32) in [0, 1] of demo-cohort subjects."""
    template = np.asarray(load_mni_template_image(2).dataobj, dtype=np.float32)
    names = [f"s{i:02d}" for i in range(n_subjects)]
    split = split_subjects(names, test_fraction, seed)
    starts = [(side - CUBE) // 2 for side in template.shape]
    parts: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for index, name in enumerate(names):
        scanner = scanner_profile(index % N_SCANNERS)
        volume = simulate_subject(template, scanner, seed, index, 2.0)
        outline = simulate_subject(template, dataclasses.replace(scanner, noise=0.0), seed, index, 2.0)
        brain = normalise_volume(np.where(outline > 0.05 * outline.max(), volume, 0.0))
        cube = np.zeros((CUBE,) * 3, dtype=np.float32)
        src = tuple(slice(max(s, 0), max(s, 0) + min(CUBE, side)) for s, side in zip(starts, template.shape))
        dst = tuple(slice(max(-s, 0), max(-s, 0) + min(CUBE, side)) for s, side in zip(starts, template.shape))
        cube[dst] = brain[src]
        small = cube.reshape(32, FACTOR, 32, FACTOR, 32, FACTOR).mean(axis=(1, 3, 5))
        parts[split[name]].append(small[None])
    return {f"{part}_volumes": np.stack(items).astype(np.float32) for part, items in parts.items()}


def resized(volumes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Each volume (N, 1, D, H, W) scaled by its own factor about the grid's centre (linear)."""
    from scipy.ndimage import affine_transform

    centre = (np.asarray(volumes.shape[2:], dtype=float) - 1) / 2
    return np.stack([affine_transform(v[0], np.diag(np.full(3, 1.0 / f)), offset=centre - centre / f, order=1)[None]
                     for v, f in zip(volumes, factors)]).astype(np.float32)


def sized_cohort(data: dict[str, np.ndarray], spread: list[float], seed: int) -> dict[str, np.ndarray]:
    """The cohort with every subject's brain scaled by a factor drawn uniformly from ``spread``."""
    rng = np.random.default_rng(seed)
    return {part: resized(volumes, rng.uniform(*spread, size=len(volumes))) for part, volumes in data.items()}


def affine() -> np.ndarray:
    return np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])


class Scorer:
    """2.5-D FID against the training volumes (features of the reference cut once)."""

    def __init__(self, train: np.ndarray):
        from pipeline_lib.core.inception import extract_features, load_feature_network
        from pipeline_lib.core.pretrained import default_fid_cache, fid_inception_weights
        from pipeline_lib.evaluation.volumetric import PLANES, plane_slices, slice_positions

        self.net = load_feature_network(fid_inception_weights(default_fid_cache()), device="cpu")
        self.positions = slice_positions(train.shape[2:])
        self.planes, self.plane_slices = PLANES, plane_slices
        self.extract = extract_features
        self.real = {p: self.extract(np.ascontiguousarray(plane_slices(train, p, self.positions[p])), self.net,
                                     what="training slices") for p in PLANES}

    def central_slices(self, volumes: np.ndarray) -> np.ndarray:
        return np.concatenate([self.plane_slices(volumes, p, [volumes.shape[2:][i] // 2])
                               for i, p in enumerate(("sagittal", "coronal", "axial"))])

    def fid(self, volumes: np.ndarray) -> dict[str, float]:
        from pipeline_lib.core.inception import frechet_distance_features

        out = {}
        for p in self.planes:
            fake = self.extract(np.ascontiguousarray(self.plane_slices(volumes, p, self.positions[p])), self.net,
                                what="samples")
            out[p] = float(frechet_distance_features(fake, self.real[p]))
        out["fid_2_5d"] = float(np.mean([out[p] for p in self.planes]))
        return out


def sample_volumes(model, n: int, covariates: np.ndarray | None = None) -> np.ndarray:
    torch.manual_seed(SEED + 7)
    gen = torch.Generator().manual_seed(SEED + 7)
    labels = None if covariates is None else torch.as_tensor(covariates, dtype=torch.float32)
    with torch.no_grad():
        return np.clip(model.sample(n, labels=labels, generator=gen).float().cpu().numpy(), 0.0, 1.0)


def save_views(samples: np.ndarray, real: np.ndarray, path: Path) -> None:
    from pipeline_lib.evaluation.volumetric import orthogonal_views

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png_gray8(to_uint8(orthogonal_views(samples, real))))


def describe(samples: np.ndarray, train: np.ndarray, scorer: Scorer,
             requests: np.ndarray | None = None) -> dict[str, Any]:
    from pipeline_lib.evaluation.volumetric import brain_volume_comparison, brain_volumes_ml, covariate_following

    brain = brain_volume_comparison(samples, train, affine())
    following = {} if requests is None else {
        "following": covariate_following(requests, brain_volumes_ml(samples, affine()), seed=SEED)}
    return {**scorer.fid(samples), "brain_ml": brain["generated_ml"]["mean"],
            "background": background_level(scorer.central_slices(samples)), **following}


def brain_volume_conditions(block: dict[str, Any], train: np.ndarray, n_samples: int):
    """For a case conditioned on ``brain_volume_ml``: the training volumes' scaled brain volumes (the
    train job's labels), their scaling, and the requests to sample with (training rows drawn with
    the seed, as sample_volumes draws them) in mL and scaled; Nones for an unconditional case."""
    covariates = block.get("condition_on_covariates")
    if not covariates:
        return None, None, None, None
    from pipeline_lib.core.covariates import BRAIN_VOLUME_COLUMN, draw_requests, fit_scaling, scale
    from pipeline_lib.evaluation.volumetric import brain_volumes_ml

    if list(covariates) != [BRAIN_VOLUME_COLUMN]:
        raise SystemExit(f"the bench measures {BRAIN_VOLUME_COLUMN} only, not {covariates}")
    values = brain_volumes_ml(train, affine())[:, None]
    scaling = fit_scaling(values, covariates, "bench")
    requests = draw_requests(values, n_samples, SEED)
    return scale(values, scaling), scaling, requests[:, 0], scale(requests, scaling)


RESPONSE_LEVELS = (0.0, 0.25, 0.5, 0.75, 1.0)  # scaled requests: the training range's min ... max


def covariate_response(model, scaling: list[dict[str, Any]], n_noises: int) -> dict[str, Any]:
    """Does the sample follow the request when nothing else changes? ``n_noises`` starting noises,
    each sampled at every level of RESPONSE_LEVELS (the same noise at every level): per noise the
    Spearman correlation of measured brain volume with the request, and the mean measured volume
    per level. Samples that a model spoils whatever it is asked (saturated ones) lower the unpaired
    check's r without saying anything about conditioning; here they show as a flat noise."""
    from scipy.stats import spearmanr

    from pipeline_lib.core.covariates import unscale
    from pipeline_lib.evaluation.volumetric import brain_volumes_ml

    measured = np.stack([brain_volumes_ml(sample_volumes(model, n_noises, np.full((n_noises, 1), level,
                                                                                  dtype=np.float32)), affine())
                         for level in RESPONSE_LEVELS], axis=1)  # (noise, level)
    rho = np.array([spearmanr(RESPONSE_LEVELS, row).statistic if np.ptp(row) > 0 else 0.0 for row in measured])
    requested = unscale(np.array(RESPONSE_LEVELS)[:, None], scaling)[:, 0]
    return {"n_noises": n_noises, "requested_ml": [round(float(v), 1) for v in requested],
            "mean_measured_ml": [round(float(v), 1) for v in measured.mean(axis=0)],
            "median_spearman": float(np.median(rho)), "share_increasing": float(np.mean(rho > 0.5)),
            "measured_ml": measured.round(1).tolist()}


def run_case(name: str, block: dict[str, Any], data: dict[str, np.ndarray], scorer: Scorer, work: Path,
             n_samples: int, views: Path) -> dict[str, Any]:
    from pipeline_lib.core.runtime import select_device
    from pipeline_lib.core.settings import TrainerSettings, family_hparams
    from pipeline_lib.models.training import build_seeded_model, load_trained_model, train_model

    steps = block["budget"]["steps"]
    block = {**block, "seed": SEED, "checkpoint_every": max(1, steps // 4)}
    spread = block.pop("size_spread", None)
    if spread:  # a cohort of its own, scored against its own training volumes
        data = sized_cohort(data, spread, SEED)
        scorer = Scorer(data["train_volumes"])
    train, test = data["train_volumes"], data["test_volumes"]
    settings = TrainerSettings.from_block(name, block)
    labels, scaling, requests, asked = brain_volume_conditions(block, train, n_samples)
    untrained = build_seeded_model(settings, family_hparams(block), train, 0, select_device("cpu"),
                                   n_covariates=len(scaling or ()))
    untrained.eval()
    start_samples = sample_volumes(untrained, n_samples, asked)
    response_start = covariate_response(untrained, scaling, n_samples) if scaling else None
    del untrained
    start = describe(start_samples, train, scorer, requests)
    save_views(start_samples, test, views / f"{name}_start.png")

    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    summary = train_model(name, block, train, labels, out / "weights.pt", out / "losses.csv", work / "checkpoints",
                          device="cpu", covariates=scaling)
    wall = time.perf_counter() - clock
    trained, _ = load_trained_model(out / "weights.pt", device="cpu")
    end_samples = sample_volumes(trained, n_samples, asked)
    end = describe(end_samples, train, scorer, requests)
    if scaling:
        start["response"], end["response"] = response_start, covariate_response(trained, scaling, n_samples)
    save_views(end_samples, test, views / f"{name}_end.png")
    import pandas as pd

    losses = pd.read_csv(out / "losses.csv")
    fifth = max(1, len(losses) // 5)
    loss_columns = [c for c in losses.columns if c not in ("step", "epoch", "seconds", "stage", "lr")]
    return {"family": block["family"], "steps": steps, "wall_s": round(wall, 1), "s_per_step": round(wall / steps, 3),
            "complete": summary.get("status", "complete"), "start": start, "end": end,
            **verdict(start["fid_2_5d"], end["fid_2_5d"]),
            "loss_first_fifth": {c: float(losses[c].head(fifth).mean()) for c in loss_columns},
            "loss_last_fifth": {c: float(losses[c].tail(fifth).mean()) for c in loss_columns},
            "views_start": f"learning_runs_3d/{name}_start.png", "views_end": f"learning_runs_3d/{name}_end.png",
            "hparams": {k: v for k, v in block.items() if k != "seed"},
            **({"size_spread": spread, "real_brain_ml": own_brain_ml(train)} if spread else {})}


def own_brain_ml(train: np.ndarray) -> float:
    """Mean brain volume (mL) of a case's own training volumes (a sized cohort's)."""
    from pipeline_lib.evaluation.volumetric import brain_volumes_ml

    return float(brain_volumes_ml(train, affine()).mean())


def render(payload: dict[str, Any]) -> str:
    real = payload["real"]
    lines = ["# Learning runs of the 3-D families (issue 26)", "",
             f"Command: `{payload['command']}`  ",
             f"Machine: {payload['machine']}  ",
             f"Data: {payload['data']['description']}: {payload['data']['train']} training, "
             f"{payload['data']['test']} test volumes of 32^3 (6 mm voxels).  ",
             f"FID: 2.5-D (mean of the three planes' FIDs), {payload['n_samples']} sampled volumes x 8 slices per "
             f"plane against the training volumes' slices at the same positions (few slices bias FID upwards: "
             f"compare within this table only). Real test volumes against the same reference: "
             f"**{real['fid_2_5d']:.1f}** (axial {real['axial']:.0f}, coronal {real['coronal']:.0f}, sagittal "
             f"{real['sagittal']:.0f}); their brain volume {real['brain_ml']:.0f} mL, background "
             f"{real['background']:.3f}.  ",
             f"Bar: final 2.5-D FID <= {payload['bar_fid_share']:.0%} of the untrained one, and views that show "
             f"anatomy (by eye).", "",
             "| case | family | steps | wall time | 2.5-D FID untrained -> final (share) | per plane, final (ax/cor/sag) "
             "| bar | brain mL, final (real) | background, final | views |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in [n for n in CASES if n in payload["cases"]] + [n for n in payload["cases"] if n not in CASES]:
        row = payload["cases"][name]
        if "error" in row:
            lines.append(f"| {name} | {row['family']} | - | - | failed: {row['error']} | | no | | | |")
            continue
        s, e = row["start"], row["end"]
        lines.append(
            f"| {name}{_cohort_note(row)} | {row['family']} | {row['steps']} | {row['wall_s'] / 60:.1f} min | "
            f"{s['fid_2_5d']:.1f} -> {e['fid_2_5d']:.1f} ({row['fid_share']:.0%}) | "
            f"{e['axial']:.0f} / {e['coronal']:.0f} / {e['sagittal']:.0f} | "
            f"{'meets' if row['meets_fid_bar'] else '**misses**'} | {e['brain_ml']:.0f} "
            f"({row.get('real_brain_ml', real['brain_ml_train']):.0f}) | "
            f"{e['background']:.3f} | [start]({row['views_start']}) [end]({row['views_end']}) |")
    followed = [(n, r) for n, r in payload["cases"].items() if "error" not in r and "following" in r["end"]]
    if followed:
        lines += ["", "Covariate-conditional cases: each of the sampled volumes is asked for a training volume's "
                  "brain volume (drawn with the seed); measured on the sample as on the real volumes. "
                  "MAE if ignored: the error with the measured values shuffled over the samples (a model that "
                  "ignores each request). A case with sizes has a cohort of its own: every subject scaled about "
                  "the grid's centre by a factor drawn from the range, its FIDs against its own training volumes.",
                  "",
                  "| case | Pearson r, untrained -> final | slope | MAE (mL) | MAE if ignored (mL) | requested range (mL) |",
                  "|---|---|---|---|---|---|"]
        for name, row in followed:
            s, e = row["start"]["following"], row["end"]["following"]
            lines.append(f"| {name}{_cohort_note(row)} | {_num(s['pearson_r'])} -> {_num(e['pearson_r'])} | {_num(e['slope'])} | "
                         f"{s['mae']:.0f} -> {e['mae']:.0f} | {e['mae_if_ignored']:.0f} | "
                         f"{e['requested']['min']:.0f}-{e['requested']['max']:.0f} |")
    responding = [(n, r) for n, r in followed if "response" in r["end"]]
    if responding:
        first = responding[0][1]["end"]["response"]
        lines += ["", f"The same {first['n_noises']} starting noises sampled at five requests each (the training "
                  "range's minimum, quartiles and maximum): the mean measured brain volume per request, the median "
                  "over noises of the Spearman correlation between request and measured volume, and the share of "
                  "noises whose volume rises with the request (Spearman above 0.5). A model that ignores the "
                  "covariate gives flat rows (0 and 0 %), a spoilt sample a flat row too.", "",
                  "| case | requested (mL) | measured, untrained (mL) | measured, final (mL) "
                  "| median Spearman, untrained -> final | rising, untrained -> final |", "|---|---|---|---|---|---|"]
        for name, row in responding:
            s, e = row["start"]["response"], row["end"]["response"]
            lines.append(f"| {name}{_cohort_note(row)} | {' / '.join(f'{v:.0f}' for v in e['requested_ml'])} | "
                         f"{' / '.join(f'{v:.0f}' for v in s['mean_measured_ml'])} | "
                         f"{' / '.join(f'{v:.0f}' for v in e['mean_measured_ml'])} | "
                         f"{s['median_spearman']:.2f} -> {e['median_spearman']:.2f} | "
                         f"{s['share_increasing']:.0%} -> {e['share_increasing']:.0%} |")
    lines.append("")
    return "\n".join(lines)


def add_responses(names: list[str], data: dict[str, np.ndarray], payload: dict[str, Any], work: Path,
                  n_samples: int) -> None:
    """The paired-noise response of finished covariate cases that lack it, from their saved weights
    under ``work`` and the untrained model their seed builds (training nothing)."""
    from pipeline_lib.core.runtime import select_device
    from pipeline_lib.core.settings import TrainerSettings, family_hparams
    from pipeline_lib.models.training import build_seeded_model, load_trained_model

    for name in names:
        row = payload["cases"].get(name)
        weights = work / name / "weights.pt"
        if row is None or "error" in row or "following" not in row["end"] or not weights.exists():
            continue
        block = {**CASES[name], "seed": SEED}
        spread = block.pop("size_spread", None)
        cohort = sized_cohort(data, spread, SEED) if spread else data
        if spread:
            row["real_brain_ml"] = own_brain_ml(cohort["train_volumes"])
        trained, summary = load_trained_model(weights, device="cpu")
        scaling = summary["covariates"]
        untrained = build_seeded_model(TrainerSettings.from_block(name, block), family_hparams(block),
                                       cohort["train_volumes"], 0, select_device("cpu"), n_covariates=len(scaling))
        untrained.eval()
        row["start"]["response"] = covariate_response(untrained, scaling, n_samples)
        row["end"]["response"] = covariate_response(trained, scaling, n_samples)
        print(f"[learning_runs_3d] {name}: response {row['end']['response']['mean_measured_ml']}", flush=True)


def _cohort_note(row: dict[str, Any]) -> str:
    spread = row.get("size_spread")
    return f" (sizes x{spread[0]:g}-{spread[1]:g})" if spread else ""


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--samples", type=int, default=16, help="sampled volumes per FID (x 8 slices per plane)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every budget (a smoke run: 0.01)")
    parser.add_argument("--respond", action="store_true",
                        help="only add the paired-noise response to finished covariate cases that lack it (their "
                             "weights under --work), training nothing")
    args, names = parse_case_arguments(parser, argv, CASES, Path("/tmp/learning_runs_3d"),
                                       RESULTS / "learning_runs_3d.json")
    args.work.mkdir(parents=True, exist_ok=True)
    data = demo_volumes(args.subjects, SEED)
    scorer = Scorer(data["train_volumes"])
    from pipeline_lib.evaluation.volumetric import brain_volume_comparison

    real_brain = brain_volume_comparison(data["test_volumes"], data["train_volumes"], affine())
    payload = {
        "command": "PYTHONPATH=src nice -n 15 python bench/learning_runs_3d.py",
        "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), torch {torch.__version__}, {args.threads} thread(s)",
        "data": {"description": f"demo-cohort volumes ({args.subjects} simulated subjects, 2 scanners)",
                 "train": int(len(data["train_volumes"])), "test": int(len(data["test_volumes"]))},
        "n_samples": args.samples, "seed": SEED, "bar_fid_share": 0.5,
        "real": {**scorer.fid(data["test_volumes"]), "brain_ml": real_brain["generated_ml"]["mean"],
                 "brain_ml_train": real_brain["real_ml"]["mean"],
                 "background": background_level(scorer.central_slices(data["test_volumes"]))},
        "cases": {},
    }
    views = args.out.parent / args.out.stem
    if args.respond:
        payload = json.loads(args.out.read_text())
        add_responses(names, data, payload, args.work, args.samples)
        write_results(args.out, payload, renderer=render)
        return 0
    if not args.out.exists():
        write_results(args.out, payload, renderer=render)
    def save(name: str, row: dict[str, Any]) -> None:
        payload["cases"][name] = row
        write_results(args.out, payload, case=name, renderer=render, same_scale=SAME_SCALE)

    run_cases(names, CASES, args.steps_scale,
              lambda name, block: run_case(name, block, data, scorer, args.work, args.samples, views),
              save, "learning_runs_3d")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
