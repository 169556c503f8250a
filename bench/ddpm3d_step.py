"""Time per training step and peak memory of the ddpm3d family at its published (tutorial) settings.

    PYTHONPATH=src python bench/ddpm3d_step.py [--sizes 32,48] [--steps 3] [--batch 1]
    PYTHONPATH=src python bench/ddpm3d_step.py --config my.yaml --model <its ddpm3d block> --sizes 32 --batch 2

With ``--config``/``--model`` the network is that model block's (its hyperparameters over the
tutorial's), the CPU part also times one sampling pass of the UNet over ``--batch`` volumes (a DDIM
step), the on-paper part is skipped, and the results go to ``ddpm3d_step_<model>.json``/``.md``
(``bench/results/ddpm3d_step_ddpm3d.md``: the CPU-width block that configs/demo-3d.yaml trained
before the demo moved to ldm3d, the ``ddpm3d`` case of bench/learning_runs_3d.py).

1. CPU, measured: for each cube side S, a fresh Python process (``--worker``) builds the family's
   Denoiser with the published hyperparameters (MONAI 3-D DDPM tutorial: channels 64/64/128,
   attention at level 3, two residual blocks), takes one warm-up step and ``--steps`` timed
   DDPM training steps (loss, backward, Adam) on a batch of random (B, 1, S, S, S) volumes, and
   records the median step time and the process's peak resident memory (``VmHWM``; includes
   torch's libraries, about 300–400 MB). 48 is not a power of two, so the UNet is driven directly
   (the family's ``image_size`` check asks for powers of two; the UNet needs S divisible by 4).
2. GPU, on paper: the bytes autograd saves for the backward pass (every tensor passed to
   ``torch.autograd.graph.saved_tensors_hooks``, counted once per storage) in one forward pass run on
   the ``meta`` device (shapes only, no memory, no data), plus weights, gradients and Adam's two
   moments (4 x 4 bytes per parameter), in float32. Run at the tutorial's 32 x 40 x 32 (batch 8, the
   size the tutorial's text says takes about 21 GB under fp16 autocast: the check of the method),
   at the demo sizes, and at the published grid 160 x 224 x 160. Under fp16 autocast most saved
   activations are half as large; the estimate states float32 and the halved figure.

Writes ``bench/results/ddpm3d_step.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
#: (label, batch, shape) of the on-paper estimates.
PAPER = [("tutorial 32x40x32, batch 8", 8, (32, 40, 32)), ("demo 32^3, batch 1", 1, (32, 32, 32)),
         ("demo 48^3, batch 1", 1, (48, 48, 48)), ("published 160x224x160, batch 1", 1, (160, 224, 160))]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hyperparameters(config: str | None = None, model: str | None = None):
    """The tutorial's hyperparameters, or those of ``model``'s block in the config file ``config``."""
    import dataclasses

    from pipeline_lib.models.families.hparams.ddpm3d import DDPM3DHyperparameters

    published = DDPM3DHyperparameters()
    if config is None:
        return published
    import yaml

    block = yaml.safe_load(Path(config).read_text())["models"][model]
    names = {f.name for f in dataclasses.fields(published)}
    return dataclasses.replace(published, **{k: v for k, v in block.items() if k in names})


def denoiser(device: str = "cpu", config: str | None = None, model: str | None = None):
    from pipeline_lib.models.families.ddpm import Denoiser

    with __import__("torch").device(device):
        return Denoiser(1, hyperparameters(config, model), 0, clip_sample=True, where="bench", spatial_dims=3)


def worker(size: int, steps: int, batch: int, config: str | None = None, name: str | None = None) -> dict:
    import torch

    torch.manual_seed(0)
    model = denoiser(config=config, model=name)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5)
    x0 = torch.rand(batch, 1, size, size, size) * 2 - 1
    times = []
    for i in range(steps + 1):
        started = time.perf_counter()
        loss = model.loss(x0, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i:  # the first step warms up the kernels
            times.append(time.perf_counter() - started)
    sampling = {}
    if config is not None:
        with torch.no_grad():
            started = time.perf_counter()
            model.unet(x=x0, timesteps=torch.zeros(batch, dtype=torch.long))
            sampling = {"unet_pass_s": round(time.perf_counter() - started, 3),
                        "parameters": sum(p.numel() for p in model.parameters())}
    return {**sampling, "size": size, "batch": batch, "steps": steps, "threads": torch.get_num_threads(),
            "step_s_median": round(statistics.median(times), 3), "step_s": [round(t, 3) for t in times],
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def saved_tensor_bytes(forward) -> int:
    """Bytes of the tensors autograd saves for backward while ``forward()`` runs (on the meta device:
    shapes only), each storage counted once."""
    import torch

    seen: dict[int, int] = {}

    def pack(t):
        try:
            key = t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t.untyped_storage())
        except (RuntimeError, NotImplementedError):
            key = id(t)
        seen[key] = max(seen.get(key, 0), t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(seen.values())


def saved_bytes(batch: int, shape: tuple[int, int, int]) -> dict:
    """Bytes autograd keeps for backward in one forward pass (meta device), and the parameters'."""
    import torch

    model = denoiser("meta")
    x = torch.zeros(batch, 1, *shape, device="meta")
    t = torch.zeros(batch, dtype=torch.long, device="meta")
    activations = saved_tensor_bytes(lambda: model.unet(x=x, timesteps=t))
    params = sum(p.numel() for p in model.parameters())
    return {"batch": batch, "shape": list(shape), "parameters": params,
            "activations_gb_fp32": round(activations / 1e9, 2),
            "params_grads_adam_gb": round(params * 16 / 1e9, 3),
            "total_gb_fp32": round((activations + params * 16) / 1e9, 2),
            "total_gb_fp16_activations": round((activations / 2 + params * 16) / 1e9, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32,48")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--worker", type=int)
    parser.add_argument("--config", help="a config file whose model block (--model) sets the network")
    parser.add_argument("--model", help="the model block of --config")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.batch, args.config, args.model)))
        return
    measured = []
    chosen = ["--config", args.config, "--model", args.model] if args.config else []
    for size in [int(s) for s in args.sizes.split(",")]:
        done = subprocess.run([sys.executable, __file__, "--worker", str(size), "--steps", str(args.steps),
                               "--batch", str(args.batch), *chosen], capture_output=True, text=True, check=True)
        measured.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(measured[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    if args.config:
        write_block_results(measured, args.config, args.model)
        return
    paper = [{"label": label, **saved_bytes(batch, shape)} for label, batch, shape in PAPER]
    for row in paper:
        print(row, flush=True)
    (RESULTS / "ddpm3d_step.json").write_text(json.dumps({"cpu_measured": measured, "gpu_on_paper": paper}, indent=2))
    lines = ["# ddpm3d: time per step and memory (bench/ddpm3d_step.py)", "",
             "CPU, measured (tutorial network, one warm-up step, median of the timed steps; peak RSS of the process):",
             "", "| volume | batch | threads | s / step | peak RSS MB |", "|---|---|---|---|---|"]
    lines += [f"| {m['size']}^3 | {m['batch']} | {m['threads']} | {m['step_s_median']} | {m['peak_rss_mb']} |"
              for m in measured]
    lines += ["", "GPU, on paper (autograd's saved tensors counted on the meta device + 16 bytes per parameter):", "",
              "| case | parameters | activations GB (fp32) | weights+grads+Adam GB | total GB fp32 | "
              "total GB, fp16 activations |", "|---|---|---|---|---|---|"]
    lines += [f"| {p['label']} | {p['parameters']:,} | {p['activations_gb_fp32']} | {p['params_grads_adam_gb']} | "
              f"{p['total_gb_fp32']} | {p['total_gb_fp16_activations']} |" for p in paper]
    (RESULTS / "ddpm3d_step.md").write_text("\n".join(lines) + "\n")


def write_block_results(measured: list[dict], config: str, model: str) -> None:
    (RESULTS / f"ddpm3d_step_{model}.json").write_text(json.dumps({"config": config, "model": model,
                                                                   "cpu_measured": measured}, indent=2))
    lines = [f"# ddpm3d: time per step, {config} model {model} (bench/ddpm3d_step.py --config {config} "
             f"--model {model})", "",
             "CPU, measured (one warm-up step, median of the timed steps; one UNet pass over the batch without "
             "gradients, as one DDIM step of sampling; peak RSS of the process):", "",
             "| volume | batch | threads | parameters | s / step | s / UNet pass | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {m['size']}^3 | {m['batch']} | {m['threads']} | {m['parameters']:,} | {m['step_s_median']} | "
              f"{m['unet_pass_s']} | {m['peak_rss_mb']} |" for m in measured]
    (RESULTS / f"ddpm3d_step_{model}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
