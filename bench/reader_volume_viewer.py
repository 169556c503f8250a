"""The reader kit of volumes (issue 26): kit size and how fast the page shows and scrolls a volume.

    PYTHONPATH=src python bench/reader_volume_viewer.py [--grids 48x48x48,160x224x160] [--volumes 20]
        [--out bench/results/reader_volume_viewer.json]

For each grid (X x Y x Z, one channel) it builds, in a fresh process, a volume kit of ``--volumes``
random volumes, half real and half generated (reader_study.volume_kit.build_volume_kit), and reports
the bytes of one volume file (8-bit, base64: 4 ceil(C X Y Z / 3) + 48), the build's wall time and
peak resident memory (VmHWM: one volume at a time, whatever the kit's size); then opens the kit in headless Chromium
(Debian's, driven by Playwright as the browser tests do) and measures, in the page's own clock
(performance.now): the time from pressing Start to the first volume drawn in its three panes
(script load, base64 decode, three slices), one scroll step of the axial pane (a wheel event: one
slice drawn), and one window/level preset (three slices drawn again). Median of 5 for the last two.
Writes the JSON to ``--out`` and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline_lib.core.io import write_json, write_npy, write_text, write_tsv
from pipeline_lib.reader_study.volume_kit import build_volume_kit

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def write_inputs(root: Path, grid: tuple[int, int, int], n: int) -> None:
    rng = np.random.default_rng(0)
    for name in ("volumes", "generated"):
        write_npy(root / f"{name}.npy", rng.random((n, 1, *grid), dtype=np.float32))
    write_tsv(root / "volumes.tsv", pd.DataFrame({"row": range(n), "subject": [f"sub-{i:010d}" for i in range(n)],
                                                 "split": "test", "augmented": 0, "sequence": "t1"}))


def build(root: Path, n: int) -> None:
    """In the child process: build the kit, print bytes, seconds and peak RSS as JSON."""
    start = time.perf_counter()
    summary = build_volume_kit(root / "volumes.npy", root / "volumes.tsv", {"m": root / "generated.npy"},
                               {"n_real": n, "n_per_model": n}, kit_dir=root / "kit",
                               answer_key=root / "key.tsv", summary=root / "summary.json")
    seconds = time.perf_counter() - start
    peak_kb = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
    print(json.dumps({"bytes_per_volume": summary["bytes_per_volume"], "build_s": round(seconds, 2),
                      "build_peak_rss_mb": round(peak_kb / 1024, 1)}))


def browse(kit: Path, chromium: str) -> dict:
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.goto((kit / "index.html").as_uri())
            page.fill("#reader-id", "bench")
            page.evaluate("window.__start = performance.now(); document.getElementById('start-button').click()")
            page.wait_for_function("document.body.dataset.ready === 'yes'", timeout=120_000)
            first_ms = page.evaluate("performance.now() - window.__start")
            scroll = page.evaluate("""() => {
                const pane = document.querySelector('#volume-viewer .pane[data-plane=axial]');
                const times = [];
                for (let i = 0; i < 5; i++) {
                    const t = performance.now();
                    pane.dispatchEvent(new WheelEvent('wheel', {deltaY: i % 2 ? -100 : 100, cancelable: true}));
                    times.push(performance.now() - t);
                }
                return times; }""")
            window_level = page.evaluate("""() => {
                const times = [];
                for (let i = 0; i < 5; i++) {
                    const preset = document.querySelector(`.wl-preset[data-window='${i % 2 ? 1 : 0.3}']`);
                    const t = performance.now();
                    preset.click();
                    times.push(performance.now() - t);
                }
                return times; }""")
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return {"first_volume_ms": round(first_ms, 1), "scroll_step_ms": round(statistics.median(scroll), 2),
            "window_level_ms": round(statistics.median(window_level), 2)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grids", default="48x48x48,160x224x160")
    parser.add_argument("--volumes", type=int, default=20, help="volumes in the kit (half real)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/reader_volume_viewer.json"))
    parser.add_argument("--build-only", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.build_only:
        build(args.build_only, args.volumes // 2)
        return
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("Chromium is not installed (apt-get install chromium)")
    rows = []
    for text in args.grids.split(","):
        grid = tuple(int(v) for v in text.split("x"))
        with tempfile.TemporaryDirectory(prefix="reader-volumes-") as tmp:
            write_inputs(Path(tmp), grid, args.volumes // 2)
            child = subprocess.run([sys.executable, __file__, "--build-only", tmp, "--volumes", str(args.volumes)],
                                   check=True, capture_output=True, text=True)
            row = {"grid": list(grid), "volumes": args.volumes, **json.loads(child.stdout.splitlines()[-1]),
                   **browse(Path(tmp) / "kit", chromium)}
        print(row, flush=True)
        rows.append(row)
    result = {"command": f"PYTHONPATH=src python bench/reader_volume_viewer.py --grids {args.grids} --volumes {args.volumes}",
              "rows": rows}
    write_json(args.out, result)
    lines = ["| grid | one volume file | kit of 100 volumes | build (volumes) | build peak RSS | first volume shown "
             "| one scroll step | window/level |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        mb = row["bytes_per_volume"] / 1e6
        lines.append(f"| {'×'.join(map(str, row['grid']))} | {mb:.2f} MB | {100 * mb:.0f} MB | {row['build_s']} s "
                     f"({row['volumes']}) | {row['build_peak_rss_mb']:.0f} MB | {row['first_volume_ms']:.0f} ms | "
                     f"{row['scroll_step_ms']} ms | {row['window_level_ms']} ms |")
    write_text(args.out.with_suffix(".md"), "\n".join([f"`{result['command']}`", "", *lines, ""]))


if __name__ == "__main__":
    main()
