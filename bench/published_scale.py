"""Every seed paper's models at their published sizes: do they build, and what does a GPU job need?

    PYTHONPATH=src python bench/published_scale.py [--threads 1] [--cases name,name] [--steps 3]

For each model of the four studies (Ungría Hirte et al. 2020, Han et al. 2018, Ballesteros
Ramirez 2025, Kazuhiro et al. 2018) this builds the family at the paper's image size with the
preset's model block (presets/<study>.yaml: the published widths, latent sizes, batch sizes and the
loss forms the preset trains with; the family declarations cite the values), runs
``--steps`` training steps on random images in [0, 1] at the published batch size, then one
sampling call, all on the CPU, each case in a fresh Python process (``--worker``). Recorded per
case: parameters, peak resident memory of the process (``ru_maxrss``; it includes torch's own
~0.3 GB, given separately as ``rss_before_build_mb``), seconds of the first step and the median
of the others (the first includes allocator warm-up), and seconds of the sampling call.

Choices the papers leave open, or that the code forces:

* Ballesteros Ramirez's cVAE is fully connected on 218 x 182 slices; the families take square
  power-of-two images, so it runs at 256 x 256 (218 x 182 padded, not resized: the smallest such
  square that holds the slice). ``params_at_published_shape`` gives what the same layer list has
  at 218 x 182 (39,676 pixels instead of 65,536), computed from the layers, not run.
* Kazuhiro et al. state four fractionally strided convolutions (256-128-64-32 filters) from a
  projected 100-d input but not the output size; four doublings from 4 x 4 give 64 x 64.
* The DFC-VAE's VGG16 has random weights (ImageNet weights are not available offline; time and
  memory do not depend on the values).
* Han et al.'s DCGAN and WGAN run at both published sizes, 64 and 128 px.

Results go to ``--out`` (JSON) and a Markdown table beside it (``.md``), with the command, the
machine and its load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULT_MARK = "PUBLISHED-SCALE "
ROOT = Path(__file__).resolve().parents[1]

#: (case name, study, preset file, the preset's model, image size, n_classes, note): each case's
#: family and hyperparameters are the preset's model block, so the bench times what the preset trains
#: (its loss forms included: the working readings where the literal ones would not train).
CASES: list[tuple[str, str, str, str, int, int, str]] = [
    ("ungria_vae", "Ungría Hirte 2020", "ungria_hirte_2020", "vae", 128, 0, ""),
    ("ungria_dfc_vae", "Ungría Hirte 2020", "ungria_hirte_2020", "dfc_vae", 128, 0, "VGG16 with random weights"),
    ("ungria_intro_vae", "Ungría Hirte 2020", "ungria_hirte_2020", "intro_vae", 128, 0, ""),
    ("ungria_stylegan", "Ungría Hirte 2020", "ungria_hirte_2020", "stylegan", 128, 0,
     "batch 16 not stated in the paper"),
    ("han_dcgan_64", "Han 2018", "han_2018", "dcgan_concat_64", 64, 0, ""),
    ("han_dcgan_128", "Han 2018", "han_2018", "dcgan_t1_128", 128, 0, ""),
    ("han_wgan_64", "Han 2018", "han_2018", "wgan_concat_64", 64, 0, "one step = one critic update (n_critic 5)"),
    ("han_wgan_128", "Han 2018", "han_2018", "wgan_t1_128", 128, 0, "one step = one critic update (n_critic 5)"),
    ("ballesteros_cvae_256", "Ballesteros Ramirez 2025", "ballesteros_ramirez_2025", "cvae", 256, 4,
     "218 x 182 padded to 256 x 256 (fully connected; see params at 218 x 182); cvae_mse has the same network"),
    ("kazuhiro_dcgan_64", "Kazuhiro 2018", "kazuhiro_2018", "dcgan", 64, 0,
     "output size not stated; 4 doublings from 4 x 4"),
]


def preset_model(preset: str, model: str) -> tuple[str, dict[str, Any]]:
    """(family, hyperparameters) of ``model`` in presets/<preset>.yaml: what that preset trains."""
    import yaml

    from pipeline_lib.core.settings import family_hparams

    block = yaml.safe_load((ROOT / "presets" / f"{preset}.yaml").read_text())["models"][model]
    return str(block["family"]), family_hparams(block)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def worker(name: str, steps: int, threads: int) -> dict[str, Any]:
    """One case in this (fresh) process."""
    import numpy as np
    import torch

    from pipeline_lib.core.runtime import configure_threads, prepare_cpu_training
    from pipeline_lib.models import build_model

    configure_threads(threads)
    prepare_cpu_training()  # what every CPU training job gets (flush denormals, malloc reuse)
    case = {c[0]: c for c in CASES}[name]
    _, study, preset, preset_name, size, n_classes, note = case
    family, hparams = preset_model(preset, preset_name)
    rss_before = _rss_mb()
    tmp = tempfile.mkdtemp(prefix="published-scale-")
    if family == "dfc_vae":
        from pipeline_lib.core.pretrained import vgg16_features_network
        torch.manual_seed(0)
        path = Path(tmp) / "vgg16-random.pth"
        torch.save({f"features.{k}": v for k, v in vgg16_features_network().state_dict().items()}, path)
        hparams["perceptual"] = {"backbone": "vgg16", "weights": str(path)}
    torch.manual_seed(0)
    model = build_model(family, size, hparams, n_classes=n_classes)
    model.configure_optimizers()
    model.train()
    batch = int(model.hparams["batch_size"])
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(steps):
        images = torch.from_numpy(rng.random((batch, 1, size, size), dtype=np.float32))
        labels = torch.from_numpy(rng.integers(0, n_classes, batch)) if n_classes else None
        start = time.perf_counter()
        model.training_step(images, labels)
        times.append(time.perf_counter() - start)
    model.eval()
    n_sample = batch
    sample_labels = torch.from_numpy(rng.integers(0, n_classes, n_sample)) if n_classes else None
    start = time.perf_counter()
    with torch.no_grad():
        out = model.sample(n_sample, labels=sample_labels, generator=torch.Generator().manual_seed(0))
    sample_s = time.perf_counter() - start
    result = {
        "case": name, "study": study, "preset": f"presets/{preset}.yaml: models.{preset_name}", "family": family,
        "image_size": size, "batch_size": batch,
        "hparams": {k: v for k, v in model.hparams.items() if k != "perceptual"},
        "n_classes": n_classes, "parameters": params, "frozen_parameters": frozen,
        "step_seconds": times, "first_step_s": times[0],
        "median_step_s": statistics.median(times[1:]) if len(times) > 1 else times[0],
        "sample_n": n_sample, "sample_s": sample_s, "sample_shape": list(out.shape),
        "rss_before_build_mb": rss_before, "peak_rss_mb": _rss_mb(), "threads": torch.get_num_threads(),
        "note": note,
    }
    if family == "cvae":
        result["params_at_published_shape"] = _cvae_params(218 * 182, n_classes, model.hparams)
    return result


def _cvae_params(n_pixels: int, n_classes: int, h: dict) -> int:
    """Parameters of the cVAE's layer list for ``n_pixels`` input pixels (Linear layers only)."""
    hidden, latent = [int(s) for s in h["hidden_sizes"]], int(h["latent_dim"])
    sizes = [n_pixels + n_classes, *hidden]
    enc = sum(a * b + b for a, b in zip(sizes, sizes[1:])) + 2 * (hidden[-1] * latent + latent)
    dec_sizes = [latent + n_classes, *reversed(hidden)]
    dec = sum(a * b + b for a, b in zip(dec_sizes, dec_sizes[1:])) + hidden[0] * n_pixels + n_pixels
    return enc + dec


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def render_md(data: dict) -> str:
    lines = [
        "| study | case | family (the preset's model) | size | batch | parameters | peak RSS (MB) | first step (s) | s / step | sampling (s, n) | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["results"]:
        if "error" in r:
            lines.append(f"| {r.get('study', '')} | {r['case']} | | | | | | | | | failed: {r['error']} |")
            continue
        params = f"{r['parameters'] / 1e6:.2f} M"
        if "params_at_published_shape" in r:
            params += f" ({r['params_at_published_shape'] / 1e6:.2f} M at 218×182)"
        if r["frozen_parameters"]:
            params += f" + {r['frozen_parameters'] / 1e6:.1f} M frozen"
        lines.append(
            f"| {r['study']} | {r['case']} | {r['family']} ({r.get('preset', 'family defaults')}) | {r['image_size']} | {r['batch_size']} | {params} | "
            f"{r['peak_rss_mb']:.0f} | {r['first_step_s']:.2f} | {r['median_step_s']:.2f} | "
            f"{r['sample_s']:.2f}, {r['sample_n']} | {r['note']} |")
    m = data["machine"]
    lines += ["", f"Command: `{data['command']}`. Machine: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']}, "
              f"{data['threads']} torch thread(s); load average (1, 5, 15 min) {data['load_before']} before, "
              f"{data['load_after']} after (other jobs shared the machine). Steps: {data['steps']} per case on "
              "random images; s / step is the median of the steps after the first. Peak RSS is the whole "
              "process, torch included (about "
              f"{statistics.median(r['rss_before_build_mb'] for r in data['results'] if 'error' not in r):.0f} MB "
              "before the model is built)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "published_scale.json")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--worker", default="")
    parser.add_argument("--render", action="store_true", help="rewrite the .md from the JSON")
    args = parser.parse_args()
    if args.worker:
        print(RESULT_MARK + json.dumps(worker(args.worker, args.steps, args.threads)), flush=True)
        return
    if args.render:
        data = json.loads(args.out.read_text())
        args.out.with_suffix(".md").write_text(render_md(data))
        return
    import torch

    names = [c[0] for c in CASES]
    wanted = [n for n in args.cases.split(",") if n] or names
    unknown = set(wanted) - set(names)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; known: {names}")
    load_before = _load()
    results = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    for name in wanted:
        print(f"[published_scale] {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--worker", name, "--steps", str(args.steps),
                               "--threads", str(args.threads)], capture_output=True, text=True, env=env)
        line = next((l for l in proc.stdout.splitlines() if l.startswith(RESULT_MARK)), None)
        if proc.returncode != 0 or line is None:
            study = {c[0]: c[1] for c in CASES}[name]
            results.append({"case": name, "study": study, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
        else:
            results.append(json.loads(line[len(RESULT_MARK):]))
        print(f"[published_scale] {name}: {results[-1].get('median_step_s', results[-1].get('error'))}",
              file=sys.stderr, flush=True)
    data = {
        "command": "PYTHONPATH=src python bench/published_scale.py " + " ".join(
            a for a in sys.argv[1:]),
        "steps": args.steps, "threads": args.threads, "load_before": load_before, "load_after": _load(),
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "results": results,
    }
    from pipeline_lib.core.io import write_json, write_text
    write_json(args.out, data)
    write_text(args.out.with_suffix(".md"), render_md(data))
    print(render_md(data))


if __name__ == "__main__":
    main()
