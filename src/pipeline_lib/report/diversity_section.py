"""The diversity blocks: recall, coverage and intra-sample diversity per model (mean ± std over seeds), and
MS-SSIM between samples with the reconstruction similarity, from the diversity rules' JSON."""

from __future__ import annotations

from typing import Any, Mapping

from pipeline_lib.evaluation.seeds import spread

from pipeline_lib.report.html import count_text, escape, format_number, number_cell, spread_cell
from pipeline_lib.report.inputs import ModelOutputs, ReportData, Run, nested
from pipeline_lib.report.sections import Notes, Section

_RECON = (("ssim", "SSIM"), ("ms_ssim", "MS-SSIM"), ("psnr", "PSNR (dB)"))


def render_diversity_html(models: Mapping[str, Mapping[str, Any]], original: Mapping[str, Any] | None) -> str:
    """The section's body: MS-SSIM between sample pairs per run (and real pairs), then the
    reconstruction similarity of the autoencoding runs."""
    return _ms_ssim_table(models, original) + _reconstruction_table(models)


def _mean_std_cell(key: str, values: Mapping[str, Any]) -> str:
    """``mean ± std`` with the exact mean in ``data-value``, the std in ``data-std``, the key in ``data-metric``."""
    mean, std = values.get(f"{key}_mean"), values.get(f"{key}_std")
    cell = number_cell(mean, f"{format_number(mean)} ± {format_number(std)}", std=std)
    return cell.replace("<td ", f'<td data-metric="{escape(key)}" ', 1)


def _ms_ssim_table(models: Mapping[str, Mapping], original: Mapping | None) -> str:
    rows_in = ({"original": original} if original else {}) | dict(models)
    if not rows_in:
        return "<p>No diversity metrics.</p>"
    head = "<th>Set</th><th>MS-SSIM between pairs (mean ± std)</th><th>Pairs</th><th>Images</th><th>Scales</th>"
    rows, kernels = [], set()
    for name, d in rows_in.items():
        kernels.add(d.get("kernel_size"))
        label = "Original (real test slices)" if name == "original" else name
        cells = [_mean_std_cell("ms_ssim", d), f'<td class="num">{escape(count_text(d.get("n_pairs")))}</td>',
                 f'<td class="num">{escape(count_text(d.get("n_images")))}</td>',
                 f'<td class="num">{escape(count_text(d.get("ms_ssim_scales")))}</td>']
        rows.append(f'<tr data-model="{escape(name)}"><th>{escape(label)}</th>{"".join(cells)}</tr>')
    kernel = ", ".join(str(k) for k in sorted(k for k in kernels if k is not None)) or "n/a"
    caption = ("Multi-scale structural similarity (MONAI's MultiScaleSSIMMetric, data range 1, Gaussian window "
               f"of {kernel} px) between random pairs of distinct images of each set: lower = more diverse. "
               "A model far above the Original row repeats itself (mode collapse); far below, it makes "
               "unstructured variation. Ungría Hirte et al.'s ISD (Table 1 above) measures diversity in "
               "squared pixel differences instead.")
    return (f'<table id="ms-ssim"><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _reconstruction_table(models: Mapping[str, Mapping]) -> str:
    with_recon = {m: d for m, d in models.items() if "recon_ssim_mean" in d}
    if not with_recon:
        return "<p>No model reconstructs images.</p>"
    head = "<th>Model</th>" + "".join(f"<th>{escape(h)} (mean ± std)</th>" for _, h in _RECON) + "<th>n</th>"
    rows = []
    for name, d in with_recon.items():
        cells = [_mean_std_cell(f"recon_{key}", d) for key, _ in _RECON]
        cells.append(f'<td class="num">{escape(count_text(d.get("n_reconstructions")))}</td>')
        rows.append(f'<tr data-model="{escape(name)}"><th>{escape(name)}</th>{"".join(cells)}</tr>')
    caption = ("Similarity of reconstructed test slices to their originals (MONAI's SSIMMetric, "
               "MultiScaleSSIMMetric and PSNRMetric with peak 1): higher is better.")
    return (f'<table id="reconstruction-similarity"><caption>{escape(caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


# ---------------------------------------------------------------- on the page


def _diversity(data: ReportData, notes: Notes) -> str:
    columns = [("recall", "Recall ↑", lambda r: nested(r.distribution, "prdc", "recall"), "distribution"),
               ("coverage", "Coverage ↑", lambda r: nested(r.distribution, "prdc", "coverage"), "distribution"),
               ("domain_recall", "Domain recall ↑", lambda r: r.domain.get("domain_recall"), "domain"),
               ("domain_coverage", "Domain coverage ↑", lambda r: r.domain.get("domain_coverage"), "domain"),
               ("isd", "ISD", lambda r: r.metrics.get("isd"), "metrics"),
               ("min_isd", "Minimum ISD ↑", lambda r: r.metrics.get("min_isd"), "metrics")]
    head = "<th>Model</th><th>Runs</th>" + "".join(f"<th>{escape(h)}</th>" for _, h, _, _ in columns)
    rows = []
    original = {"distribution": data.distribution_original or {}, "domain": data.domain_original or {},
                "metrics": data.original or {}}
    ref = Run(seed=0, files=ModelOutputs(), records=original)  # read by the same getters as a run
    rows.append('<tr class="reference" data-model="original"><th>Real test slices</th><td class="num">1</td>'
                + "".join(spread_cell(spread([get(ref)]), key=key) for key, _, get, _ in columns) + "</tr>")
    for model, runs in data.runs.items():
        cells = "".join(spread_cell(spread(get(r) for r in runs), key=key) for key, _, get, _ in columns)
        rows.append(f'<tr data-model="{escape(model)}"><th>{escape(model)}</th><td class="num">{len(runs)}</td>{cells}</tr>')
    caption = ("How much of the real variety the samples cover, mean ± std over training seeds. Recall and "
               "coverage (Naeem et al.) on Inception features and on the domain network's features: the "
               "share of real slices whose neighbourhood holds samples. ISD: mean per-pixel squared error "
               "between distinct samples (Ungría Hirte et al.; it should be near the real slices' value, "
               "not maximal); minimum ISD: mean distance of a sample to its nearest other sample (near 0 "
               "means repeated samples, i.e. mode collapse).")
    return (f'<table id="diversity"><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _ms_ssim(data: ReportData, notes: Notes) -> str:
    runs = {_run_label(model, run, len(runs)): run.diversity for model, runs in data.runs.items() for run in runs}
    return render_diversity_html(runs, data.diversity_original)


def _run_label(model: str, run: Run, n_runs: int) -> str:
    return model if n_runs == 1 else f"{model} (seed {run.seed})"


SECTIONS = [
    Section("diversity", "Recall, coverage and intra-sample diversity", "diversity-metrics", _diversity),
    Section("diversity", "MS-SSIM between samples and reconstruction similarity", "sample-similarity", _ms_ssim),
]
