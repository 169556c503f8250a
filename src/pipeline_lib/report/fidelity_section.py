"""The fidelity blocks: FID, KID and PRDC, the domain feature space, Ungría Hirte et al.'s Table 1
pixel metrics, the samples' grey levels, the sample grids beside real slices, and the reconstructions."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from pipeline_lib.evaluation.seeds import spread_of
from pipeline_lib.report.distribution_section import render_distribution_metrics_html
from pipeline_lib.report.evaluation_section import domain_html
from pipeline_lib.report.html import (count_text as _count, escape as _esc, figures, finite_float as _as_float,
                                      float_or_nan, format_mean_std, format_number, spread_cell, zoomable_img)
from pipeline_lib.report.inputs import ReportData, Run
from pipeline_lib.report.sections import Notes, Section

# (metrics key for the value, key for ± std or None, column heading) — Ungría Hirte et al., Table 1.
_TABLE1_COLUMNS = [
    ("dataset_similarity", None, "Data Similarity"),
    ("isd", None, "ISD"),
    ("min_isd", None, "Minimum ISD"),
    ("sharpness_mean", "sharpness_std", "Laplace Sharpness (mean ± std)"),
]

_RECON_COLUMNS = [
    ("recon_mse_mean", "Reconstruction MSE ↓"),
    ("recon_sharpness_mean", "Reconstruction sharpness"),
    ("original_sharpness_mean", "Original sharpness"),
]


def _distribution(data: ReportData, notes: Notes) -> str:
    return render_distribution_metrics_html(data.records("distribution"), data.distribution_original, notes=notes.add)


def _domain(data: ReportData, notes: Notes) -> str:
    domain = {"original": [data.domain_original]} if data.domain_original else {}
    domain.update(data.records("domain"))
    few = [name for name, runs in domain.items() if any(r.get("few_images_warning") for r in runs)]
    for name in few:
        notes.add("small-sample domain FD", "fewer images than domain feature dimensions: the domain Fréchet "
                  "distance is biased upwards and not comparable across sample sizes.", name)
    return domain_html(data.domain_network, domain)


def _table1_section(data: ReportData, notes: Notes) -> str:
    return _table1(data.original, data.records("metrics"))


def _samples(data: ReportData, notes: Notes) -> str:
    """Each model's first run's grid beside a grid of real test slices; the other seeds' grids folded."""
    figures = []
    if data.real_grid is not None:
        figures.append('<figure data-model="real slices"><figcaption>Real test slices (for comparison)</figcaption>'
                       f"{zoomable_img(data.real_grid, 'real test slices', 'grid-thumb')}</figure>")
    for model, runs in data.runs.items():
        if not runs:
            continue
        first, others = runs[0], runs[1:]
        folded = ""
        if others:
            grids = "".join(f'<figure data-seed="{run.seed}"><figcaption>{_esc(_grid_caption(model, run))}</figcaption>'
                            f"{zoomable_img(run.files.grid, f'sample grid {model} seed {run.seed}', 'grid-thumb')}"
                            "</figure>" for run in others)
            seeds = ", ".join(str(run.seed) for run in others)
            folded = (f'<details class="other-seeds"><summary>Seed{"s" if len(others) > 1 else ""} {_esc(seeds)}'
                      f"</summary>{grids}</details>")
        figures.append(f'<figure data-model="{_esc(model)}" data-seed="{first.seed}"><figcaption>'
                       f"{_esc(_grid_caption(model, first))}</figcaption>"
                       f"{zoomable_img(first.files.grid, f'sample grid {model}', 'grid-thumb')}{folded}</figure>")
    if not figures:
        return "<p>No sample grids.</p>"
    real = " beside real test slices (a seeded draw from the test split)" if data.real_grid is not None else ""
    return (f"<p>Samples of each model's first training run{real} (click a grid to enlarge it; open "
            "“Seeds …” under a grid for the model's other training runs).</p>"
            f'<div class="sample-grids">{"".join(figures)}</div>')


def _grid_caption(model: str, run: Run) -> str:
    return f"{model}, seed {run.seed}" + (" (⚠ incomplete)" if run.incomplete else "")


def _reconstructions(data: ReportData, notes: Notes) -> str:
    table = _reconstruction_table(data.records("metrics"))
    return table + figures(data.reconstruction_grids, "originals and reconstructions")


def _table1(original: Mapping, models: Mapping[str, Sequence[Mapping]]) -> str:
    """Seed 001's Table 1: rows "Original" then one per model (mean over seeds; ± std over seeds)."""
    head = "<th></th><th>Runs</th>" + "".join(f"<th>{_esc(h)}</th>" for _, _, h in _TABLE1_COLUMNS)
    rows = [_metric_row("Original", [original], _TABLE1_COLUMNS)]
    rows += [_metric_row(name, runs, _TABLE1_COLUMNS) for name, runs in models.items()]
    caption = _table1_caption(original, models)
    return (
        f'<table id="table1"><caption>{_esc(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _table1_caption(original: Mapping, models: Mapping[str, Sequence[Mapping]]) -> str:
    counts = [f"Original: {_count(original.get('n_samples'))} images"]
    counts += [
        f"{name}: {_count(runs[0].get('n_samples'))} samples vs {_count(runs[0].get('n_originals'))} originals"
        for name, runs in models.items() if runs
    ]
    flat = {name: runs[0] for name, runs in models.items() if runs}
    return (
        "Dataset similarity, intra-sample diversity (ISD) and minimum ISD are mean per-pixel squared "
        "errors on images in [0, 1]; the Original row treats held-out real test slices as the sample set. "
        "With several training runs a cell is the mean ± std over seeds (the sharpness column then shows "
        "the spread over seeds of the per-run mean, not over images). "
        f"Laplace sharpness: variance of the Laplacian with intensities multiplied by "
        f"{_scale_text(original, flat)}. Images: " + "; ".join(counts) + "."
    )


def _reconstruction_table(models: Mapping[str, Sequence[Mapping]]) -> str:
    with_recon = {name: runs for name, runs in models.items() if runs and "recon_mse_mean" in runs[0]}
    if not with_recon:
        return "<p>No model reconstructs images.</p>"
    head = ("<th>Model</th><th>Runs</th>" + "".join(f"<th>{_esc(h)}</th>" for _, h in _RECON_COLUMNS)
            + "<th>Test images</th>")
    rows = []
    for name, runs in with_recon.items():
        cells = "".join(spread_cell(spread_of(runs, key), key=key) for key, _ in _RECON_COLUMNS)
        rows.append(f'<tr data-model="{_esc(name)}"><th>{_esc(name)}</th><td class="num">{len(runs)}</td>{cells}'
                    f'<td class="num">{_esc(_count(runs[0].get("n_reconstructions")))}</td></tr>')
    flat = {name: runs[0] for name, runs in with_recon.items()}
    caption = (
        "Per-image mean squared error between test images and their reconstructions (intensities "
        f"in [0, 1]), mean over images, then mean ± std over training seeds; sharpness as in Table 1, "
        f"intensities multiplied by {_scale_text({}, flat)}."
    )
    return (
        f'<table id="reconstruction"><caption>{_esc(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _metric_row(name: str, runs: Sequence[Mapping], columns: Iterable[tuple[str, str | None, str]]) -> str:
    cells = [f"<th>{_esc(name)}</th>", f'<td class="num">{len(runs)}</td>']
    for key, std_key, _ in columns:
        cells.append(_metric_cell(key, runs, std_key))
    return f'<tr data-model="{_esc(name)}">' + "".join(cells) + "</tr>"


def _metric_cell(key: str, runs: Sequence[Mapping], std_key: str | None = None) -> str:
    """A numeric cell over runs; ``data-value`` holds repr(float) of the mean (``nan`` if missing).
    One run with a within-run spread (``std_key``, e.g. sharpness over images) shows that spread."""
    s = spread_of(runs, key)
    if len(runs) == 1 and std_key is not None:
        value, std = runs[0].get(key), runs[0].get(std_key)
        number = _as_float(value)
        attrs = (f'data-metric="{_esc(key)}" data-value="{_esc(repr(float_or_nan(value)))}" '
                 f'data-std="{_esc(repr(float_or_nan(std)))}" data-n="{s.n}"')
        text = format_mean_std(value, std) if number is not None else "n/a"
        css = "num" if number is not None else "num na"
        return f'<td class="{css}" {attrs}>{_esc(text)}</td>'
    return spread_cell(s, key=key)


#: (record key, heading, shown as a percentage); each sample column is followed by its real one.
_INTENSITY_COLUMNS = [
    ("wasserstein", "Wasserstein distance ↓", False),
    ("mean", "Mean", False), ("real_mean", "Real mean", False),
    ("std", "Std (contrast)", False), ("real_std", "Real std", False),
    ("background", "Background", True), ("real_background", "Real background", True),
]


def _intensity(data: ReportData, notes: Notes) -> str:
    models = {name: runs for name, runs in data.records("intensity").items() if runs}
    if not models:
        return "<p>No intensity statistics.</p>"
    head = "<th>Model</th><th>Runs</th>" + "".join(f"<th>{_esc(h)}</th>" for _, h, _ in _INTENSITY_COLUMNS)
    rows = []
    for name, runs in models.items():
        cells = "".join(spread_cell(spread_of(runs, key), key=key, percent=percent)
                        for key, _, percent in _INTENSITY_COLUMNS)
        rows.append(f'<tr data-model="{_esc(name)}"><th>{_esc(name)}</th><td class="num">{len(runs)}</td>{cells}</tr>')
    caption = ("Grey levels of each model's samples against its dataset's real training slices (intensities in "
               "[0, 1]; mean ± std over training seeds). Wasserstein distance: the 1-D earth mover's distance "
               "between the two intensity histograms on 8-bit grey levels (0 = the same histogram). Mean and "
               "std of all pixels: brightness and contrast. Background: the share of pixels darker than 2 % "
               "of full scale; a model that paints noise outside the head, or loses the head, moves it.")
    return (f'<table id="intensity"><caption>{_esc(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _scale_text(original: Mapping, models: Mapping[str, Mapping]) -> str:
    scales = {_as_float(d.get("sharpness_scale")) for d in [original, *models.values()] if "sharpness_scale" in d}
    scales.discard(None)
    if not scales:
        return "an unrecorded scale"
    if len(scales) > 1:
        return "differing scales (" + ", ".join(format_number(s) for s in sorted(scales)) + ") — not comparable"
    (scale,) = scales
    return f"{format_number(scale)}" + (" (8-bit scale, as Ungría Hirte et al.'s values imply)" if scale == 255.0 else "")


SECTIONS = [
    Section("fidelity", "FID, KID, precision and density (Inception features)", "distribution", _distribution),
    Section("fidelity", "Domain feature space", "domain-features", _domain),
    Section("fidelity", "Pixel metrics (Ungría Hirte et al., Table 1)", "pixel-metrics", _table1_section),
    Section("fidelity", "Grey levels of the samples", "grey-levels", _intensity),
    Section("fidelity", "Samples", "samples", _samples),
    Section("fidelity", "Reconstructions", "reconstructions", _reconstructions),
]
