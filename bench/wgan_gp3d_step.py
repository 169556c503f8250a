"""Time per training step and peak memory of the wgan_gp3d family, at its published settings and at the
CPU demo settings.

    PYTHONPATH=src python bench/wgan_gp3d_step.py [--cases published32,published64,demo32] [--cycles 1]

1. CPU, measured: each case in a fresh Python process (``--worker``) builds the family, takes one
   warm-up step and then ``--cycles`` full n_critic cycles of the family's own ``training_step`` (n_critic
   critic updates with the gradient penalty, the last of them followed by the generator update) on
   random (B, 1, S, S, S) volumes, and records the mean step time over the cycles, the generator
   step's time, and the process's peak resident memory (``VmHWM``; includes torch's and MONAI's
   libraries, about 400 MB). Cases: Kwon et al.'s networks and batch (4) at 32^3 and at their 64^3,
   and the demo settings at 32^3 (``DEMO``). 48^3 is not measured: the family's networks (as every
   family's) take S = 4 x a power of two.
2. GPU, on paper: the bytes autograd saves for backward (every tensor passed to
   ``torch.autograd.graph.saved_tensors_hooks``, counted once per storage) in the larger of the two
   updates, run on the ``meta`` device (shapes only, no memory, no data): the critic's (real and fake
   scores, the penalty's forward and its first backward with ``create_graph``) and the generator's
   (a generated batch through the critic); plus weights, gradients and Adam's two moments of both
   networks (4 x 4 bytes per parameter, an upper bound: one network's gradients exist at a time), in
   float32. At Kwon et al.'s 64^3 with batch 4 (they trained on one 12 GB TITAN X: the check of the
   method), at 128^3 and 256^3 (HA-GAN's grid, Sun et al. 2022) with batch 4, and at the demo size.

Writes ``bench/results/wgan_gp3d_step.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
#: The CPU demo settings (docs/VOLUMES.md): small widths, a small latent, Algorithm 1's schedule.
DEMO = {"width": 8, "latent_dim": 128, "batch_size": 8, "lr": 5e-4}
#: name -> (cube side, hyperparameters) of the CPU measurements.
CASES = {"published32": (32, {}), "published64": (64, {}), "demo32": (32, DEMO)}
#: (label, cube side, batch, hyperparameters) of the on-paper estimates.
PAPER = [("Kwon et al. 64^3, batch 4", 64, 4, {}), ("128^3, batch 4", 128, 4, {}),
         ("HA-GAN's 256^3, batch 4", 256, 4, {}), ("demo 32^3, batch 8", 32, 8, DEMO)]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(case: str, cycles: int) -> dict:
    import torch

    from pipeline_lib.models import build_model

    size, hparams = CASES[case]
    torch.manual_seed(0)
    model = build_model("wgan_gp3d", size, hparams)
    model.configure_optimizers()
    h = model.hp
    volumes = torch.rand(h.batch_size, 1, size, size, size)
    model.training_step(volumes, None)  # warm-up; the counter is then 1, so the cycle's last step updates G
    times = []
    for _ in range(cycles * h.n_critic):
        started = time.perf_counter()
        model.training_step(volumes, None)
        times.append(time.perf_counter() - started)
    generator_steps = [t for i, t in enumerate(times, start=2) if i % h.n_critic == 0]
    return {"case": case, "size": size, "batch": h.batch_size, "width": h.width, "latent_dim": h.latent_dim,
            "n_critic": h.n_critic, "parameters": sum(p.numel() for p in model.parameters()),
            "threads": torch.get_num_threads(), "steps": len(times),
            "step_s_mean": round(sum(times) / len(times), 3), "generator_step_s": round(max(generator_steps), 3),
            "step_s": [round(t, 3) for t in times], "peak_rss_mb": round(peak_rss_mb(), 1)}


def saved_bytes(size: int, batch: int, hparams: dict) -> dict:
    """Bytes autograd keeps for backward in each update (meta device), and the parameters'."""
    import torch

    from pipeline_lib.models import build_model
    from pipeline_lib.models.losses import gradient_penalty

    with torch.device("meta"):
        model = build_model("wgan_gp3d", size, hparams)
    real = torch.zeros(batch, 1, size, size, size, device="meta")

    def saved(update) -> int:
        storages: dict[int, tuple] = {}

        def pack(t):
            storage = t.untyped_storage()
            storages[id(storage)] = (storage, t.numel() * t.element_size())  # kept alive: ids stay unique
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            update()
        return sum(n for _, n in storages.values())

    def critic_update():
        with torch.no_grad():
            fake = model.generator(model.latent(batch))
        return model.critic(real).mean() - model.critic(fake).mean() + gradient_penalty(model.critic, real, fake)

    def generator_update():
        return -model.critic(model.generator(model.latent(batch))).mean()

    critic, generator = saved(critic_update), saved(generator_update)
    params = sum(p.numel() for p in model.parameters())
    activations = max(critic, generator)
    return {"size": size, "batch": batch, "parameters": params,
            "critic_update_gb": round(critic / 1e9, 3), "generator_update_gb": round(generator / 1e9, 3),
            "params_grads_adam_gb": round(params * 16 / 1e9, 3),
            "total_gb_fp32": round((activations + params * 16) / 1e9, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--cycles", type=int, default=1)
    parser.add_argument("--worker")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.cycles)))
        return
    measured = []
    for case in args.cases.split(","):
        done = subprocess.run([sys.executable, __file__, "--worker", case, "--cycles", str(args.cycles)],
                              capture_output=True, text=True, check=True)
        measured.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(measured[-1], flush=True)
    paper = [{"label": label, **saved_bytes(size, batch, hparams)} for label, size, batch, hparams in PAPER]
    for row in paper:
        print(row, flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "wgan_gp3d_step.json").write_text(json.dumps({"demo_settings": DEMO, "cpu_measured": measured,
                                                             "gpu_on_paper": paper}, indent=2))
    lines = ["# wgan_gp3d: time per step and memory (bench/wgan_gp3d_step.py)", "",
             f"CPU, measured (one warm-up step, then {args.cycles} n_critic cycle(s) of training_step; mean step "
             "time, the generator step's time, peak RSS of the process). Demo settings: "
             + ", ".join(f"{k} {v}" for k, v in DEMO.items()) + ".", "",
             "| case | volume | batch | width | latent | parameters | threads | s / step (mean of a cycle) | "
             "s, step with the generator update | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {m['case']} | {m['size']}^3 | {m['batch']} | {m['width']} | {m['latent_dim']} | "
              f"{m['parameters']:,} | {m['threads']} | {m['step_s_mean']} | {m['generator_step_s']} | "
              f"{m['peak_rss_mb']} |" for m in measured]
    lines += ["", "GPU, on paper (autograd's saved tensors in the larger update, counted on the meta device, "
              "+ 16 bytes per parameter):", "",
              "| case | parameters | critic update GB | generator update GB | weights+grads+Adam GB | total GB fp32 |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {p['label']} | {p['parameters']:,} | {p['critic_update_gb']} | {p['generator_update_gb']} | "
              f"{p['params_grads_adam_gb']} | {p['total_gb_fp32']} |" for p in paper]
    (RESULTS / "wgan_gp3d_step.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
