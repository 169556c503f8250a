"""Training throughput of every model family: our trainer vs a plain PyTorch loop.

    python bench/train_throughput.py --out bench/results/train_throughput.json [--quick]

For each family (dcgan twice: presets kazuhiro and han) at 64 and 128 px, on
the CPU and, when present, on CUDA, this measures training steps per second

* ours: ``pipeline_lib.models.training.train_model`` driving the family's model
  (``pipeline_lib.models.families.<family>``) on in-memory random images, with a step
  budget of warm-up + timed steps + 1 and ``checkpoint_every`` beyond the run. The
  model that ``train_model`` builds gets a timestamp at the start of each
  ``training_step`` call; the timed window runs from the start of the first
  step after warm-up to the start of the step after the last timed one, so it
  holds whole iterations of our loop (batch streaming, host-to-device copy,
  the family's step, loss bookkeeping) and no start-up or final saving.
* plain: the same architecture, batch, optimiser and loss written as a
  standalone PyTorch model (``bench/plain_models.py``) in a plain loop
  (shuffled index slices, ``step``), timed over the same window.

Each run is a fresh Python process (``--worker``), as each training job of the
pipeline is, so no run inherits another's allocator or thread state; each
repeat runs both sides (ours first on even repeats, plain first on odd ones, so
that drifting machine load hits both alike); the table gives the median steps/s
of the repeats and ours / plain of the medians. Both sides run with
``torch.set_flush_denormal(True)`` on the CPU, because our trainer sets it; our
trainer also sets glibc's malloc to reuse freed memory, which the plain side
gets only with ``--plain-allocator tuned``. On CUDA the clock is read after
``torch.cuda.synchronize()``.

CPU settings shrink widths and batches (not the layer structure) so that the
benchmark fits a 2-core machine; CUDA runs the published defaults. The DFC-VAE
uses a VGG16 with random weights (throughput does not depend on the values;
ImageNet weights cannot be downloaded here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_models import build_plain, count_parameters  # noqa: E402

from pipeline_lib.core import runtime  # noqa: E402
from pipeline_lib.models import training  # noqa: E402
from pipeline_lib.core.pretrained import vgg16_features_network  # noqa: E402
from pipeline_lib.core.io import write_json, write_text  # noqa: E402

RESULT_MARK = "BENCH-RESULT "
N_CLASSES = 2
SEED = 0
# numpy complains about float64's subnormals once flush-to-zero is on; harmless here.
warnings.filterwarnings("ignore", message="The value of the smallest subnormal")


@dataclass(frozen=True)
class Case:
    """One row group of the table: a family (and preset) with its benchmark hyperparameters."""

    label: str
    family: str
    cpu: dict[str, Any]                  # overrides of the published defaults on the CPU
    cuda: dict[str, Any] = field(default_factory=dict)  # overrides on CUDA (published defaults otherwise)
    step_multiple: int = 1               # timed/warm-up steps must be multiples (WGANs: n_critic)
    step_scale: int = 1                  # more timed steps for families with short steps (window >= ~1 s)

    @property
    def conditional(self) -> bool:
        return self.family in ("cgan", "cvae")


CASES = [
    Case("vae", "vae", {"batch_size": 16}),
    Case("dfc_vae", "dfc_vae", {"batch_size": 8}),
    Case("intro_vae", "intro_vae", {"width": 16, "max_width": 128}),
    Case("stylegan", "stylegan", {"width": 32, "batch_size": 8}),
    Case("dcgan (kazuhiro)", "dcgan", {"preset": "kazuhiro", "batch_size": 16}, {"preset": "kazuhiro"}),
    Case("dcgan (han)", "dcgan", {"preset": "han", "batch_size": 16}, {"preset": "han"}),
    Case("wgan", "wgan", {"batch_size": 16}, step_multiple=5),
    Case("wgan_gp", "wgan_gp", {"width": 32, "batch_size": 16}, step_multiple=5),
    Case("cgan", "cgan", {"batch_size": 16}),
    Case("cvae", "cvae", {}, step_scale=5),  # ~25 ms steps: 8 of them made a 0.2 s window, too noisy
    # Against MONAI's own 2-D DDPM tutorial loop (plain_models.PlainDDPM); a quarter of the tutorial's widths.
    Case("ddpm", "ddpm", {"unet_channels": [32, 64, 64], "num_head_channels": 64, "batch_size": 8}),
]

#: (warm-up steps, timed steps, repeats) per device type, image size; --quick uses QUICK.
#: GPU steps take milliseconds, so CUDA times longer windows after a longer warm-up (cuDNN, allocator).
FULL = {"cpu": {64: (2, 8, 5), 128: (1, 4, 5)}, "cuda": {64: (10, 50, 5), 128: (10, 25, 5)}}
QUICK = {"cpu": {64: (1, 3, 3), 128: (1, 2, 3)}, "cuda": {64: (5, 10, 3), 128: (5, 5, 3)}}


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


StampHook = Callable[[int], None]


class Clock:
    """Per-step start times: wall clock and this process's CPU time (which leaves out waiting for a CPU)."""

    def __init__(self, device: torch.device, hook: StampHook | None = None):
        self.device, self.hook = device, hook
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def stamp(self) -> None:
        synchronize(self.device)
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())
        if self.hook is not None:
            self.hook(len(self.wall) - 1)

    def rates(self, warmup: int, steps: int) -> tuple[float, float]:
        """(steps per wall second, steps per CPU second) over the timed window."""
        return (steps / (self.wall[warmup + steps] - self.wall[warmup]),
                steps / (self.cpu[warmup + steps] - self.cpu[warmup]))


def shapes(module: torch.nn.Module) -> list[list[int]]:
    return sorted(list(p.shape) for p in module.parameters())


def random_vgg16_file(folder: Path) -> Path:
    """A torchvision-layout VGG16 ``features`` state dict with random weights (the real file is not offline)."""
    path = folder / "vgg16-random.pth"
    if not path.exists():
        torch.manual_seed(SEED)
        torch.save({f"features.{k}": v for k, v in vgg16_features_network().state_dict().items()}, path)
    return path


def hparams_for(case: Case, device: torch.device, workdir: Path) -> dict[str, Any]:
    h = dict(case.cpu if device.type == "cpu" else case.cuda)
    if case.family == "dfc_vae":
        h["perceptual"] = {"backbone": "vgg16", "weights": str(random_vgg16_file(workdir))}
    return h


def run_ours(case: Case, hparams: dict, images: np.ndarray, labels: np.ndarray | None,
             device: torch.device, total_steps: int, workdir: Path,
             hook: StampHook | None = None) -> tuple[Clock, torch.nn.Module]:
    """Run ``train_model`` for ``total_steps``; return the start times of every step and the model."""
    clock = Clock(device, hook)
    built: dict[str, torch.nn.Module] = {}
    real_build = training.build_model

    def build_timed(*args, **kwargs):
        model = real_build(*args, **kwargs)
        step = model.training_step

        def timed_step(x, y):
            clock.stamp()
            return step(x, y)

        model.training_step = timed_step  # instance attribute: shadows the method for this model only
        built["model"] = model
        return model

    block = {"family": case.family, **hparams, "budget": {"steps": total_steps},
             "checkpoint_every": total_steps + 1, "seed": SEED}
    if case.conditional:
        block["condition_on"] = "label"
    run = Path(tempfile.mkdtemp(dir=workdir))
    try:
        with mock.patch.object(training, "build_model", build_timed):
            training.train_model("bench", block, images, labels, run / "w.pt", run / "l.csv", run / "ck",
                                 n_classes=N_CLASSES if case.conditional else 0, device=str(device))
    finally:
        shutil.rmtree(run, ignore_errors=True)  # weight files reach 140 MB (cvae, 128 px) per run
    return clock, built["model"]


def run_plain(case: Case, hparams: dict, images: np.ndarray, labels: np.ndarray | None,
              device: torch.device, total_steps: int,
              hook: StampHook | None = None) -> tuple[Clock, torch.nn.Module]:
    """The plain loop: shuffled index slices, host-to-device copy, ``model.step``; start time of every step."""
    torch.manual_seed(SEED)
    size = images.shape[1]
    full = {**training.get_family(case.family).resolve_hparams(hparams)}
    model = build_plain(case.family, size, full, n_classes=N_CLASSES).to(device)
    model.make_optimizer()
    model.train()
    data = torch.from_numpy(images)
    targets = torch.from_numpy(labels) if labels is not None else None
    batch = full["batch_size"]
    perm, cursor = torch.randperm(len(data)), 0
    clock, history = Clock(device, hook), []
    for _ in range(total_steps):
        clock.stamp()
        if cursor + batch > len(data):
            perm, cursor = torch.randperm(len(data)), 0
        idx = perm[cursor:cursor + batch]
        cursor += batch
        x = data[idx].unsqueeze(1).to(device)
        y = targets[idx].to(device) if targets is not None else None
        history.append(model.step(x, y))
    clock.stamp()
    return clock, model


def check_same_parameters(case: Case, size: int, ours: dict, plain: dict) -> dict:
    """Same parameter count (all and trainable) and the same multiset of parameter shapes, else an error."""
    if ours["parameters"] != plain["parameters"] or ours["shapes"] != plain["shapes"]:
        raise AssertionError(f"{case.label} at {size} px: parameters differ, ours (all, trainable) "
                             f"{ours['parameters']} vs plain {plain['parameters']}; "
                             f"shapes equal: {ours['shapes'] == plain['shapes']}")
    return {"parameters": ours["parameters"][0], "trainable": ours["parameters"][1]}


def bench_inputs(case: Case, size: int, device: torch.device, workdir: Path):
    """(hparams, batch size, random images (4 batches), labels or None) for one case and size."""
    hparams = hparams_for(case, device, workdir)
    batch = training.get_family(case.family).resolve_hparams(hparams)["batch_size"]
    rng = np.random.default_rng(SEED)
    images = rng.random((4 * batch, size, size), dtype=np.float32)
    labels = (np.arange(len(images)) % N_CLASSES).astype(np.int64) if case.conditional else None
    return hparams, batch, images, labels


def run_one(which: str, case: Case, inputs, device: torch.device, warmup: int, steps: int, workdir: Path,
            hook: StampHook | None = None) -> tuple[Clock, torch.nn.Module]:
    """One run of ``which`` ("ours" or "plain") with ``warmup + steps`` steps inside the window's ends."""
    hparams, _, images, labels = inputs
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # our trainer sets it on the CPU; the plain loop gets it too
    if which == "ours":
        # train_model's own budget: one more step than timed, for the window's closing timestamp.
        return run_ours(case, hparams, images, labels, device, warmup + steps + 1, workdir, hook)
    return run_plain(case, hparams, images, labels, device, warmup + steps, hook)


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Body of a ``--worker`` process: one run of one side, timed or profiled."""
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    if spec["which"] == "plain" and spec["plain_allocator"] == "tuned":
        runtime.reuse_freed_host_memory()
    case = next(c for c in CASES if c.label == spec["case"])
    device, workdir = torch.device(spec["device"]), Path(spec["workdir"])
    warmup, steps = spec["warmup"], spec["steps"]
    inputs = bench_inputs(case, spec["size"], device, workdir)
    if not spec["profile"]:
        clock, model = run_one(spec["which"], case, inputs, device, warmup, steps, workdir)
        wall, cpu = clock.rates(warmup, steps)
        return {"wall": wall, "cpu": cpu, "parameters": count_parameters(model), "shapes": shapes(model),
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    prof = profile(activities=activities, with_flops=True)

    def hook(i: int) -> None:
        if i == warmup:
            prof.start()
        elif i == warmup + steps:
            prof.stop()

    run_one(spec["which"], case, inputs, device, warmup, steps, workdir, hook)
    return {"operators": {e.key: [e.count, e.self_cpu_time_total / 1e3, e.flops] for e in prof.key_averages()}}


def in_fresh_process(spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`worker` in a new Python process and return its result.

    Every run gets its own process, as every training job of the pipeline does:
    runs sharing a process inherit each other's allocator state (glibc's malloc
    adapts its thresholds to earlier frees), which swung cvae's speed between
    17 and 39 steps/s depending on what ran before it.
    """
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker failed ({spec['which']} {spec['case']} {spec['size']} px, "
                           f"exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_MARK):])


def bench_case(case: Case, size: int, device: torch.device, schedule: tuple[int, int, int],
               workdir: Path, *, threads: int | None, plain_allocator: str) -> dict[str, Any]:
    warmup, steps, repeats = schedule
    warmup = round_up(warmup, case.step_multiple)
    steps = round_up(steps * case.step_scale, case.step_multiple)
    hparams, batch, _, _ = bench_inputs(case, size, device, workdir)
    base = {"case": case.label, "size": size, "device": str(device), "warmup": warmup, "steps": steps,
            "threads": threads, "workdir": str(workdir), "profile": False, "plain_allocator": plain_allocator}
    wall = {"ours": [], "plain": []}
    cpu = {"ours": [], "plain": []}
    rss = {"ours": [], "plain": []}
    found: dict[str, dict] = {}
    for r in range(repeats):
        for which in (("ours", "plain") if r % 2 == 0 else ("plain", "ours")):
            result = in_fresh_process({**base, "which": which})
            wall[which].append(result["wall"])
            cpu[which].append(result["cpu"])
            rss[which].append(result["peak_rss_mib"])
            found[which] = result
    params = check_same_parameters(case, size, found["ours"], found["plain"])
    med = {k: statistics.median(v) for k, v in wall.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    return {"case": case.label, "family": case.family, "size": size, "device": device.type,
            "batch_size": batch, "settings": {k: v for k, v in hparams.items() if k != "perceptual"},
            "published": published_values(case, hparams),
            "warmup_steps": warmup, "timed_steps": steps, "repeats": repeats, **params,
            "ours_steps_per_s": wall["ours"], "plain_steps_per_s": wall["plain"],
            "ours_median": med["ours"], "plain_median": med["plain"], "ratio": med["ours"] / med["plain"],
            "paired_ratios": [o / p for o, p in zip(wall["ours"], wall["plain"])],
            "ours_steps_per_cpu_s": cpu["ours"], "plain_steps_per_cpu_s": cpu["plain"],
            "cpu_time_ratio": cpu_med["ours"] / cpu_med["plain"],
            "ours_peak_rss_mib": max(rss["ours"]), "plain_peak_rss_mib": max(rss["plain"])}


def published_values(case: Case, hparams: dict) -> dict[str, Any]:
    """The published default of every hyperparameter the benchmark overrides (for the table)."""
    defaults = training.get_family(case.family).resolve_hparams(
        {"preset": hparams["preset"]} if "preset" in hparams else {})
    return {k: getattr(defaults, k) for k in hparams if k not in ("perceptual", "preset")}


def profile_case(case: Case, size: int, device: torch.device, schedule: tuple[int, int, int],
                 workdir: Path, *, threads: int | None, plain_allocator: str, top: int = 15) -> str:
    """torch.profiler over the timed window of one ours run and one plain run: totals and top operators."""
    warmup, steps, _ = schedule
    warmup, steps = round_up(warmup, case.step_multiple), round_up(steps, case.step_multiple)
    bench_inputs(case, size, device, workdir)  # writes the random VGG16 file the workers load
    base = {"case": case.label, "size": size, "device": str(device), "warmup": warmup, "steps": steps,
            "threads": threads, "workdir": str(workdir), "profile": True, "plain_allocator": plain_allocator}
    tables = {which: in_fresh_process({**base, "which": which})["operators"] for which in ("ours", "plain")}
    lines = [f"== {device.type} {case.label} {size} px, {steps} steps"]
    for which, ops in tables.items():
        lines.append(f"{which:5s}: self CPU {sum(o[1] for o in ops.values()):9.1f} ms, "
                     f"{sum(o[2] for o in ops.values()) / 1e9:8.2f} GFLOP, "
                     f"{sum(o[0] for o in ops.values()):7d} operator calls")
    names = sorted(set(tables["ours"]) | set(tables["plain"]),
                   key=lambda k: -max(ops.get(k, [0, 0.0])[1] for ops in tables.values()))[:top]
    lines.append(f"{'operator':40s} {'ours calls':>10s} {'ours ms':>9s} {'plain calls':>11s} {'plain ms':>9s}")
    for name in names:
        (oc, oms, _), (pc, pms, _) = (tables[w].get(name, [0, 0.0, 0]) for w in ("ours", "plain"))
        lines.append(f"{name[:40]:40s} {oc:10d} {oms:9.1f} {pc:11d} {pms:9.1f}")
    return "\n".join(lines)


def machine_info(devices: list[torch.device]) -> dict[str, Any]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()
            or platform.machine(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_before": list(os.getloadavg())}
    if any(d.type == "cuda" for d in devices):
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def settings_text(row: dict) -> str:
    """Overridden hyperparameters with their published values, e.g. 'width=32 (64)'."""
    parts = [f"preset={row['settings']['preset']}"] if "preset" in row["settings"] else []
    parts += [f"{k}={v} ({row['published'][k]})" for k, v in sorted(row["settings"].items())
              if k not in ("batch_size", "preset") and v != row["published"][k]]
    return ", ".join(parts) or "published"


def batch_text(row: dict) -> str:
    published = row["published"].get("batch_size", row["batch_size"])
    return str(row["batch_size"]) + (f" ({published})" if published != row["batch_size"] else "")


def markdown(result: dict) -> str:
    info = result["machine"]
    lines = [
        "# Training throughput: ours vs plain PyTorch",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {info['cpu_count']} CPUs ({info['cpu']}), torch {info['torch']} with "
        f"{info['torch_threads']} threads" + (f", CUDA: {info['cuda_device']}" if "cuda_device" in info else "")
        + f"; load average (1, 5, 15 min) before {fmt_load(info['load_average_before'])}, "
        f"after {fmt_load(info['load_average_after'])}.",
        "",
        *busy_note(info),
        "Steps/s (wall clock) are medians over the repeats; ours ÷ plain = ours median / plain median "
        "(> 1: ours faster). CPU-time ratio: the same from steps per second of process CPU time, which "
        "is steadier than the wall clock on a busy machine. Every run is a fresh process, as every "
        "training job of the pipeline is. "
        "Ours = `train_model` driving the family (timed from the first step after warm-up: whole loop "
        "iterations, no start-up or saving); on the CPU it sets glibc's malloc to reuse freed memory "
        "(`pipeline_lib.core.runtime.reuse_freed_host_memory`). Plain = `bench/plain_models.py` in a plain loop, "
        + ("with the same malloc settings (`--plain-allocator tuned`), so the ratio compares the code alone. "
           if result.get("plain_allocator") == "tuned" else "with the default allocator. ")
        + "CPU runs shrink widths/batches (published value in brackets), keeping the layer structure; CUDA "
        "runs use the published defaults. WGAN/WGAN-GP steps are critic iterations (a generator update every "
        "5th). Steps × repeats: timed steps per run × runs of each side. Peak RSS: the largest peak resident "
        "memory of a run's process (Python, torch and the data included).",
        "",
        "| device | family | px | batch | other settings | params | steps × repeats "
        "| ours steps/s | plain steps/s | ours ÷ plain | CPU-time ratio | peak RSS MiB ours / plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['device']} | {row['case']} | {row['size']} | {batch_text(row)} | {settings_text(row)} "
            f"| {row['parameters']:,} | {row['timed_steps']} × {row['repeats']} | {row['ours_median']:.3g} "
            f"| {row['plain_median']:.3g} | **{row['ratio']:.2f}** | {row['cpu_time_ratio']:.2f} "
            f"| {row['ours_peak_rss_mib']:,.0f} / {row['plain_peak_rss_mib']:,.0f} |")
    return "\n".join(lines) + "\n"


def busy_note(info: dict) -> list[str]:
    """A warning paragraph when other work shared the CPUs as the run started.

    Only the load before counts: during and after the run the load average
    includes the benchmark's own threads.
    """
    load = info["load_average_before"][0]
    if load < 0.5 * info["cpu_count"]:
        return []
    return [f"**Busy machine:** 1-minute load average {load:.1f} on {info['cpu_count']} CPUs when this started "
            "(other jobs, or the tail of an earlier one). Single ratios then scatter by about ±10-30 % from run "
            "to run; read the table as a whole, compare the CPU-time ratio, and rerun on a quiet machine for "
            "precise numbers.", ""]


def fmt_load(load: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in load)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/results/train_throughput.json"),
                   help="JSON result; a Markdown table is written beside it (.md)")
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke run)")
    p.add_argument("--families", default="", help="comma-separated case labels or family names (default: all)")
    p.add_argument("--sizes", default="64,128")
    p.add_argument("--devices", default="auto", help="'auto' (CPU, plus CUDA when present) or e.g. 'cpu'")
    p.add_argument("--profile", action="store_true",
                   help="instead of timing, print torch.profiler totals and top operators of one ours "
                        "and one plain run per case (to find where ours loses time)")
    p.add_argument("--plain-allocator", choices=("default", "tuned"), default="default",
                   help="'tuned': the plain side also gets the malloc settings our trainer applies "
                        "(pipeline_lib.core.runtime.reuse_freed_host_memory), to compare the code alone")
    p.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)
    p.add_argument("--render", action="store_true",
                   help="only rewrite the Markdown table beside --out from the JSON already there")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice). On a busy machine use 1: "
                        "oversubscribed threads made steps ~10x slower in measurements here")
    return p.parse_args(argv)


def schedule_for(schedules: dict, device: torch.device, size: int) -> tuple[int, int, int]:
    """The (warm-up, timed steps, repeats) of a device and size; other sizes use the nearest listed one."""
    per_size = schedules["cuda" if device.type == "cuda" else "cpu"]
    return per_size[min(per_size, key=lambda s: abs(s - size))]


def chosen_devices(spec: str) -> list[torch.device]:
    if spec == "auto":
        best = runtime.select_device("auto")
        return [torch.device("cpu")] + ([best] if best.type == "cuda" else [])
    return [runtime.select_device(d.strip()) for d in spec.split(",")]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.worker:
        print(RESULT_MARK + json.dumps(worker(json.loads(args.worker))), flush=True)
        return {}
    if args.render:
        result = json.loads(args.out.read_text())
        write_text(args.out.with_suffix(".md"), markdown(result))
        return result
    if args.threads:
        torch.set_num_threads(args.threads)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores and torch.get_num_threads() > 1:
        print(f"warning: load average {load:.1f} on {cores} CPUs; threads will be oversubscribed, "
              f"consider --threads 1", file=sys.stderr)
    wanted = {s.strip() for s in args.families.split(",") if s.strip()}
    cases = [c for c in CASES if not wanted or c.label in wanted or c.family in wanted]
    sizes = [int(s) for s in args.sizes.split(",")]
    devices = chosen_devices(args.devices)
    schedules = QUICK if args.quick else FULL
    result = {"plain_allocator": args.plain_allocator, "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
              "machine": machine_info(devices), "rows": []}
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="bench_tp_") as tmp:
            for device in devices:
                for case in cases:
                    for size in sizes:
                        print(profile_case(case, size, device, schedule_for(schedules, device, size),
                                           Path(tmp), threads=args.threads,
                                           plain_allocator=args.plain_allocator), flush=True)
        return {}
    with tempfile.TemporaryDirectory(prefix="bench_tp_") as tmp:
        for device in devices:
            for case in cases:
                for size in sizes:
                    row = bench_case(case, size, device, schedule_for(schedules, device, size), Path(tmp),
                                     threads=args.threads, plain_allocator=args.plain_allocator)
                    result["rows"].append(row)
                    print(f"{device.type:4s} {case.label:18s} {size:4d}px  ours {row['ours_median']:7.3f}  "
                          f"plain {row['plain_median']:7.3f} steps/s  ratio {row['ratio']:.2f}  "
                          f"cpu-time ratio {row['cpu_time_ratio']:.2f}", flush=True)
    result["machine"]["load_average_after"] = list(os.getloadavg())
    write_json(args.out, result)
    write_text(args.out.with_suffix(".md"), markdown(result))
    return result


if __name__ == "__main__":
    main()
