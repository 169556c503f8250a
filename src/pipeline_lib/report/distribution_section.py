"""The report's FID, KID and PRDC block: tables and figures from the ``*.distribution.json`` files
written by ``evaluation/distribution.py``, every value as mean ± std over a model's training runs."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from pipeline_lib.evaluation.seeds import spread, spread_of, value_at
from pipeline_lib.report.html import escape as _esc, figure, figure_png, img_tag, pyplot, spread_cell


Runs = Sequence[Mapping[str, Any]]
Notes = Callable[[str, str, str], None]

SMALL_SAMPLE = "small-sample FID"


def _as_runs(value: Mapping[str, Any] | Runs) -> list[Mapping[str, Any]]:
    return [value] if isinstance(value, Mapping) else list(value)


def _pooled(runs: Runs, path: str) -> list[float]:
    """Every subset value of every run (``path`` leads to a record with ``values``)."""
    pooled: list[float] = []
    for run in runs:
        record = value_at(run, path) or {}
        pooled += [float(v) for v in record.get("values") or []]
    return pooled


def _fid_boxplot(rows: Mapping[str, Runs]) -> str:
    plt = pyplot()
    names = [n for n in rows if _pooled(rows[n], "fid")]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(names) + 2), 3.4))
    ax.boxplot([_pooled(rows[n], "fid") for n in names])
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
    ax.set_ylabel("FID (Inception pool3)")
    ax.set_title("FID over training seeds × random subsets")
    sizes = ", ".join(f"{n}: {len(rows[n])} run(s) × {rows[n][0]['fid']['repeats']} subsets of "
                      f"{rows[n][0]['fid']['subset_size']}" for n in names)
    caption = (f"FID per model, every random subset of every training run pooled ({sizes}), against the "
               f"same number of real training slices; 'original' uses real test slices as samples.")
    return figure(img_tag(figure_png(fig, tight=True), "FID boxplots per model"), caption)


def _table(rows: Mapping[str, Runs], small: set[str]) -> str:
    head = ("<tr><th>Model</th><th>Runs</th><th>FID ↓</th><th>FID spread over subsets</th><th>Subsets × images</th>"
            "<th>FID, all images ↓</th><th>KID × 10³ ↓</th><th>Precision ↑</th><th>Recall ↑</th>"
            "<th>Density ↑</th><th>Coverage ↑</th><th>Samples</th><th>Real</th></tr>")
    body = []
    for name, runs in rows.items():
        r = runs[0]
        f = r["fid"]
        flag = " ⚠" if name in small else ""
        body.append(
            f'<tr data-model="{_esc(name)}"><th>{_esc(name)}</th><td class="num">{len(runs)}</td>'
            + spread_cell(spread_of(runs, "fid.mean"), key="fid", mark=flag)
            + spread_cell(spread_of(runs, "fid.std"), key="fid_subset_std")
            + f'<td class="num">{f["repeats"]} × {f["subset_size"]}'
            + ("<br><small>fresh samples per repeat</small>" if f.get("fresh_samples") else "") + "</td>"
            + spread_cell(spread_of(runs, "fid_all"), key="fid_all")
            + spread_cell(spread_of(runs, "kid.mean"), key="kid", scale=1e3)
            + "".join(spread_cell(spread_of(runs, f"prdc.{m}"), key=m)
                      for m in ("precision", "recall", "density", "coverage"))
            + f'<td class="num">{r["n_samples"]}</td><td class="num">{r["n_real"]}</td></tr>')
    ks = ", ".join(str(k) for k in sorted({r[0]["prdc"]["nearest_k"] for r in rows.values()}))
    caption = ("<caption>Inception pool3 (2048-d) features of the samples against the real training slices; "
               "every value is the mean ± std over training seeds (Runs). FID: the mean over R random "
               "subsets per side within each run; its spread over subsets (the std with n − 1 within a "
               "run, averaged over runs) is the next column; with 'fresh samples per repeat' each repeat draws "
               "its subset from its own newly generated sample set, so that spread includes the model's "
               "sampling variation. FID, all images: one FID on every sample and "
               "real slice; KID: unbiased cubic-kernel MMD² averaged over random subsets; PRDC with "
               f"k = {_esc(ks)} nearest neighbours (density can exceed 1). ⚠ = fewer images than feature "
               "dimensions (biased FID, see the warnings).</caption>")
    return f'<table id="distribution-metrics">{head}{"".join(body)}{caption}</table>'


def _class_table(name: str, runs: Runs, small: set[str]) -> str:
    per_class = runs[0]["fid_per_class"]
    body = []
    for cls, r in per_class["classes"].items():
        if "values" not in r:
            body.append(f"<tr><td>{_esc(cls)}</td><td colspan=4>{_esc(r.get('skipped', 'not computed'))}</td></tr>")
            continue
        # Class names may hold dots, so no dotted path here.
        values = spread(((run.get("fid_per_class") or {}).get("classes", {}).get(cls) or {}).get("mean")
                        for run in runs)
        flag = " ⚠" if r.get("warning") else ""
        if flag:
            small.add(f"{name} ({cls})")
        body.append(f'<tr data-class="{_esc(cls)}"><td>{_esc(cls)}</td><td class="num">{values.n}</td>'
                    + spread_cell(values, key="fid", mark=flag)
                    + f'<td class="num">{r["repeats"]} × {r["subset_size"]}</td>'
                    f'<td class="num">{r["n_samples"]} / {r["n_real"]}</td></tr>')
    return (f'<table class="per-class" data-model="{_esc(name)}"><tr><th>{_esc(per_class.get("column") or "class")} '
            f'({_esc(name)})</th><th>Runs</th><th>FID ↓ (mean ± std over seeds)</th><th>Subsets × images</th>'
            f"<th>samples / real</th></tr>{''.join(body)}</table>")


def render_distribution_metrics_html(models: Mapping[str, Mapping[str, Any] | Runs],
                                     original: Mapping[str, Any] | None = None,
                                     notes: Notes | None = None) -> str:
    """The FID / KID / PRDC block of the report (HTML fragment) from the distribution JSON files.

    ``models`` maps model name → the contents of its runs' ``*.distribution.json`` (a list, one per
    seed, or one record); ``original`` is ``results/metrics/original.distribution.json``. Holds the
    metrics table (mean ± std over seeds), FID boxplots and per-class tables. The small-sample
    warning is one note listing every affected set: given to ``notes(kind, message, item)`` when
    the page collects its warnings, else written once below the table. All text is escaped.
    """
    rows: dict[str, list[Mapping[str, Any]]] = {}
    if original is not None:
        rows["original"] = [original]
    rows.update({name: _as_runs(value) for name, value in models.items()})
    rows = {name: runs for name, runs in rows.items() if runs}
    if not rows:
        return "<p>No distribution metrics were computed.</p>"
    small = {name for name, runs in rows.items() if any(r.get("warning") for r in runs)}
    parts = [_table(rows, small), _fid_boxplot(rows)]
    for name, runs in rows.items():
        if runs[0].get("fid_per_class"):
            parts.append(f"<h4>Per-class FID: {_esc(name)}</h4>")
            parts.append(_class_table(name, runs, small))
    if small:
        sizes = sorted({int(r["fid"]["subset_size"]) for n, runs in rows.items() if n in small for r in runs
                        if r.get("fid")})
        dims = sorted({int(r["fid"].get("feature_dim", 2048)) for runs in rows.values() for r in runs if r.get("fid")})
        message = (f"FID on fewer images per set ({', '.join(map(str, sizes))}) than the "
                   f"{' / '.join(map(str, dims))} feature dimensions: the covariance estimates are rank-deficient "
                   "and FID is strongly biased "
                   "upwards; compare only FIDs computed with the same number of images.")
        if notes is not None:
            for name in sorted(small):
                notes(SMALL_SAMPLE, message, name)
        else:
            parts.append(f'<div class="warning"><p>⚠ Small-sample warning: {_esc(message)} Affected: '
                         f'{_esc(", ".join(sorted(small)))}.</p></div>')
    return "\n".join(parts)
