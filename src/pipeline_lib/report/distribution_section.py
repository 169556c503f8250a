"""The report's "Distribution metrics" section: FID, KID and PRDC tables and figures, from the
``results/metrics/*.distribution.json`` files written by ``evaluation/distribution.py``."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from pipeline_lib.report.html import escape as _esc, figure, figure_png, img_tag, pyplot


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if abs(value) < 1e4 else f"{value:.4g}"


def _fid_boxplot(rows: Mapping[str, Mapping]) -> str:
    plt = pyplot()
    names = list(rows)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 2), 3.6))
    ax.boxplot([rows[n]["fid"]["values"] for n in names])
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
    ax.set_ylabel("FID (Inception pool3)")
    ax.set_title("FID over repeated random subsets")
    sizes = ", ".join(f"{n}: {rows[n]['fid']['repeats']}×{rows[n]['fid']['subset_size']}" for n in names)
    caption = (f"FID boxplots per model: each box holds the FIDs of R random subsets "
               f"(R × images per set — {sizes}) against the same number of real training slices; "
               f"the 'original' row uses real test slices as samples.")
    return figure(img_tag(figure_png(fig, tight=True), "FID boxplots per model"), caption)


def _class_boxplot(name: str, per_class: Mapping[str, Any]) -> str:
    plt = pyplot()
    classes = {c: r for c, r in per_class["classes"].items() if "values" in r}
    skipped = [c for c in per_class["classes"] if c not in classes]
    if not classes:
        return f"<p>{_esc(name)}: no class had enough images for FID ({_esc(', '.join(skipped))}).</p>"
    labels = list(classes)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) + 2), 3.4))
    ax.boxplot([classes[c]["values"] for c in labels])
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right")
    ax.set_ylabel("FID")
    ax.set_title(f"{name}: FID per {per_class.get('column') or 'class'}")
    sizes = ", ".join(f"{c}: {r['repeats']}×{r['subset_size']} (of {r['n_samples']} samples, "
                      f"{r['n_real']} real)" for c, r in classes.items())
    caption = (f"{name}: FID per class '{per_class.get('column')}' — samples of each class against the "
               f"real training slices of that class, R × images per set: {sizes}.")
    if skipped:
        caption += f" Too few images for: {', '.join(skipped)}."
    return figure(img_tag(figure_png(fig, tight=True), f"{name} per-class FID boxplots"), caption)


def _prdc_bars(rows: Mapping[str, Mapping]) -> str:
    plt = pyplot()
    names = list(rows)
    keys = ["precision", "recall", "density", "coverage"]
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 3.6))
    x = np.arange(len(names))
    for i, key in enumerate(keys):
        ax.bar(x + (i - 1.5) * width, [rows[n]["prdc"][key] for n in names], width, label=key)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Precision / recall / density / coverage")
    k = {rows[n]["prdc"]["nearest_k"] for n in names}
    sizes = ", ".join(f"{n}: {rows[n]['prdc']['n_samples']} samples vs {rows[n]['prdc']['n_real']} real"
                      for n in names)
    caption = (f"PRDC (Naeem et al. 2020, k = {', '.join(map(str, sorted(k)))}) on Inception pool3 "
               f"features against real training slices ({sizes}). Density can exceed 1.")
    return figure(img_tag(figure_png(fig, tight=True), "PRDC bars per model"), caption)


def _pm(mean: Any, std: Any, digits: int = 2) -> str:
    return f"{_num(mean, digits)} ± {_num(std, digits)}"


def _table(rows: Mapping[str, Mapping]) -> str:
    head = ("<tr><th>Model</th><th>FID (mean ± std)</th><th>R × images</th><th>FID, all images</th>"
            "<th>KID × 10³ (mean ± std)</th><th>Precision</th><th>Recall</th><th>Density</th>"
            "<th>Coverage</th><th>Samples</th><th>Real</th></tr>")
    body = []
    for name, r in rows.items():
        f, k, p = r["fid"], r["kid"], r["prdc"]
        flag = " ⚠" if r.get("warning") else ""
        body.append(
            f'<tr><td>{_esc(name)}</td>'
            f'<td class="num" data-value="{f["mean"]!r}">{_pm(f["mean"], f["std"])}{flag}</td>'
            f'<td class="num">{f["repeats"]} × {f["subset_size"]}</td>'
            f'<td class="num" data-value="{r["fid_all"]!r}">{_num(r["fid_all"], 2)}</td>'
            f'<td class="num" data-value="{k["mean"]!r}">{_pm(1e3 * k["mean"], 1e3 * k["std"])}</td>'
            + "".join(f'<td class="num" data-value="{p[m]!r}">{_num(p[m])}</td>'
                      for m in ("precision", "recall", "density", "coverage"))
            + f'<td class="num">{r["n_samples"]}</td><td class="num">{r["n_real"]}</td></tr>')
    ks = ", ".join(str(k) for k in sorted({r["prdc"]["nearest_k"] for r in rows.values()}))
    caption = ("<caption>Inception pool3 (2048-d) features of the samples against the real training slices. "
               "FID: R random subsets per side (mean ± std over subsets, std with n − 1); "
               "FID, all images: one FID on every sample and real slice; KID: unbiased cubic-kernel MMD², "
               f"mean ± std over random subsets; PRDC with k = {ks} nearest neighbours. ⚠ = fewer images "
               "than feature dimensions (biased FID).</caption>")
    return f'<table id="distribution-metrics">{head}{"".join(body)}{caption}</table>'


def _class_table(name: str, per_class: Mapping[str, Any]) -> str:
    body = []
    for cls, r in per_class["classes"].items():
        if "values" not in r:
            body.append(f"<tr><td>{_esc(cls)}</td><td colspan=3>{_esc(r.get('skipped', 'not computed'))}</td></tr>")
            continue
        body.append(f'<tr><td>{_esc(cls)}</td><td class="num" data-value="{r["mean"]!r}">'
                    f'{_pm(r["mean"], r["std"])}{" ⚠" if r["warning"] else ""}</td>'
                    f'<td class="num">{r["repeats"]} × {r["subset_size"]}</td>'
                    f'<td class="num">{r["n_samples"]} / {r["n_real"]}</td></tr>')
    return (f'<table class="per-class"><tr><th>{_esc(per_class.get("column") or "class")} ({_esc(name)})</th>'
            f"<th>FID (mean ± std)</th><th>R × images</th><th>samples / real</th></tr>{''.join(body)}</table>")


def render_distribution_metrics_html(models: Mapping[str, Mapping[str, Any]],
                                     original: Mapping[str, Any] | None = None) -> str:
    """The report's "Distribution metrics" section (HTML fragment) from the distribution JSON files.

    ``models`` maps model name → contents of ``results/metrics/{model}.distribution.json``;
    ``original`` is ``results/metrics/original.distribution.json``. Holds the
    metrics table (mean ± std), FID boxplots per model and per class, PRDC bars
    (PNG data URIs) and the small-sample warnings; all text is escaped.
    """
    rows: dict[str, Mapping[str, Any]] = {}
    if original is not None:
        rows["original"] = original
    rows.update(models)
    if not rows:
        return "<h2>Distribution metrics</h2><p>No distribution metrics were computed.</p>"
    parts = ["<h2>Distribution metrics (FID, KID, precision / recall / density / coverage)</h2>",
             _table(rows)]
    warnings = [(n, r["warning_message"]) for n, r in rows.items() if r.get("warning_message")]
    if warnings:
        items = "".join(f"<li><b>{_esc(n)}</b>: {_esc(m)}</li>" for n, m in warnings)
        parts.append(f'<div class="warning"><p>⚠ Small-sample warning</p><ul>{items}</ul></div>')
    parts.append(_fid_boxplot(rows))
    for name, r in rows.items():
        if r.get("fid_per_class"):
            parts.append(f"<h3>Per-class FID: {_esc(name)}</h3>")
            parts.append(_class_table(name, r["fid_per_class"]))
            parts.append(_class_boxplot(name, r["fid_per_class"]))
    parts.append(_prdc_bars(rows))
    return "\n".join(parts)
