"""How far CPU kernels and thread counts move the tiny workflow's numbers (issue 24).

    PYTHONPATH=src .venv/bin/python bench/cpu_kernel_spread.py --run RUN [--configs avx2,x86-64,threads1,blas,regression]
        [--parallel 2] [--scratch DIR [--partial]]

``RUN`` is a finished run of the integration tests' tiny configuration, e.g. the one
``pytest tests/test_workflow.py -k recorded --basetemp=/tmp/golden`` leaves in
``/tmp/golden/workflow0/checkout`` (``--make-run DIR`` makes one the same way). It is the
baseline: this machine's own kernels, two threads per job.

Every configuration replays the workflow's own jobs on a copy of ``RUN``: Snakemake with
``--forcerun`` on the stage roots the configuration varies and ``--until`` the rules whose
outputs ``tests/data/golden_metrics`` records, with the kernel choice in the environment
(jobs inherit it). The wiring is the workflow's, so the numbers are the golden test's own:

* ``avx2`` — an AVX2 machine (AMD Zen 1-3, Intel before Skylake-SP): ``ATEN_CPU_CAPABILITY=avx2``,
  ``ONEDNN_MAX_CPU_ISA=AVX2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2``, ``OPENBLAS_CORETYPE=Haswell``;
* ``x86-64`` — the plainest x86-64 kernels every build carries: ``default`` / ``SSE41`` /
  ``SSE4_2`` / ``Nehalem``, and MKL's ``MKL_CBWR=COMPATIBLE`` path. On an AMD CPU MKL ignores
  ``MKL_ENABLE_INSTRUCTIONS`` (its matrix products came out bit for bit the same under every value
  and under ``MKL_CBWR=AVX2``/``AVX512``); ``COMPATIBLE`` is the one MKL setting that changed them;
* ``threads1`` — this machine's kernels, one thread per job (``--cores 1``);
* ``blas`` — only numpy/scipy's OpenBLAS on Haswell kernels, and only the metric jobs rerun
  (FID, KID, PRDC, domain FD from the baseline's feature files): stage (d) alone;
* ``regression`` — no kernel change but a small real one, vae's learning rate 1e-3 -> 1.1e-3,
  retraining vae only: how far a change of results moves the numbers, against kernel noise.

The first three rerun everything from training on (``train``, ``real_features``,
``domain_network`` and what follows them). Besides every metric key, each configuration's
intermediate files are compared with the baseline's, so each stage's share shows: (a) trained
weights and samples, (b) Inception features, (c) the domain network's weights, (d) the FID of
the real test slices computed from (b)'s features (the Fréchet distance's own amplification). A key's
spread is ``|x - x_baseline| / |x_baseline|``; for a standard deviation (``std``, ``*_std``)
it is also given relative to its mean (``rel_to_mean``), since a std of values that nearly
agree moves by the values' absolute change. Writes ``--out`` (JSON) and a Markdown table beside it.

Each replay reruns training, sampling and both feature networks: minutes on a quiet 2-core machine,
far longer on a busy one. ``--scratch DIR`` keeps the replays (a finished one is reused) and
``--partial`` compares, without running anything, the files the replays there have written so far.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
GOLDEN = REPO / "tests/data/golden_metrics"

#: The rules whose outputs are the golden metric files.
GOLDEN_RULES = ("metrics_model", "metrics_original", "distribution_metrics", "distribution_metrics_original",
                "domain_metrics", "domain_metrics_original", "diversity_metrics", "diversity_original")
#: Stage roots: forcing these reruns training, both feature networks and everything after them.
ALL_STAGES = ("train", "real_features", "domain_network")
METRIC_STAGES = ("distribution_metrics", "distribution_metrics_original", "domain_metrics",
                 "domain_metrics_original")

CONFIGS = {
    "avx2": {"env": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                     "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OPENBLAS_CORETYPE": "Haswell"},
             "cores": 2, "forcerun": ALL_STAGES},
    "x86-64": {"env": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                       "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "MKL_CBWR": "COMPATIBLE",
                       "OPENBLAS_CORETYPE": "Nehalem"},
               "cores": 2, "forcerun": ALL_STAGES},
    "threads1": {"env": {}, "cores": 1, "forcerun": ALL_STAGES},
    "blas": {"env": {"OPENBLAS_CORETYPE": "Haswell"}, "cores": 2, "forcerun": METRIC_STAGES},
    # Not a kernel: a small real change (vae's learning rate 1e-3 -> 1.1e-3), for the margin a
    # tolerance leaves between kernel noise and a change of results.
    "regression": {"env": {}, "cores": 2, "forcerun": ("results/models/vae/seed0/weights.pt",),
                   "config": {"models": {"vae": {"lr": 1.1e-3}}}},
}


def snakemake(work: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 3600):
    cmd = [str(SNAKEMAKE), "-s", str(work / "Snakefile"), "--directory", str(work), *args]
    full_env = {**os.environ, **(env or {}),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env)


def make_run(target: Path) -> Path:
    """The integration tests' tiny run (tests/test_workflow.py's ``workdir`` fixture) in ``target``."""
    target.mkdir(parents=True)
    shutil.copy(REPO / "Snakefile", target)
    for folder in ("workflow", "src", "envs", "profiles", "presets"):
        shutil.copytree(REPO / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "tests/data/config.integration.yaml", target / "config.yaml")
    done = snakemake(target, "--cores", "2", "all")
    if done.returncode != 0:
        sys.exit(f"the tiny run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return target


# -- comparing ---------------------------------------------------------------------
def flatten(obj, prefix: str = "") -> dict[str, float]:
    """Every float of a metrics JSON by its dotted path (list items as [i])."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out.update(flatten(value, f"{prefix}[{i}]"))
    elif isinstance(obj, float):
        out[prefix] = obj
    return out


def family(file_name: str, key: str) -> str:
    """A metric family: the row (a model run, or the real slices' reference row), the file kind, and
    the key with class names and list indices taken out."""
    kind = file_name.split("/")[-1].split(".", 1)[1] if file_name.count(".") > 1 else "json"
    kind = kind.removesuffix(".json") or "json"
    key = re.sub(r"\[\d+\]", "[]", key)
    key = re.sub(r"classes\.[^.]+\.", "classes.*.", key)
    row = "original" if file_name.startswith("original/") else "model"
    return f"{row} {'pixel' if kind == 'json' else kind}: {key}"


def std_scale(flat: dict[str, float], key: str) -> float | None:
    """The mean a std key belongs to (``x.std`` -> ``x.mean``, ``a_std`` -> ``a_mean``), if any."""
    for pattern, repl in ((r"\.std$", ".mean"), (r"_std$", "_mean")):
        if re.search(pattern, key):
            mean = re.sub(pattern, repl, key)
            return abs(flat[mean]) if mean in flat else None
    return None


def rel_diff(a: float, b: float, scale: float | None = None) -> float:
    if a == b or (np.isnan(a) and np.isnan(b)):
        return 0.0
    denominator = abs(b) if scale is None else scale
    return float("inf") if denominator == 0 else abs(a - b) / denominator


def redone(path: Path, since: float | None) -> bool:
    """Whether ``path`` exists and, for a replay still under way (``since`` its start), was written by it."""
    return path.exists() and (since is None or path.stat().st_mtime > since)


def compare_metrics(root: Path, base_root: Path, since: float | None = None) -> dict[str, dict]:
    """family -> {max_rel, max_rel_to_mean, where, n} over every metrics JSON under both roots."""
    families: dict[str, dict] = {}
    for path in sorted(base_root.rglob("*.json")):
        name = str(path.relative_to(base_root))
        if not redone(root / name, since):
            continue
        base = flatten(json.loads(path.read_text()))
        other = flatten(json.loads((root / name).read_text()))
        for key, b in base.items():
            a = other[key]
            entry = families.setdefault(family(name, key), {"max_rel": 0.0, "max_rel_to_mean": None,
                                                            "where": None, "n": 0})
            entry["n"] += 1
            rel = rel_diff(a, b)
            if rel > entry["max_rel"] or entry["where"] is None:
                entry["max_rel"], entry["where"] = max(rel, entry["max_rel"]), f"{name} {key}"
            scale = std_scale(base, key)
            if scale is not None:
                to_mean = rel_diff(a, b, scale)
                entry["max_rel_to_mean"] = max(to_mean, entry["max_rel_to_mean"] or 0.0)
    return families


def by_file_kind(configs: dict, names) -> dict[str, float]:
    """Row and file kind -> the largest spread of its keys over ``names``' configurations: a
    std's relative to its mean, every other key's relative to itself (what the golden test checks)."""
    out: dict[str, float] = {}
    for name in names:
        for fam, entry in configs[name]["metrics"].items():
            spread = entry["max_rel_to_mean"] if entry["max_rel_to_mean"] is not None else entry["max_rel"]
            kind = fam.split(":")[0]
            out[kind] = max(out.get(kind, 0.0), spread)
    return dict(sorted(out.items()))


def _max_abs(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Largest absolute difference, and that relative to the largest |baseline| value."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return diff, (diff / scale if scale else diff)


def _state_dict(path: Path) -> dict[str, np.ndarray]:
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else payload
    return {k: v.numpy() for k, v in state.items() if hasattr(v, "numpy") and v.is_floating_point()}


def _weights_diff(path: Path, base: Path) -> tuple[float, float]:
    """Largest weight change, absolute and relative to the model's largest |weight| (one scale for
    all tensors: a bias near 0 would make a per-tensor ratio meaningless)."""
    one, other = _state_dict(base), _state_dict(path)
    flat = lambda state: np.concatenate([state[k].ravel() for k in sorted(one)])  # noqa: E731
    return _max_abs(flat(other), flat(one))


def compare_stages(work: Path, base: Path, since: float | None = None) -> dict[str, dict]:
    """(a) weights and samples, (b) Inception features, (c) domain network: identical bits, or how far apart."""
    stages: dict[str, dict] = {}
    for weights in sorted((base / "results/models").glob("*/seed*/weights.pt")):
        run = str(weights.parent.relative_to(base / "results/models"))
        if not redone(work / "results/models" / run / "weights.pt", since):
            continue
        worst = _weights_diff(work / "results/models" / run / "weights.pt", weights)
        stages[f"(a) weights {run}"] = {"identical": worst[0] == 0.0, "max_abs": worst[0], "max_rel": worst[1]}
        samples = base / "results/samples" / run / "samples.npy"
        if not samples.exists() or not redone(work / "results/samples" / run / "samples.npy", since):
            continue
        diff = _max_abs(np.load(work / "results/samples" / run / "samples.npy"), np.load(samples))
        stages[f"(a) samples {run}"] = {"identical": diff[0] == 0.0, "max_abs": diff[0], "max_rel": diff[1]}
    for features in sorted((base / "results/features/inception").rglob("*.npz")):
        name = str(features.relative_to(base / "results/features/inception"))
        if not redone(work / "results/features/inception" / name, since):
            continue
        diff = _max_abs(np.load(work / "results/features/inception" / name)["features"],
                        np.load(features)["features"])
        stages[f"(b) Inception features {name}"] = {"identical": diff[0] == 0.0, "max_abs": diff[0],
                                                    "max_rel": diff[1]}
    # (d) alone: the FID of the replay's real test features against the baseline's training
    # features, beside the baseline's own (the same images; only the features' kernel differs).
    from pipeline_lib.core.inception import frechet_distance_features

    for test in sorted((base / "results/features/inception/real").glob("*/test.npz")):
        dataset = test.parent.name
        replayed = work / "results/features/inception/real" / dataset / "test.npz"
        if not redone(replayed, since):
            continue
        train = np.load(test.parent / "train.npz")["features"]
        one = frechet_distance_features(np.load(test)["features"], train)
        other = frechet_distance_features(np.load(replayed)["features"], train)
        stages[f"(d) FID of real/{dataset} test vs train from (b)'s features"] = {
            "identical": one == other, "max_abs": abs(other - one), "max_rel": rel_diff(other, one)}
    for network in sorted((base / "results/domain").glob("*/network.pt")):
        name = str(network.relative_to(base / "results/domain"))
        if not redone(work / "results/domain" / name, since):
            continue
        worst = _weights_diff(work / "results/domain" / name, network)
        stages[f"(c) domain network {name}"] = {"identical": worst[0] == 0.0, "max_abs": worst[0],
                                                "max_rel": worst[1]}
    return stages


# -- running -------------------------------------------------------------------------
def replay(run: Path, name: str, config: dict, scratch: Path) -> dict:
    """Copy ``run`` and rerun the configuration's stages (and what follows, up to the metric files)."""
    work = scratch / name / "checkout"
    marker = scratch / name / "replay.json"
    if marker.exists() and json.loads(marker.read_text())["config"] == json.loads(json.dumps(config)):
        return {"work": work, "seconds": json.loads(marker.read_text())["seconds"]}  # a kept --scratch
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(run, work, symlinks=True, ignore=shutil.ignore_patterns(".snakemake", "reader_responses"))
    if "config" in config:
        import yaml

        settings = yaml.safe_load((work / "config.yaml").read_text())
        merge(settings, config["config"])
        (work / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    (scratch / name / "started").touch()
    started = time.monotonic()
    done = snakemake(work, "--cores", str(config["cores"]), "--forcerun", *config["forcerun"],
                     "--until", *GOLDEN_RULES, env=config["env"])
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"{name}: snakemake failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    marker.write_text(json.dumps({"config": config, "seconds": round(seconds, 1)}))
    return {"work": work, "seconds": round(seconds, 1)}


def merge(into: dict, change: dict) -> None:
    for key, value in change.items():
        if isinstance(value, dict):
            merge(into.setdefault(key, {}), value)
        else:
            into[key] = value


MKL_SETTINGS = ("", "MKL_ENABLE_INSTRUCTIONS=AVX512", "MKL_ENABLE_INSTRUCTIONS=AVX2",
                "MKL_ENABLE_INSTRUCTIONS=SSE4_2", "MKL_CBWR=AVX2", "MKL_CBWR=AVX512", "MKL_CBWR=COMPATIBLE")
_PRODUCT = ("import hashlib, torch; torch.manual_seed(0); c = torch.randn(8, 1024) @ torch.randn(1024, 64); "
            "print(hashlib.sha256(c.numpy().tobytes()).hexdigest()[:16])")


def mkl_settings() -> dict[str, str]:
    """Which MKL settings change a float32 matrix product here: setting -> digest of the product."""
    out = {}
    for setting in MKL_SETTINGS:
        env = {**os.environ, **dict([setting.split("=")] if setting else [])}
        done = subprocess.run([sys.executable, "-c", _PRODUCT], capture_output=True, text=True, env=env, check=True)
        out[setting or "(native)"] = done.stdout.strip()
    return out


def machine() -> dict:
    import torch
    from threadpoolctl import threadpool_info

    cpu = "unknown"
    if Path("/proc/cpuinfo").exists():
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "aten_capability": torch.backends.cpu.get_cpu_capability(),
            "openblas": sorted({i.get("architecture", "?") for i in threadpool_info() if i["user_api"] == "blas"}),
            "mkl_product_digest": mkl_settings()}


def render(results: dict) -> str:
    configs = list(results["configs"])
    lines = ["# Spread of the tiny workflow's numbers across CPU kernels and thread counts\n",
             f"Machine: {results['machine']['cpu']} ({results['machine']['cpus']} CPUs, torch "
             f"{results['machine']['torch']}, native ATen {results['machine']['aten_capability']}, "
             f"OpenBLAS {', '.join(results['machine']['openblas'])}). Baseline: this machine's kernels, 2 threads.",
             f"Command: `{results['command']}`\n",
             "A float32 matrix product under each MKL setting (same digest = same bits): "
             + ", ".join(f"{k} `{v}`" for k, v in results["machine"].get("mkl_product_digest", {}).items()) + "\n",
             "| configuration | environment | cores | rerun from | seconds |", "|---|---|---|---|---|"]
    for name in configs:
        c = results["configs"][name]
        env = " ".join(f"{k}={v}" for k, v in c["env"].items()) or "(native)"
        seconds = "unfinished: the files written so far" if c.get("partial") else c["seconds"]
        lines.append(f"| {name} | `{env}` | {c['cores']} | {', '.join(c['forcerun'])} | {seconds} |")
    lines += ["", "## Stages (max relative difference to the baseline; 0 = identical bits)", "",
              "| stage | " + " | ".join(configs) + " |", "|---|" + "---|" * len(configs)]
    stage_names = sorted({s for c in configs for s in results["configs"][c]["stages"]})
    for stage in stage_names:
        cells = [results["configs"][c]["stages"].get(stage) for c in configs]
        lines.append(f"| {stage} | " + " | ".join("–" if x is None else f"{x['max_rel']:.2e}" for x in cells) + " |")
    lines += ["", "## Metric families (max relative difference; for a std also relative to its mean)", "",
              "| metric | " + " | ".join(configs) + " | golden files vs baseline |",
              "|---|" + "---|" * (len(configs) + 1)]
    for fam in sorted(results["baseline_vs_golden"]):
        cells = []
        for c in configs + [None]:
            entry = (results["configs"][c]["metrics"] if c else results["baseline_vs_golden"]).get(fam)
            if entry is None:
                cells.append("–")
            else:
                text = f"{entry['max_rel']:.1e}"
                if entry["max_rel_to_mean"] is not None:
                    text += f" ({entry['max_rel_to_mean']:.1e})"
                cells.append(text)
        lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    kernels = [c for c in configs if c != "regression"]
    spread = by_file_kind(results["configs"], kernels)
    golden = by_file_kind({"golden": {"metrics": results["baseline_vs_golden"]}}, ["golden"])
    change = by_file_kind(results["configs"], ["regression"]) if "regression" in configs else {}
    lines += ["", "## Per row and file kind: the largest spread of its keys (a std against its mean)", "",
              f"| row and file | kernels ({', '.join(kernels)}) | recorded files vs baseline |"
              + (" regression (vae lr +10 %) |" if change else ""),
              "|---|---|---|" + ("---|" if change else "")]
    for kind in sorted(set(spread) | set(golden)):
        cells = [f"{spread[kind]:.1e}" if kind in spread else "–", f"{golden[kind]:.1e}" if kind in golden else "–"]
        if change:
            cells.append(f"{change.get(kind, 0.0):.1e}")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a finished tiny run (the baseline)")
    parser.add_argument("--make-run", type=Path, help="make the baseline run in this new folder first")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--scratch", type=Path, help="where the replays go, kept (default: a temporary folder, "
                        "removed); a replay already finished there with the same configuration is reused")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/cpu_kernel_spread.json")
    parser.add_argument("--parallel", type=int, default=1, help="replays at a time (default 1)")
    parser.add_argument("--partial", action="store_true",
                        help="run nothing: compare what the replays in --scratch have written so far")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from --out")
    args = parser.parse_args(argv)
    from pipeline_lib.core.io import write_json, write_text

    if args.render:
        write_text(args.out.with_suffix(".md"), render(json.loads(args.out.read_text())))
        return
    run = make_run(args.make_run) if args.make_run else args.run
    if run is None or not (run / "results/metrics").is_dir():
        parser.error("--run must be a finished tiny run (results/metrics/ missing); or use --make-run")
    names = [n for n in args.configs.split(",") if n]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configurations {unknown}; choose from {sorted(CONFIGS)}")
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="kernel-spread-"))
    results = {"command": " ".join(["python", "bench/cpu_kernel_spread.py", *(argv or sys.argv[1:])]),
               "machine": machine(), "configs": {}}
    previous = json.loads(args.out.read_text())["configs"] if args.out.exists() else {}
    if args.partial:
        # Replays still under way (or cut off): only the files they have written so far.
        for name in names:
            work = scratch / name / "checkout"
            started = scratch / name / "started"
            since = started.stat().st_mtime if started.exists() else None
            finished = (scratch / name / "replay.json").exists()
            results["configs"][name] = {**CONFIGS[name], "seconds": None, "partial": not finished,
                                        "stages": compare_stages(work, run, None if finished else since),
                                        "metrics": compare_metrics(work / "results/metrics", run / "results/metrics",
                                                                   None if finished else since)}
        results["baseline_vs_golden"] = compare_metrics(run / "results/metrics", GOLDEN)
        merged = {**results, "configs": {**previous, **results["configs"]}}
        write_json(args.out, merged)
        write_text(args.out.with_suffix(".md"), render(merged))
        return
    try:
        # The replays wait on their jobs, so several may run side by side (--parallel).
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            replays = {name: pool.submit(replay, run, name, CONFIGS[name], scratch) for name in names}
            for name, future in replays.items():
                done = future.result()
                results["configs"][name] = {
                    **CONFIGS[name], "seconds": done["seconds"],
                    "stages": compare_stages(done["work"], run),
                    "metrics": compare_metrics(done["work"] / "results/metrics", run / "results/metrics")}
                results["baseline_vs_golden"] = compare_metrics(run / "results/metrics", GOLDEN)
                # Keep what is done: a configuration run alone adds to the others' results.
                merged = {**results, "configs": {**previous, **results["configs"]}}
                write_json(args.out, merged)
                write_text(args.out.with_suffix(".md"), render(merged))
                print(f"{name}: {done['seconds']} s", flush=True)
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
