"""How much does keeping the frozen encoder's posterior moments save per LDM stage-2 step on the CPU?

    PYTHONPATH=src:bench nice -n 15 python bench/ldm_posterior_cache.py [--repeats 3] [--steps 8]

The 3-D demo's ldm3d block (bench/learning_runs_3d.LDM3D: 32^3 volumes, batch 4, one thread) in one
process, past its autoencoder stage: per repeat, stage-2 steps over 4 batches of 16 random volumes
with the cache off (``POSTERIOR_CACHE_MB`` = 0: every batch is encoded, the code before the cache)
and on (after one pass that fills it), alternating, so both see the same machine load. Writes
bench/results/ldm_posterior_cache.json and .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

from learning_runs_3d import LDM3D  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def step_seconds(model, batches: list[torch.Tensor], steps: int) -> float:
    start = time.perf_counter()
    for i in range(steps):
        model.training_step(batches[i % len(batches)], None)
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    from pipeline_lib.core.io import write_json, write_text
    from pipeline_lib.core.settings import family_hparams
    from pipeline_lib.models import build_model
    from pipeline_lib.models.families import ldm

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("ldm3d", 32, family_hparams({**LDM3D, "autoencoder_steps": 1}))
    model.configure_optimizers()
    volumes = torch.rand(16, 1, 32, 32, 32)
    batches = list(volumes.split(4))
    model.training_step(batches[0], None)  # the one autoencoder step; stage 2 from here
    bound = ldm.POSTERIOR_CACHE_MB
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.repeats):
        for mode in ("off", "on"):
            ldm.POSTERIOR_CACHE_MB = bound if mode == "on" else 0
            model.forget_posteriors()
            for batch in batches:  # fills the cache when on
                model.training_step(batch, None)
            seconds[mode].append(step_seconds(model, batches, args.steps))
    ldm.POSTERIOR_CACHE_MB = bound
    result = {"command": "PYTHONPATH=src:bench nice -n 15 python bench/ldm_posterior_cache.py",
              "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), torch {torch.__version__}, 1 thread",
              "load_average": list(os.getloadavg()), "repeats": args.repeats, "steps": args.steps,
              "seconds_per_step": seconds,
              "median": {mode: statistics.median(values) for mode, values in seconds.items()}}
    write_json(RESULTS / "ldm_posterior_cache.json", result)
    median = result["median"]
    write_text(RESULTS / "ldm_posterior_cache.md", "\n".join([
        "# LDM stage 2 on the CPU with and without the kept posterior moments", "",
        f"Command: `{result['command']}`  ", f"Machine: {result['machine']}; load average "
        f"{', '.join(f'{v:.1f}' for v in result['load_average'])} at the end  ",
        "The 3-D demo's ldm3d block (32³, batch 4) past its autoencoder stage; alternating repeats in one process.",
        "", "| cache | s per stage-2 step (median of repeats) | repeats |", "|---|---|---|",
        f"| off (every batch encoded) | {median['off']:.3f} | {', '.join(f'{v:.3f}' for v in seconds['off'])} |",
        f"| on | {median['on']:.3f} | {', '.join(f'{v:.3f}' for v in seconds['on'])} |", "",
        f"Saved: {1 - median['on'] / median['off']:.0%} of a stage-2 step.", ""]))
    print((RESULTS / "ldm_posterior_cache.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
