"""CPU demo settings of the ldm3d family at 32^3: CPU seconds per step of each stage, whether the
losses fall, and the time to sample.

    PYTHONPATH=src python bench/ldm3d_demo.py [--ae-steps 40] [--diffusion-steps 40]

The proposed demo block (small autoencoder 16/32/32 with a 4x reduction to an 8^3 latent and no
attention, no perceptual or adversarial term, a 2-level 32/64 UNet, batch 4, learning rates 5e-4,
25 DDIM steps) trains on 16 blob volumes (tests/helpers/models.blob_volumes) through the family's
``training_step``: ``--ae-steps`` autoencoder steps, then ``--diffusion-steps`` diffusion steps.
Reported per stage: the median CPU seconds per step (``time.process_time``, both threads; steadier
than wall time on a shared machine), the median wall seconds, and the mean loss of the first and
last fifth of the stage's steps; then the time to sample two volumes. Writes
``bench/results/ldm3d_demo.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
DEMO = {"ae_channels": [16, 32, 32], "ae_attention_levels": [False, False, False], "ae_nonlocal_attention": False,
        "ae_norm_num_groups": 8, "ae_num_res_blocks": 1, "latent_channels": 3, "ae_lr": 5e-4,
        "perceptual": {"backbone": "none"}, "adversarial_weight": 0.0, "unet_channels": [32, 64],
        "attention_levels": [False, True], "num_head_channels": [0, 32], "num_res_blocks": 1, "norm_num_groups": 16,
        "lr": 5e-4, "batch_size": 4, "ddim_steps": 25}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ae-steps", type=int, default=40)
    parser.add_argument("--diffusion-steps", type=int, default=40)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import numpy as np
    import torch
    from helpers.models import blob_volumes

    from pipeline_lib.models import build_model

    torch.manual_seed(0)
    model = build_model("ldm3d", 32, {**DEMO, "autoencoder_steps": args.ae_steps})
    model.configure_optimizers()
    volumes = torch.from_numpy(blob_volumes(16, 32)[0])
    order = np.random.default_rng(0)
    rows = []
    for step in range(args.ae_steps + args.diffusion_steps):
        batch = volumes[order.choice(len(volumes), DEMO["batch_size"], replace=False)]
        wall, cpu = time.perf_counter(), time.process_time()
        losses = model.training_step(batch, None)
        rows.append({"stage": losses["stage"], "loss": losses["loss"], "wall_s": time.perf_counter() - wall,
                     "cpu_s": time.process_time() - cpu})
    stages = []
    for stage in (1.0, 2.0):
        these = [r for r in rows if r["stage"] == stage]
        fifth = max(1, len(these) // 5)
        stages.append({"stage": int(stage), "steps": len(these),
                       "cpu_s_median": round(float(np.median([r["cpu_s"] for r in these])), 2),
                       "wall_s_median": round(float(np.median([r["wall_s"] for r in these])), 2),
                       "loss_first": round(float(np.mean([r["loss"] for r in these[:fifth]])), 4),
                       "loss_last": round(float(np.mean([r["loss"] for r in these[-fifth:]])), 4)})
        print(stages[-1], flush=True)
    wall, cpu = time.perf_counter(), time.process_time()
    model.sample(2, generator=torch.Generator().manual_seed(0))
    sampling = {"volumes": 2, "ddim_steps": DEMO["ddim_steps"], "cpu_s": round(time.process_time() - cpu, 2),
                "wall_s": round(time.perf_counter() - wall, 2)}
    print(sampling, flush=True)
    result = {"hyperparameters": DEMO, "threads": torch.get_num_threads(), "stages": stages, "sampling": sampling}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ldm3d_demo.json").write_text(json.dumps(result, indent=2))
    lines = ["# ldm3d: CPU demo settings at 32^3 (bench/ldm3d_demo.py)", "",
             f"Hyperparameters: `{json.dumps(DEMO)}`; {result['threads']} threads.", "",
             "| stage | steps | CPU s / step | wall s / step | loss, first fifth | loss, last fifth |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['steps']} | {s['cpu_s_median']} | {s['wall_s_median']} | {s['loss_first']} | "
              f"{s['loss_last']} |" for s in stages]
    lines += ["", f"Sampling {sampling['volumes']} volumes ({sampling['ddim_steps']} DDIM steps): "
              f"{sampling['cpu_s']} CPU s, {sampling['wall_s']} s wall."]
    (RESULTS / "ldm3d_demo.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
