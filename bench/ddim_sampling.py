"""DDIM sampling time per image against the number of steps, for the ddpm and ldm families.

    python bench/ddim_sampling.py --out bench/results/ddim_sampling.json [--quick]

For each configuration (the demo's CPU-sized ddpm and ldm, and the ddpm at the
widths of MONAI's 2-D DDPM tutorial), a model with random weights (speed does
not depend on their values) draws ``--n`` images at 64 px with
``pipeline_lib.models.sampling.draw_samples`` (the sample rule's code path) for
every step count; the table gives the median over repeats of wall-clock and
process CPU seconds per image. Unconditional models, so one UNet pass per step
(classifier-free guidance doubles the batch of every pass). The CPU time is the
steadier number on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from pipeline_lib.core.io import write_json, write_text
from pipeline_lib.models import build_model
from pipeline_lib.models.sampling import draw_samples

warnings.filterwarnings("ignore", message="The value of the smallest subnormal")

SIZE = 64
#: label -> (family, hyperparameters); the demo's values are those of config.yaml.
CONFIGS = {
    "ddpm (demo widths)": ("ddpm", {"unet_channels": [16, 32, 32], "attention_levels": [False, False, True],
                                    "num_head_channels": 32, "norm_num_groups": 8}),
    "ldm (demo widths)": ("ldm", {"ae_channels": [16, 32, 32], "ae_norm_num_groups": 8, "latent_channels": 3,
                                  "ae_num_res_blocks": 1, "perceptual": {"backbone": "none"},
                                  "adversarial_weight": 0.0, "unet_channels": [32, 64], "norm_num_groups": 8,
                                  "attention_levels": [False, True], "num_res_blocks": 1,
                                  "num_head_channels": [0, 64]}),
    "ddpm (tutorial widths)": ("ddpm", {}),
}
#: Step counts per configuration (the tutorial-width UNet is ~30x the demo's per pass: fewer counts).
FULL = {"steps": {"ddpm (demo widths)": [10, 25, 50, 100], "ldm (demo widths)": [10, 25, 50, 100],
                  "ddpm (tutorial widths)": [10, 25]}, "repeats": 2, "n": 8}
QUICK = {"steps": {label: [5, 10] for label in CONFIGS}, "repeats": 1, "n": 4}


def time_sampling(family: str, hparams: dict, steps: int, n: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_model(family, SIZE, hparams)
    model.eval()
    model.denoiser.ddim_steps = steps
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        draw_samples(model, n, seed=0)
        wall.append((time.perf_counter() - w0) / n)
        cpu.append((time.process_time() - c0) / n)
    return {"steps": steps, "n_images": n, "repeats": repeats, "wall_s_per_image": wall, "cpu_s_per_image": cpu,
            "wall_median": statistics.median(wall), "cpu_median": statistics.median(cpu),
            "parameters": sum(p.numel() for p in model.parameters())}


def markdown(result: dict) -> str:
    info = result["machine"]
    lines = ["# DDIM sampling time per image (CPU)", "",
             f"Command: `{result['command']}`  ",
             f"Machine: {info['cpu_count']} CPUs, torch {info['torch']} with {info['torch_threads']} threads; "
             f"load average (1, 5, 15 min) before {', '.join(f'{v:.2f}' for v in info['load_before'])}, after "
             f"{', '.join(f'{v:.2f}' for v in info['load_after'])}.", "",
             f"{SIZE} px, random weights, unconditional, {result['rows'][0]['n_images']} images per call; "
             "medians over repeats. CPU seconds count this process's CPU time (all its threads), wall seconds "
             "include waiting for a CPU on a shared machine.", "",
             "| model | parameters | DDIM steps | wall s / image | CPU s / image |", "|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['config']} | {row['parameters']:,} | {row['steps']} | {row['wall_median']:.3g} "
                     f"| {row['cpu_median']:.3g} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/results/ddim_sampling.json"))
    p.add_argument("--quick", action="store_true", help="two step counts, one repeat, four images")
    p.add_argument("--configs", default="", help="comma-separated labels (default: all)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the trainer and sampler run on the CPU
    plan = QUICK if args.quick else FULL
    wanted = [c.strip() for c in args.configs.split(",") if c.strip()] or list(CONFIGS)
    result = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
              "machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "load_before": list(os.getloadavg())}, "rows": []}
    for label in wanted:
        family, hparams = CONFIGS[label]
        for steps in plan["steps"][label]:
            row = {"config": label, **time_sampling(family, hparams, steps, plan["n"], plan["repeats"])}
            result["rows"].append(row)
            print(f"{label:24s} {steps:4d} steps  wall {row['wall_median']:.3f} s/img  "
                  f"cpu {row['cpu_median']:.3f} s/img", flush=True)
    result["machine"]["load_after"] = list(os.getloadavg())
    write_json(args.out, result)
    write_text(args.out.with_suffix(".md"), markdown(result))
    return result


if __name__ == "__main__":
    main()
