"""One self-contained HTML report of a pipeline run, built to answer "which model is best, and how
sure are we".

The page opens with the answer: a summary table (model × key metrics, direction arrows, the best
per column marked only where the seeds separate it, runs and spreads over training seeds), a plot of
every run's values and one sentence that the numbers support. A table of contents follows, then the
sections grouped by the question they answer (fidelity, diversity, memorization, usefulness, human
reading, quality control), one warning per kind, and a provenance footer (date, commit,
configuration, package versions, device).

The page is :data:`SECTIONS`, a list of :class:`Section` entries (group, title, anchor, render
function); a new block is one more entry whose render function reads :class:`ReportData`, the
typed, loaded form of :class:`ReportInputs`. Everything is inline (CSS in a <style> element,
images as base64 PNG data URIs, compacted to 8-bit grey where they are grey) so the file can be
mailed or archived alone and opens offline; it holds no script and no external reference. All
text from inputs goes through ``html.escape``. Numeric cells carry their exact value in a
``data-value`` attribute (``repr(float)``, the mean over runs) and the spread in ``data-std`` so
tests and tools can read the numbers back without parsing the rounded display text.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline_lib.core import io
from pipeline_lib.core.errors import InputError
from pipeline_lib.core.figures import save_grid, save_pairs
from pipeline_lib.core.io import read_json, read_tsv
from pipeline_lib.core.published import PublishedTable, load_published, published_path
from pipeline_lib.core.qc import FLAGGED, OK, outputs_with_status, worst_first
from pipeline_lib.core.settings import PreprocessingSettings, RegistrationSettings, SamplingSettings, read_settings
from pipeline_lib.core.slices import grey_images, image_channels, load_split, load_table
from pipeline_lib.evaluation.seeds import (ColumnMarks, Spread, mark_column, separated, shared_bound, spread,
                                          spread_of)
from pipeline_lib.report.distribution_section import render_distribution_metrics_html
from pipeline_lib.report.diversity_section import render_diversity_html
from pipeline_lib.report.evaluation_section import (conditioning_html, domain_html, memorization_html, utility_ceiling,
                                                    utility_gain, utility_html)
from pipeline_lib.report.failures_section import failed_run_rows, failed_runs_html, split_failed_runs
from pipeline_lib.report.html import (count_text as _count, escape as _esc, finite_float as _as_float,
                                      float_or_nan, format_mean_std, format_number, img_tag, loss_axes_png, pyplot,
                                      section, spread_cell, zoomable_img)
from pipeline_lib.report.metrics_plot import MetricPanel, plot_metric_spreads
from pipeline_lib.report.paper_section import DatasetView, ModelView, paper_values
from pipeline_lib.report.published_section import render_published_tables
from pipeline_lib.report.reader_section import render_reader_results_html
from pipeline_lib.report.training_section import read_training_files, render_training_html

_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 84em; padding: 0 1em; color: #222; }
h1, h2, h3, h4 { color: #123; }
h2.group { border-bottom: 2px solid #9ab; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em 0; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #eef; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
div.wide { overflow-x: auto; }
#summary-table { font-size: 0.9em; }
#summary-table th, #summary-table td { padding: 0.25em 0.45em; }
td.na { color: #a00; font-style: italic; }
td.best { font-weight: bold; background: #e3f6e3; }
td.tie { background: #f1faf1; }
tr.best-row td[data-reason] { font-size: 0.8em; color: #555; }
tr.failed td, tr.incomplete td { background: #fee; }
tr.flagged td { background: #fff4d6; }
tr.reference td, tr.reference th { color: #555; font-style: italic; }
caption { caption-side: bottom; text-align: left; font-size: 0.9em; color: #444; padding-top: 0.3em; }
.banner { border: 3px solid #c00; background: #fee; padding: 0.8em 1em; font-weight: bold; margin-bottom: 1.5em; }
.conclusion { font-size: 1.15em; border-left: 5px solid #2a7; padding: 0.4em 0.8em; background: #f3fbf6; }
.warnings { border: 2px solid #d90; background: #fff8e6; padding: 0.3em 1em; margin: 1em 0; }
nav.toc { columns: 2; font-size: 0.95em; background: #f6f7fb; padding: 0.5em 1em; }
nav.toc ul { margin: 0; padding-left: 1.2em; }
img.thumb { max-width: 12em; height: auto; }
img.grid { max-width: 100%; height: auto; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.9em; }
label.zoom { cursor: zoom-in; display: inline-block; }
label.zoom input { display: none; }
label.zoom input:checked + img { position: fixed; inset: 0; margin: auto; max-width: 96vw; max-height: 96vh;
  width: auto; height: auto; z-index: 10; cursor: zoom-out; box-shadow: 0 0 0 100vmax rgba(0, 0, 0, 0.75);
  image-rendering: pixelated; }
div.sample-grids { display: flex; flex-wrap: wrap; gap: 0.5em; align-items: flex-start; }
details.other-seeds summary { cursor: pointer; font-size: 0.9em; }
div.published-beside { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
table.published-table[data-kind="published"] { background: #f7f7f2; }
footer { margin-top: 3em; border-top: 2px solid #9ab; font-size: 0.9em; color: #333; }
footer pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; font-size: 0.85em; }
"""

_COHORT_LABELS = {
    "subjects_found": "Subjects found",
    "input_entries_ignored": "Input entries ignored (kind and reason in the ingest QC table)",
    "subjects_ingested": "Subjects ingested",
    "subjects_registered": "Subjects registered",
    "subjects_flagged": "Subjects flagged (registration QC)",
    "subjects_failed": "Subjects failed",
    "slices_train": "Slices (train)",
    "slices_train_augmented": "Augmented training images (offline, 3-D)",
    "slices_test": "Slices (test)",
    "image_size": "Image size (pixels)",
    "channels": "Channels (stacked sequences)",
}

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

SYNTHETIC_BANNER = (
    "This cohort consists of synthetic phantoms made by deforming the MNI152 template. "
    "All variation between subjects is simulated, so this report supports no claim "
    "about model quality; it only shows that every stage of the pipeline ran."
)

#: The questions the sections answer, in page order: (group id, heading).
GROUPS = (
    ("paper", "The paper beside this run: published, on the authors' data"),
    ("fidelity", "Fidelity: do the samples look like real slices?"),
    ("diversity", "Diversity: do the samples cover the variety of real slices?"),
    ("memorization", "Memorization: do the models copy training patients?"),
    ("usefulness", "Usefulness: do the samples help a downstream task?"),
    ("reading", "Human reading: can readers tell synthetic from real?"),
    ("qc", "Quality control: inputs, registration and training"),
)


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ModelOutputs:
    """What the report reads of one training run (a model with one seed): training, sampling and
    every evaluation stage."""

    summary: Path
    losses: Path
    grid: Path
    reconstructions: Path
    metrics: Path
    distribution: Path
    domain: Path
    memorization: Path
    gallery: Path
    conditioning: Path
    utility: Path
    validation: Path
    snapshots: Path
    diversity: Path


@dataclass(frozen=True)
class DatasetOutputs:
    """What the report reads of one slice dataset: its slices and its real reference outputs."""

    table: Path
    images: Path
    original: Path
    distribution_original: Path
    domain_network: Path
    domain_original: Path
    diversity_original: Path
    reader_scores: Path | None = None


@dataclass(frozen=True)
class ReportInputs:
    """Every file the report reads, by name; ``models`` maps each model (in the report's order) to
    its runs, seed → that run's files; ``datasets`` each slice dataset's files, and
    ``model_datasets`` the dataset each model trains on (default: the first dataset); ``reader_responses``
    and ``reader_kits`` the reader study's folders, named on the page (neither is read)."""

    subjects: Path
    ingest_qc: Path
    registration_qc: Path
    registered: Sequence[Path]
    datasets: Mapping[str, DatasetOutputs]
    models: Mapping[str, Mapping[int, ModelOutputs]]
    model_datasets: Mapping[str, str] = field(default_factory=dict)
    #: dataset → the folder its readers' answer files go into, and the folder of its reader kit.
    reader_responses: Mapping[str, str] = field(default_factory=dict)
    reader_kits: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """One training run's records, read from its files."""

    seed: int
    files: ModelOutputs
    summary: dict
    metrics: dict
    distribution: dict
    domain: dict
    memorization: dict
    conditioning: dict
    utility: dict
    diversity: dict

    @property
    def incomplete(self) -> bool:
        return bool(self.summary.get("incomplete"))

    @classmethod
    def read(cls, seed: int, files: ModelOutputs) -> "Run":
        return cls(seed=int(seed), files=files, summary=read_json(files.summary), metrics=read_json(files.metrics),
                   distribution=read_json(files.distribution), domain=read_json(files.domain),
                   memorization=read_json(files.memorization), conditioning=read_json(files.conditioning),
                   utility=read_json(files.utility), diversity=read_json(files.diversity))


@dataclass
class ReportData:
    """Everything a section renders from: the loaded inputs of :class:`ReportInputs`."""

    runs: dict[str, list[Run]]
    cohort: dict = field(default_factory=dict)
    ingest_qc: pd.DataFrame | None = None
    registration_qc: pd.DataFrame | None = None
    overlays: dict[str, Path] = field(default_factory=dict)
    registration_caption: str = ""
    original: dict = field(default_factory=dict)
    distribution_original: dict | None = None
    domain_network: dict | None = None
    domain_original: dict | None = None
    diversity_original: dict | None = None
    reader_scores: Path | None = None
    reconstruction_grids: dict[str, Path] = field(default_factory=dict)
    #: A grid of real test slices, shown beside the sample grids (drawn by the report job).
    real_grid: Path | None = None
    #: Where the readers' answer files go (reader_study.responses_dir, per dataset with several kits)
    #: and where the kit to send them is.
    reader_responses: str | None = None
    reader_kit: str | None = None
    synthetic_cohort: bool = False
    title: str = "Brain MRI generative models"
    provenance: dict | None = None
    #: With several slice datasets: each dataset's own data (its models' runs, its reference rows,
    #: slice counts and reader scores); the page then shows one block per dataset.
    datasets: dict[str, "ReportData"] = field(default_factory=dict)
    #: ``report.published``: the paper's tables (core/published.py), shown beside this run's values.
    published: dict[str, PublishedTable] | None = None
    #: The values of the slices' ``sequence`` column (empty without one).
    sequences: tuple[str, ...] = ()
    #: Runs that failed on their last attempt (report/failures_section.py): model, seed, stage, reason.
    failed_runs: list[dict] = field(default_factory=list)

    @property
    def grouped(self) -> bool:
        return len(self.datasets) > 1

    def records(self, kind: str) -> dict[str, list[dict]]:
        """model → the ``kind`` record (``metrics``, ``distribution``, …) of each of its runs."""
        return {model: [getattr(run, kind) for run in runs] for model, runs in self.runs.items()}

    def first_runs(self) -> dict[str, Run]:
        """The first seed's run of every model: what the page shows images of."""
        return {model: runs[0] for model, runs in self.runs.items() if runs}


class Notes:
    """The page's warnings, one per kind, each listing what it applies to."""

    def __init__(self) -> None:
        self._kinds: dict[str, tuple[str, list[str]]] = {}

    def add(self, kind: str, message: str, item: str = "") -> None:
        _, items = self._kinds.setdefault(kind, (message, []))
        if item and item not in items:
            items.append(item)

    def __len__(self) -> int:
        return len(self._kinds)

    def html(self) -> str:
        if not self._kinds:
            return ""
        rows = []
        for kind, (message, items) in self._kinds.items():
            applies = f" Applies to: {', '.join(items)}." if items else ""
            rows.append(f'<li data-kind="{_esc(kind)}"><b>{_esc(kind[:1].upper() + kind[1:])}</b>: {_esc(message)}{_esc(applies)}</li>')
        return f'<div class="warnings" id="warnings"><p>⚠ Warnings</p><ul>{"".join(rows)}</ul></div>'


# ---------------------------------------------------------------- the summary


@dataclass(frozen=True)
class KeyMetric:
    """A column of the summary table: one number per run, and which direction is better."""

    key: str
    heading: str
    lower_is_better: bool
    value: Callable[[Run], Any]
    percent: bool = False
    scale: float = 1.0
    reference: Callable[["ReportData"], Any] | None = None  # the real test slices' value
    #: Each run's floor (lower is better) or ceiling: the level past which a value means nothing better.
    bound: Callable[[Run], Any] | None = None
    bound_name: str = "bound"


def _at(record: Mapping, *path: str) -> Any:
    node: Any = record
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


KEY_METRICS = (
    KeyMetric("fid", "FID", True, lambda r: _at(r.distribution, "fid", "mean"),
              reference=lambda d: _at(d.distribution_original or {}, "fid", "mean")),
    KeyMetric("kid", "KID × 10³", True, lambda r: _at(r.distribution, "kid", "mean"), scale=1e3,
              reference=lambda d: _at(d.distribution_original or {}, "kid", "mean")),
    KeyMetric("precision", "Precision", False, lambda r: _at(r.distribution, "prdc", "precision"),
              reference=lambda d: _at(d.distribution_original or {}, "prdc", "precision")),
    KeyMetric("recall", "Recall", False, lambda r: _at(r.distribution, "prdc", "recall"),
              reference=lambda d: _at(d.distribution_original or {}, "prdc", "recall")),
    KeyMetric("domain_fd", "Domain FD", True, lambda r: r.domain.get("domain_fd"),
              reference=lambda d: (d.domain_original or {}).get("domain_fd")),
    # The audit's threshold is the percentile of real test slices' distances, so a model that does not
    # copy scores about that share; fewer likely copies than that is no better.
    KeyMetric("likely_copies", "Likely copies", True, lambda r: _at(r.memorization, "pixel", "fraction_likely_copies"),
              percent=True, bound=lambda r: _percent_fraction(r.memorization.get("percentile")),
              bound_name="no-copy level"),
    # Accuracy cannot pass 1, so no model can gain more than 1 − the real-only accuracy (0 when the
    # real-only classifier is already perfect: nothing to gain).
    KeyMetric("utility_gain", "Utility gain", False, lambda r: utility_gain(r.utility),
              bound=lambda r: utility_ceiling(r.utility), bound_name="ceiling"),
)


def _percent_fraction(percent: Any) -> float | None:
    number = _as_float(percent)
    return None if number is None else number / 100.0


def column_marks(data: "ReportData", spreads: Mapping[str, Mapping[str, Spread]]) -> dict[str, ColumnMarks]:
    """metric key → which of its cells the summary marks (★ best, ≈ not separated from the lead), by
    :func:`pipeline_lib.evaluation.seeds.mark_column` with the bound all of the metric's runs share."""
    marks = {}
    for m in KEY_METRICS:
        bound = shared_bound(m.bound(run) for runs in data.runs.values() for run in runs) if m.bound else None
        marks[m.key] = mark_column(spreads[m.key], m.lower_is_better, bound, m.bound_name)
    return marks

#: The metric the one-sentence conclusion is about (Ballesteros Ramirez's and most papers' headline).
HEADLINE = "fid"


def key_metric_spreads(data: ReportData) -> dict[str, dict[str, Spread]]:
    """metric key → model → spread over the model's runs."""
    return {m.key: {model: spread(m.value(run) for run in runs) for model, runs in data.runs.items()}
            for m in KEY_METRICS}


def conclusion(data: ReportData, spreads: Mapping[str, Mapping[str, Spread]]) -> str:
    """One sentence on the headline metric that the numbers support: which model is best and whether
    its lead is larger than the spread over seeds (else that the seeds do not separate the two; no
    significance test is claimed)."""
    metric = next(m for m in KEY_METRICS if m.key == HEADLINE)
    ranked = sorted(((s.mean, model) for model, s in spreads[HEADLINE].items() if s.mean is not None),
                    reverse=not metric.lower_is_better)
    incomplete = [model for model, runs in data.runs.items() if any(r.incomplete for r in runs)]
    caveat = (f" (⚠ {', '.join(incomplete)} stopped by the time cap before its budget, so its numbers depend on "
              "the machine)") if incomplete else ""
    if not ranked:
        return f"No model has a {metric.heading}, so no model can be called best{caveat}."
    if len(ranked) == 1:
        model = ranked[0][1]
        return (f"Only {model} has a {metric.heading} ({_spread_text(spreads[HEADLINE][model])}), so there is "
                f"nothing to compare it with{caveat}.")
    (_, first), (_, second) = ranked[0], ranked[1]
    a, b = spreads[HEADLINE][first], spreads[HEADLINE][second]
    direction = "lowest" if metric.lower_is_better else "highest"
    if a.n < 2 or b.n < 2:
        return (f"{first} has the {direction} {metric.heading} ({_spread_text(a)}) ahead of {second} "
                f"({_spread_text(b)}), but with a single training run the spread over seeds is unknown, so "
                f"this does not show that {first} is better; set training.seeds to several seeds{caveat}.")
    if separated(a, b):
        return (f"{first} has the {direction} {metric.heading} ({_spread_text(a)}), ahead of the next model, "
                f"{second} ({_spread_text(b)}), by more than the spread over seeds{caveat}.")
    return (f"The seeds do not separate {first} ({_spread_text(a)}) and {second} ({_spread_text(b)}) in "
            f"{metric.heading}: their ranges of mean ± std over seeds overlap, so neither is shown to be better "
            f"(a rough look at the spread, not a significance test){caveat}.")


def _spread_text(s: Spread) -> str:
    runs = f"{s.n} run" + ("s" if s.n != 1 else "")
    return f"{format_mean_std(s.mean, s.std)}, {runs}"


def summary_rows(data: ReportData, spreads: Mapping[str, Mapping[str, Spread]]) -> list[dict[str, Any]]:
    """The summary table as records (also written as summary.tsv beside the page)."""
    rows = []
    for model, runs in data.runs.items():
        row: dict[str, Any] = {"model": model, "family": runs[0].summary.get("family", "") if runs else "",
                               "runs": len(runs), "incomplete_runs": sum(r.incomplete for r in runs),
                               "seeds": " ".join(str(r.seed) for r in runs)}
        for m in KEY_METRICS:
            s = spreads[m.key][model]
            row[f"{m.key}_mean"], row[f"{m.key}_std"], row[f"{m.key}_n"] = s.mean, s.std, s.n
        rows.append(row)
    return rows


#: What ★ and ≈ in the summary mean (the rule is :func:`pipeline_lib.evaluation.seeds.mark_column`).
MARKS_LEGEND = (
    "★ marks a column's best mean only where the seeds separate it: its range mean ± std lies clear of "
    "every other model's (two or more runs each) and it is not at a floor or ceiling every run shares "
    "(Likely copies: a share below the no-copy level counts as that level; Utility gain: the ceiling "
    "is 1 − the real-only accuracy, so a real-only classifier already at 100 % leaves nothing to gain). "
    "Where no model is marked, ≈ marks the models whose range overlaps the leading mean's: these runs "
    "do not separate them. Whether ranges of mean ± std over a few seeds overlap is a rough look at the "
    "spread, not a significance test, and the Best row says why a column marks no model.")


def _best_text(mark: ColumnMarks) -> str:
    return mark.best if mark.best is not None else f"none: {mark.reason}"


def _reason_attr(mark: ColumnMarks) -> str:
    return f' data-reason="{_esc(mark.reason)}"' if mark.reason else ""


def _no_copy_text(data: ReportData) -> str:
    """How the summary caption explains Likely copies, with the audit's percentile when all runs share it."""
    p = shared_bound(run.memorization.get("percentile") for runs in data.runs.values() for run in runs)
    if p is None:
        return ("share of samples closer to a training slice than the audit's percentile of real test slices "
                "(a model that does not copy scores about that percentile)")
    return (f"share of samples closer to a training slice than {100 - p:g} % of real test slices are (a model "
            f"that does not copy scores about {p:g} %)")


def _summary_section(data: ReportData, notes: Notes) -> str:
    spreads = key_metric_spreads(data)
    headline = spreads[HEADLINE]
    order = sorted(data.runs, key=lambda m: (headline[m].mean is None, headline[m].mean or 0.0, m))
    columns = [m for m in KEY_METRICS if any(s.mean is not None for s in spreads[m.key].values())]
    arrow = {True: "↓", False: "↑"}
    head = ("<th>Model</th><th>Runs</th>"
            + "".join(f'<th data-metric="{m.key}">{_esc(m.heading)} {arrow[m.lower_is_better]}</th>' for m in columns))
    marks = column_marks(data, spreads)
    rows = []
    for model in order:
        runs = data.runs[model]
        incomplete = sum(r.incomplete for r in runs)
        run_text = f"{len(runs)}" + (f" ({incomplete} incomplete ⚠)" if incomplete else "")
        family = runs[0].summary.get("family", "") if runs else ""
        cells = [f'<th title="family {_esc(family)}">{_esc(model)}</th>',
                 f'<td class="num" data-value="{len(runs)}">{_esc(run_text)}</td>']
        for m in columns:
            s, mark = spreads[m.key][model], marks[m.key]
            if model == mark.best:
                cells.append(spread_cell(s, key=m.key, scale=m.scale, percent=m.percent, mark=" ★", css="num best"))
            elif model in mark.level:
                cells.append(spread_cell(s, key=m.key, scale=m.scale, percent=m.percent, mark=" ≈", css="num tie"))
            else:
                cells.append(spread_cell(s, key=m.key, scale=m.scale, percent=m.percent))
        css = ' class="incomplete"' if incomplete else ""
        rows.append(f'<tr data-model="{_esc(model)}"{css}>{"".join(cells)}</tr>')
    best_cells = "".join(f'<td data-metric="{m.key}"{_reason_attr(marks[m.key])}>{_esc(_best_text(marks[m.key]))}</td>'
                         for m in columns)
    rows.append(f'<tr class="best-row"><th>Best</th><td></td>{best_cells}</tr>')
    reference = []
    for m in columns:
        value = m.reference(data) if m.reference else None
        reference.append(spread_cell(spread([value]), key=m.key, scale=m.scale, percent=m.percent))
    rows.append(f'<tr class="reference" data-model="original"><th>Real test slices</th><td></td>'
                f'{"".join(reference)}</tr>')
    seeds = sorted({len(runs) for runs in data.runs.values()})
    caption = (
        "Each cell: mean ± std over the model's training runs (one per seed; the mean alone for a single "
        "run). ↓ lower is better, ↑ higher is better. " + MARKS_LEGEND + " Runs per model: "
        + ", ".join(map(str, seeds)) + ". "
        "FID, KID, precision and recall: Inception features against the real training slices; Domain FD: "
        "Fréchet distance in the domain network's features; Likely copies: " + _no_copy_text(data) + "; "
        "Utility gain: accuracy of a classifier trained on real + synthetic minus real only. The last row "
        "shows what held-out real slices score, as a yardstick. Rows are sorted by FID; hover a model's "
        "name for its family.")
    table = (f'<div class="wide"><table id="summary-table"><caption>{_esc(caption)}</caption><thead><tr>{head}</tr>'
             f"</thead><tbody>{''.join(rows)}</tbody></table></div>")
    if any(r.incomplete for runs in data.runs.values() for r in runs):
        notes.add("incomplete training", "stopped by the safety cap budget.minutes before reaching its steps or "
                  "epochs; its results depend on the machine's speed. Raise the cap and rerun to continue it.",
                  ", ".join(f"{m} (seed {r.seed})" for m, runs in data.runs.items() for r in runs if r.incomplete))
    plot = _metrics_figure(data, columns, order, marks)
    return f'<p class="conclusion" id="conclusion">{_esc(conclusion(data, spreads))}</p>\n{table}\n{plot}'


def _times(value: Any, factor: float) -> float | None:
    number = _as_float(value)
    return None if number is None else number * factor


def _metrics_figure(data: ReportData, columns: Sequence[KeyMetric], order: Sequence[str],
                    marks: Mapping[str, ColumnMarks]) -> str:
    """The summary's columns as a plot: every run's value, mean ± std per model, the real slices' value."""
    if not columns or not order:
        return ""
    panels = []
    for m in columns:
        factor = (100.0 if m.percent else 1.0) * m.scale
        bound = shared_bound(m.bound(run) for runs in data.runs.values() for run in runs) if m.bound else None
        unit = " (%)" if m.percent else ""
        panels.append(MetricPanel(
            heading=f"{m.heading}{unit} {'↓' if m.lower_is_better else '↑'}",
            values={model: [_times(m.value(run), factor) for run in data.runs[model]] for model in order},
            reference=_times(m.reference(data), factor) if m.reference else None,
            bound=_times(bound, factor), bound_label=f"{m.heading}: {m.bound_name}", marked=marks[m.key].best,
            level=marks[m.key].level))
    png = plot_metric_spreads(panels, list(order))
    caption = ("The summary's metrics: one grey dot per training run (seed), the mean ± std over seeds beside "
               "them (green: marked ★, olive: ≈), the real test slices' value dashed and a floor or ceiling "
               "every run shares dotted. Click to enlarge.")
    return (f'<figure class="metrics-plot">{zoomable_img(png, "key metrics per model", "grid")}'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class Section:
    """A block of the page: its group (a :data:`GROUPS` id), heading, anchor and render function."""

    group: str
    title: str
    anchor: str
    render: Callable[[ReportData, Notes], str]
    #: With several datasets, render once per dataset (False: once for the cohort, e.g. ingest QC).
    per_dataset: bool = True
    #: Whether the page has this section at all (None: always), e.g. only with report.published set.
    when: Callable[[ReportData], bool] | None = None

    def shown(self, data: ReportData) -> bool:
        return self.when is None or bool(self.when(data))


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
    return table + _figures(data.reconstruction_grids, "originals and reconstructions")


def _diversity(data: ReportData, notes: Notes) -> str:
    columns = [("recall", "Recall ↑", lambda r: _at(r.distribution, "prdc", "recall"), "distribution"),
               ("coverage", "Coverage ↑", lambda r: _at(r.distribution, "prdc", "coverage"), "distribution"),
               ("domain_recall", "Domain recall ↑", lambda r: r.domain.get("domain_recall"), "domain"),
               ("domain_coverage", "Domain coverage ↑", lambda r: r.domain.get("domain_coverage"), "domain"),
               ("isd", "ISD", lambda r: r.metrics.get("isd"), "metrics"),
               ("min_isd", "Minimum ISD ↑", lambda r: r.metrics.get("min_isd"), "metrics")]
    head = "<th>Model</th><th>Runs</th>" + "".join(f"<th>{_esc(h)}</th>" for _, h, _, _ in columns)
    rows = []
    original = {"distribution": data.distribution_original or {}, "domain": data.domain_original or {},
                "metrics": data.original or {}}
    ref = _ReferenceRun(original)
    rows.append('<tr class="reference" data-model="original"><th>Real test slices</th><td class="num">1</td>'
                + "".join(spread_cell(spread([get(ref)]), key=key) for key, _, get, _ in columns) + "</tr>")
    for model, runs in data.runs.items():
        cells = "".join(spread_cell(spread(get(r) for r in runs), key=key) for key, _, get, _ in columns)
        rows.append(f'<tr data-model="{_esc(model)}"><th>{_esc(model)}</th><td class="num">{len(runs)}</td>{cells}</tr>')
    caption = ("How much of the real variety the samples cover, mean ± std over training seeds. Recall and "
               "coverage (Naeem et al.) on Inception features and on the domain network's features: the "
               "share of real slices whose neighbourhood holds samples. ISD: mean per-pixel squared error "
               "between distinct samples (Ungría Hirte et al.; it should be near the real slices' value, "
               "not maximal); minimum ISD: mean distance of a sample to its nearest other sample (near 0 "
               "means repeated samples, i.e. mode collapse).")
    return (f'<table id="diversity"><caption>{_esc(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


@dataclass(frozen=True)
class _ReferenceRun:
    """The real reference row shaped like a run, so the diversity columns read it the same way."""

    records: Mapping[str, Mapping]

    @property
    def distribution(self):
        return self.records["distribution"]

    @property
    def domain(self):
        return self.records["domain"]

    @property
    def metrics(self):
        return self.records["metrics"]


def _memorization(data: ReportData, notes: Notes) -> str:
    galleries = {model: run.files.gallery for model, run in data.first_runs().items()}
    return memorization_html(data.records("memorization"), galleries)


def _conditioning(data: ReportData, notes: Notes) -> str:
    return conditioning_html(data.records("conditioning"))


def _utility(data: ReportData, notes: Notes) -> str:
    return utility_html(data.records("utility"))


def _reader(data: ReportData, notes: Notes) -> str:
    if data.reader_scores is None:
        return "<p>No reader study.</p>"
    return render_reader_results_html(Path(data.reader_scores), heading=False, responses_dir=data.reader_responses,
                                      kit_dir=data.reader_kit)


def _paper(data: ReportData, notes: Notes) -> str:
    """``report.published``: every table of the paper beside this run's values (paper_section.py)."""
    tables = data.published or {}
    parts = data.datasets if data.grouped else {"": data}
    dataset_of = {model: name for name, part in parts.items() for model in part.runs}
    views = {name: DatasetView(name=name, image_size=part.cohort.get("image_size"), sequences=part.sequences,
                               original=part.original or {}, reader_scores=_reader_scores(part.reader_scores))
             for name, part in parts.items()}
    models = [ModelView(name=model, family=str(runs[0].summary.get("family", "")), dataset=dataset_of.get(model, ""),
                        metrics=[r.metrics for r in runs], distribution=[r.distribution for r in runs])
              for model, runs in data.runs.items() if runs]
    values = paper_values(tables, models, views)
    citation = next(iter(tables.values())).citation if tables else ""
    lead = (f"<p>Each table of <cite>{_esc(citation)}</cite> as published (on the authors' data, left) and, "
            "in the same layout, this run's values (right). The two come from different data, so compare "
            "patterns (which model leads, how far from chance the readers are), not digits.</p>")
    return lead + render_published_tables(tables, values.ours, notes=values.notes, extra_rows=values.extra_rows)


def _reader_scores(path: Path | None) -> dict | None:
    return read_json(path) if path is not None and Path(path).is_file() else None


def _cohort_section(data: ReportData, notes: Notes) -> str:
    return _cohort_table(data.cohort)


def _ingest_section(data: ReportData, notes: Notes) -> str:
    return _frame_table(data.ingest_qc, table_id="ingest-qc")


def _registration_section(data: ReportData, notes: Notes) -> str:
    return _registration_block(data.registration_qc, data.overlays, data.registration_caption)


def _ms_ssim(data: ReportData, notes: Notes) -> str:
    runs = {_run_label(model, run, len(runs)): run.diversity for model, runs in data.runs.items() for run in runs}
    return render_diversity_html(runs, data.diversity_original)


def _training_progress(data: ReportData, notes: Notes) -> str:
    first = data.first_runs()
    summaries, losses, validation, snapshots = read_training_files(
        summaries={m: r.files.summary for m, r in first.items()}, losses={m: r.files.losses for m, r in first.items()},
        validation={m: r.files.validation for m, r in first.items()},
        snapshots={m: r.files.snapshots for m, r in first.items()})
    note = "<p>Each model's first seed; the losses of every run are under Training losses.</p>" \
        if any(len(runs) > 1 for runs in data.runs.values()) else ""
    return note + render_training_html(summaries, losses, validation, snapshots)


def _run_label(model: str, run: Run, n_runs: int) -> str:
    return model if n_runs == 1 else f"{model} (seed {run.seed})"


def _training_section(data: ReportData, notes: Notes) -> str:
    head = ("<th>Model</th><th>Seed</th><th>Family</th><th>Steps trained</th><th>Budget</th><th>Status</th>"
            "<th>Wall time (s)</th><th>Device</th>")
    rows = []
    for model, runs in data.runs.items():
        for run in runs:
            s = run.summary
            status = "incomplete ⚠ (time cap)" if run.incomplete else "complete"
            budget = s.get("budget") or {}
            budget_text = ", ".join(f"{k} {_plain(v)}" for k, v in budget.items())
            css = ' class="incomplete"' if run.incomplete else ""
            rows.append(
                f'<tr data-model="{_esc(model)}" data-seed="{run.seed}"{css}><th>{_esc(model)}</th>'
                f'<td class="num">{run.seed}</td><td>{_esc(s.get("family", ""))}</td>'
                f'<td class="num" data-value="{_esc(repr(float_or_nan(s.get("steps"))))}">'
                f'{_esc(_count(s.get("steps")))} of {_esc(_count(s.get("target_steps", s.get("steps"))))}</td>'
                f"<td>{_esc(budget_text)}</td><td data-status=\"{'incomplete' if run.incomplete else 'complete'}\">"
                f"{_esc(status)}</td><td class=\"num\">{_esc(format_number(s.get('train_seconds')))}</td>"
                f"<td>{_esc(s.get('device', ''))}</td></tr>")
    hparams = []
    for model, runs in data.runs.items():
        if runs:
            hparams.append(f'<tr data-model="{_esc(model)}"><th>{_esc(model)}</th>'
                           f"<td>{_esc(_plain(runs[0].summary.get('hparams', {})))}</td></tr>")
    caption = ("Every training run (one per model and seed). The budget's steps or epochs decide the result; "
               "the minutes value is only a safety cap, and a run it stopped is marked incomplete.")
    return (f'<table id="training-runs"><caption>{_esc(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
            f'<table id="models"><thead><tr><th>Model</th><th>Hyperparameters</th></tr></thead>'
            f"<tbody>{''.join(hparams)}</tbody></table>")


def _losses_section(data: ReportData, notes: Notes) -> str:
    plots = {}
    for model, runs in data.runs.items():
        plots[model] = plot_losses({run.seed: run.files.losses for run in runs}, title=model)
    return _figures(plots, "losses") if plots else "<p>No training losses.</p>"


#: The page, in order. A new block is one more entry here.
SECTIONS: list[Section] = [
    Section("paper", "The paper's tables beside this run's", "published", _paper, per_dataset=False,
            when=lambda data: bool(data.published)),
    Section("fidelity", "FID, KID, precision and density (Inception features)", "distribution", _distribution),
    Section("fidelity", "Domain feature space", "domain-features", _domain),
    Section("fidelity", "Pixel metrics (Ungría Hirte et al., Table 1)", "pixel-metrics", _table1_section),
    Section("fidelity", "Samples", "samples", _samples),
    Section("fidelity", "Reconstructions", "reconstructions", _reconstructions),
    Section("diversity", "Recall, coverage and intra-sample diversity", "diversity-metrics", _diversity),
    Section("diversity", "MS-SSIM between samples and reconstruction similarity", "sample-similarity", _ms_ssim),
    Section("memorization", "Memorization audit", "memorization-audit", _memorization),
    Section("usefulness", "Conditioning accuracy", "conditioning-accuracy", _conditioning),
    Section("usefulness", "Augmentation utility", "augmentation-utility", _utility),
    Section("reading", "Reader study", "reader-study", _reader),
    Section("qc", "Cohort", "cohort-summary", _cohort_section),
    Section("qc", "Ingest QC", "ingest", _ingest_section, per_dataset=False),
    Section("qc", "Registration QC", "registration", _registration_section, per_dataset=False),
    Section("qc", "Training runs", "training", _training_section),
    Section("qc", "Training losses", "losses", _losses_section),
    Section("qc", "Training progress: aids, validation curves, snapshots", "training-progress", _training_progress),
]


# ---------------------------------------------------------------- the page


def build_report(out_html: Path, data: ReportData, sections: Sequence[Section] | None = None,
                 summary_tsv: Path | None = None) -> None:
    """Write the report as one self-contained HTML file (atomically); ``summary_tsv`` also gets the
    summary table as a TSV file. A missing or malformed input raises InputError naming it."""
    sections = [s for s in (SECTIONS if sections is None else sections) if s.shown(data)]
    notes = Notes()
    summary = _by_dataset(data, _summary_section, notes) if data.grouped else _summary_section(data, notes)
    bodies = []
    for group, heading in GROUPS:
        members = [s for s in sections if s.group == group]
        if not members:
            continue
        blocks = [section(s.title, _by_dataset(data, s.render, notes) if data.grouped and s.per_dataset
                          else s.render(data, notes), ident=s.anchor, level=3) for s in members]
        bodies.append(f'<section id="group-{group}"><h2 class="group">{_esc(heading)}</h2>\n' + "\n".join(blocks)
                      + "</section>")
    unknown = sorted({s.group for s in sections} - {g for g, _ in GROUPS})
    if unknown:
        raise ValueError(f"report sections with unknown group(s): {unknown}")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(data.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        f"<h1>{_esc(data.title)}</h1>",
    ]
    if data.synthetic_cohort:
        parts.append(f'<div class="banner" id="synthetic-banner">{_esc(SYNTHETIC_BANNER)}</div>')
    parts.append(f'<section id="summary"><h2>Summary: which model is best, and how sure are we?</h2>\n{summary}'
                 f"\n{notes.html()}</section>")
    parts.append(failed_runs_html(data.failed_runs))
    parts.append(_toc(sections))
    parts += bodies
    parts.append(_footer(data.provenance))
    parts.append("</body></html>")
    io.write_text(out_html, "\n".join(parts) + "\n")
    if summary_tsv is not None:
        if data.grouped:
            rows = [{"dataset": name, **row} for name, part in data.datasets.items()
                    for row in summary_rows(part, key_metric_spreads(part))]
        else:
            rows = summary_rows(data, key_metric_spreads(data))
        io.write_tsv(summary_tsv, pd.DataFrame(rows + failed_run_rows(data.failed_runs)))


def _by_dataset(data: ReportData, render: Callable[[ReportData, Notes], str], notes: Notes) -> str:
    """One block per slice dataset, each rendered from that dataset's data (its models and reference)."""
    blocks = []
    for name, part in data.datasets.items():
        models = ", ".join(part.runs) or "no models"
        blocks.append(f'<div class="dataset-block" data-dataset="{_esc(name)}"><h4 class="dataset">Dataset '
                      f"{_esc(name)} <small>({_esc(models)})</small></h4>\n{render(part, notes)}</div>")
    return "\n".join(blocks)


def _toc(sections: Sequence[Section]) -> str:
    items = ['<li><a href="#summary">Summary</a></li>']
    for group, heading in GROUPS:
        members = [s for s in sections if s.group == group]
        if members:
            links = "".join(f'<li><a href="#{_esc(s.anchor)}">{_esc(s.title)}</a></li>' for s in members)
            items.append(f'<li><a href="#group-{group}">{_esc(heading)}</a><ul>{links}</ul></li>')
    items.append('<li><a href="#provenance">Provenance</a></li>')
    return f'<nav class="toc" id="toc"><b>Contents</b><ul>{"".join(items)}</ul></nav>'


def _footer(prov: Mapping | None) -> str:
    if not prov:
        return '<footer id="provenance"><h2>Provenance</h2><p>Not recorded.</p></footer>'
    import yaml

    packages = ", ".join(f"{name} {version}" for name, version in prov.get("packages", {}).items())
    config = yaml.safe_dump(prov.get("config", {}), sort_keys=False, allow_unicode=True)
    rows = [("Written", prov.get("date")), ("Code (git commit)", prov.get("commit")),
            ("Configuration digest (SHA-256)", prov.get("config_digest")),
            ("Python", prov.get("python")), ("Packages", packages), ("Machine", prov.get("device"))]
    table = "".join(f'<tr><th>{_esc(k)}</th><td data-key="{_esc(k)}">{_esc(v)}</td></tr>' for k, v in rows)
    return (f'<footer id="provenance"><h2>Provenance</h2><table id="provenance-table">{table}</table>'
            f"<details><summary>Configuration (secrets redacted)</summary><pre>{_esc(config)}</pre></details>"
            "</footer>")


# ---------------------------------------------------------------- QC and table blocks


def _cohort_table(cohort: Mapping) -> str:
    ordered = [k for k in _COHORT_LABELS if k in cohort] + [k for k in cohort if k not in _COHORT_LABELS]
    if not ordered:
        return "<p>No cohort summary was given.</p>"
    rows = []
    for key in ordered:
        label = _COHORT_LABELS.get(key, str(key))
        rows.append(f'<tr data-key="{_esc(key)}"><th>{_esc(label)}</th><td>{_esc(_plain(cohort[key]))}</td></tr>')
    return '<table id="cohort">' + "".join(rows) + "</table>"


def _frame_table(frame: pd.DataFrame, table_id: str, extra: Mapping[int, str] | None = None,
                 extra_heading: str | None = None) -> str:
    """Render every column of ``frame``; ``extra`` adds one raw-HTML cell per row index."""
    if frame is None or frame.empty:
        return f'<p id="{_esc(table_id)}">No rows.</p>'
    head = "".join(f"<th>{_esc(str(c))}</th>" for c in frame.columns)
    if extra is not None:
        head += f"<th>{_esc(extra_heading or '')}</th>"
    numeric = {c: pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
               for c in frame.columns}
    rows = []
    for pos in range(len(frame)):
        # Column-wise access keeps each column's dtype (iterrows would upcast ints).
        record = {c: frame[c].iloc[pos] for c in frame.columns}
        status = str(record.get("status", "")).lower()
        css = ' class="failed"' if status in {"failed", "skipped"} else (' class="flagged"' if status == FLAGGED else "")
        cells = "".join(_value_cell(record[c], numeric[c]) for c in frame.columns)
        if extra is not None:
            cells += f"<td>{extra.get(pos, '')}</td>"
        rows.append(f"<tr{css}>{cells}</tr>")
    return f'<table id="{_esc(table_id)}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


#: Up to this many subjects every overlay is embedded; above it only those of flagged (and failed,
#: should one have an overlay) subjects, worst first, within :data:`OVERLAY_EMBED_BYTES`; every
#: other subject's row links to its overlay: 2,000 subjects give a report under 2 MB (tests/test_report.py).
EMBED_EVERY_OVERLAY_UP_TO = 50
OVERLAY_EMBED_BYTES = 500_000
#: The report is results/report/index.html and a subject's overlay results/register/<subject>/overlay.png.
OVERLAY_LINK = "../register/{subject}/overlay.png"


def _registration_block(frame: pd.DataFrame, overlays: Mapping[str, Path], caption: str = "") -> str:
    """Registration QC, worst first, each subject's overlay beside its row (click to enlarge).

    The table is ordered failed, skipped, flagged, ok, then by brain-mask
    overlap (lowest first); every number carries its exact value in ``data-value``. Beyond
    :data:`EMBED_EVERY_OVERLAY_UP_TO` subjects only the worst subjects' overlays are embedded
    (see there) and the others are relative links, the one place the report points outside itself.
    """
    if frame is not None and "status" in frame and "subject" in frame:
        frame = worst_first(frame, "mask_dice")
    subjects = [str(s) for s in frame["subject"]] if frame is not None and "subject" in frame else []
    statuses = ([str(s).lower() for s in frame["status"]] if frame is not None and "status" in frame
                else [""] * len(subjects))
    unmatched = [str(k) for k in overlays if str(k) not in subjects]
    embed_all = len(subjects) + len(unmatched) <= EMBED_EVERY_OVERLAY_UP_TO
    budget = OVERLAY_EMBED_BYTES
    shown: dict[str, str] = {}
    for subject, status in zip(subjects + unmatched, statuses + [""] * len(unmatched)):
        if subject not in overlays:
            continue
        if not embed_all and status in (FLAGGED, "failed") and budget > 0:
            thumb = zoomable_img(overlays[subject], f"overlay {subject}", "thumb")
            if len(thumb) <= budget:  # worst first: a later, better subject is the one linked
                budget -= len(thumb)
                shown[subject] = thumb
                continue
        shown[subject] = (zoomable_img(overlays[subject], f"overlay {subject}", "thumb") if embed_all else
                          f'<a class="overlay-link" href="{_esc(OVERLAY_LINK.format(subject=subject))}">overlay</a>')
    thumbs = {pos: shown[subject] for pos, subject in enumerate(subjects) if subject in shown}
    table = _frame_table(frame, "registration-qc", extra=thumbs,
                         extra_heading="Overlay, yellow: brain mask (click to enlarge)")
    if caption:
        table = table.replace("<thead>", f"<caption>{_esc(caption)}</caption><thead>", 1)
    parts = [table]
    if not embed_all:
        embedded = sum(1 for html in shown.values() if html.startswith("<label"))
        parts.append(f'<p class="overlay-note">{len(subjects) + len(unmatched)} subjects: {embedded} overlays of '
                     f"flagged subjects are shown here (worst first, within {OVERLAY_EMBED_BYTES // 1000} kB); "
                     "every other overlay is a link to results/register/&lt;subject&gt;/overlay.png, which "
                     "opens where the results folder lies beside this report.</p>")
    if unmatched:
        parts.append("\n".join(f"<figure><figcaption>{_esc(k)}</figcaption>{shown[k]}</figure>" for k in unmatched))
    return "\n".join(parts)


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


def _figures(images: Mapping[str, Path | bytes], what: str, css: str = "grid") -> str:
    if not images:
        return f"<p>No {_esc(what)} images.</p>"
    return "\n".join(f"<figure><figcaption>{_esc(str(name))}</figcaption>"
                     f"{img_tag(png, f'{what} {name}', css)}</figure>" for name, png in images.items())


# ---------------------------------------------------------------- losses plot


def plot_losses(csv_paths: Path | Mapping[int, Path], title: str = "") -> bytes:
    """PNG bytes of every loss column of ``losses.csv`` against its ``step`` column; several runs
    (seed → file) share one axis, one line style per seed.

    The y axis is logarithmic when every finite loss value is positive.
    """
    runs = {0: csv_paths} if isinstance(csv_paths, (str, Path)) else dict(csv_paths)
    frames = {seed: _read_losses(Path(path)) for seed, path in runs.items()}
    fig, ax = pyplot().subplots(figsize=(5, 3), dpi=80)
    styles = ["-", "--", ":", "-."]
    finite_values = []
    for i, (seed, frame) in enumerate(frames.items()):
        columns = [c for c in frame.columns if c != "step"]
        for j, column in enumerate(columns):
            label = str(column) if len(frames) == 1 else f"{column} (seed {seed})"
            ax.plot(frame["step"], frame[column], label=label, linewidth=1, linestyle=styles[i % len(styles)],
                    color=f"C{j}")
        values = frame[columns].to_numpy(dtype=float)
        finite_values.append(values[np.isfinite(values)])
    finite = np.concatenate(finite_values) if finite_values else np.array([])
    return loss_axes_png(fig, ax, finite, title, legend_size="x-small")


def _read_losses(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: losses file not found") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read as CSV ({exc})") from exc
    if "step" not in frame.columns:
        raise InputError(f"{path}: no 'step' column (columns: {', '.join(map(str, frame.columns))})")
    if len(frame.columns) < 2:
        raise InputError(f"{path}: no loss columns besides 'step'")
    if frame.empty:
        raise InputError(f"{path}: no rows")
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise InputError(f"{path}: column {column!r} is not numeric")
    return frame


# ---------------------------------------------------------------- helpers


def _value_cell(value: Any, numeric_column: bool) -> str:
    """A table cell: numbers right-aligned with ``data-value``, the rest as escaped text."""
    if isinstance(value, bool) or not numeric_column:
        # In a text column a NaN is pandas' marker for an empty field.
        missing = isinstance(value, float) and math.isnan(value)
        return f"<td>{'' if missing else _esc(_plain(value))}</td>"
    if _is_integer(value):
        return f'<td class="num" data-value="{_esc(repr(float(value)))}">{int(value)}</td>'
    number = _as_float(value)
    css = "num" if number is not None else "num na"
    return f'<td class="{css}" data-value="{_esc(repr(float_or_nan(value)))}">{_esc(format_number(value))}</td>'


def _plain(value: Any) -> str:
    """Display text for a non-metric value (numbers rounded, dicts as k=v lists)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if _is_integer(value):
        return str(int(value))
    if isinstance(value, float) or _is_numpy_number(value):
        return format_number(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " × ".join(_plain(v) for v in value) if all(isinstance(v, int) for v in value) else ", ".join(
            _plain(v) for v in value
        )
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value)


def _scale_text(original: Mapping, models: Mapping[str, Mapping]) -> str:
    scales = {_as_float(d.get("sharpness_scale")) for d in [original, *models.values()] if "sharpness_scale" in d}
    scales.discard(None)
    if not scales:
        return "an unrecorded scale"
    if len(scales) > 1:
        return "differing scales (" + ", ".join(format_number(s) for s in sorted(scales)) + ") — not comparable"
    (scale,) = scales
    return f"{format_number(scale)}" + (" (8-bit scale, as Ungría Hirte et al.'s values imply)" if scale == 255.0 else "")


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (_is_numpy_number(value) and value.dtype.kind in "iu")


def _is_numpy_number(value: Any) -> bool:
    return hasattr(value, "dtype") and getattr(value, "shape", None) == () and value.dtype.kind in "iuf"


# ---------------------------------------------------------------- the report rule


def load_report_data(inputs: ReportInputs, *, registration: RegistrationSettings | Mapping,
                     sampling: SamplingSettings | Mapping, synthetic_cohort: bool, title: str,
                     provenance: Mapping | None, workdir: Path,
                     preprocessing: PreprocessingSettings | Mapping | None = None,
                     published: str | Path | None = None) -> ReportData:
    """Read every input of the report; ``workdir`` receives the reconstruction grids drawn here.
    With several datasets the result holds one :class:`ReportData` per dataset in ``datasets``."""
    registration = read_settings(RegistrationSettings, registration)
    preprocessing = read_settings(PreprocessingSettings, preprocessing)
    sampling = read_settings(SamplingSettings, sampling)
    subjects = read_tsv(inputs.subjects)
    ingest_qc = read_tsv(inputs.ingest_qc)
    registration_qc = read_tsv(inputs.registration_qc)
    cohort = {
        "subjects_found": len(subjects),
        "input_entries_ignored": int((ingest_qc["status"] == "ignored").sum()),
        "subjects_ingested": int((ingest_qc["status"] == "ok").sum()),
        "subjects_registered": int((registration_qc["status"] == OK).sum()),
        "subjects_flagged": int((registration_qc["status"] == FLAGGED).sum()),
        "subjects_failed": int((~registration_qc["status"].isin([OK, FLAGGED])).sum()),
    }
    models, failed_runs = split_failed_runs(inputs.models)
    runs = {model: [Run.read(seed, files) for seed, files in sorted(by_seed.items())]
            for model, by_seed in models.items()}
    names = list(inputs.datasets)
    shared = dict(
        ingest_qc=ingest_qc[["subject", "kind", "status", "reason", "warning"]],
        registration_qc=_registration_view(registration_qc),
        overlays={s: p.parent / "overlay.png"
                  for s, p in outputs_with_status(inputs.registered, "qc.json", (OK, FLAGGED)).items()},
        registration_caption=registration_gate_text(registration),
        synthetic_cohort=synthetic_cohort, title=title, failed_runs=failed_runs,
        provenance=dict(provenance) if provenance is not None else None,
        published=load_published(published_path(published)) if published else None)
    parts = {}
    for name, files in inputs.datasets.items():
        models = [m for m in runs if inputs.model_datasets.get(m, names[0]) == name]
        reader = dict(reader_responses=inputs.reader_responses.get(name), reader_kit=inputs.reader_kits.get(name))
        parts[name] = _dataset_data(files, {m: runs[m] for m in models}, cohort, registration, preprocessing,
                                    sampling, Path(workdir) / name, {**shared, **reader})
    if len(parts) == 1:
        return next(iter(parts.values()))
    first = parts[names[0]]
    return dataclasses.replace(first, runs=runs, datasets=parts,
                               reconstruction_grids={k: v for p in parts.values() for k, v in p.reconstruction_grids.items()})


def _dataset_data(files: DatasetOutputs, runs: dict[str, list[Run]], cohort: Mapping,
                  registration: RegistrationSettings, preprocessing: PreprocessingSettings,
                  sampling: SamplingSettings, workdir: Path, shared: Mapping) -> ReportData:
    """One dataset's part of the report: its slices, reference rows, reader scores and models."""
    table = load_table(Path(files.table))
    images = np.load(files.images, mmap_mode="r")
    height, width = images.shape[-2:]
    channels = image_channels(images, table)
    real = table["augmented"].astype(str) != "1" if "augmented" in table.columns else True
    cohort = {**cohort,
              "slices_train": int(((table["split"] == "train") & real).sum()),
              "slices_test": int((table["split"] == "test").sum()),
              "image_size": int(width) if height == width else f"{int(height)} × {int(width)}",
              "registration": registration_summary(registration, preprocessing)}
    if "augmented" in table.columns and not np.all(real):
        cohort["slices_train_augmented"] = int((~real).sum())
    if channels:
        cohort["channels"] = (f"{', '.join(channels)}: each image stacks these {len(channels)} sequences as channels "
                              "(models generate them together); every metric pools the channels as grey images, "
                              "like Han et al.'s \"Concat\" dataset")
    sequences = tuple(sorted(set(table["sequence"].astype(str)) - {"", "nan"})) if "sequence" in table.columns else ()
    if channels:
        sequences = tuple(channels)
    workdir.mkdir(parents=True, exist_ok=True)
    real_grid = real_slices_grid(Path(files.images), Path(files.table), sampling.seed, workdir / "real_slices.png")
    reconstruction_grids = {}
    first = {m: r[0] for m, r in runs.items() if r and np.load(r[0].files.reconstructions, mmap_mode="r").shape[0]}
    if first:
        test_images, _ = load_split(Path(files.images), Path(files.table), "test",
                                    n=sampling.n_reconstruct, seed=sampling.seed, grey=True)
        for model, run in first.items():
            reconstruction_grids[f"{model} (seed {run.seed})"] = workdir / f"{model}.png"
            save_pairs(test_images, grey_images(np.load(run.files.reconstructions)), workdir / f"{model}.png")
    return ReportData(
        runs=runs, cohort=cohort, **shared,
        original=read_json(files.original),
        distribution_original=read_json(files.distribution_original),
        domain_network=read_json(files.domain_network),
        domain_original=read_json(files.domain_original),
        diversity_original=read_json(files.diversity_original),
        reader_scores=Path(files.reader_scores) if files.reader_scores else None,
        reconstruction_grids=reconstruction_grids, sequences=sequences, real_grid=real_grid)


#: As many real slices as a sample grid shows (core.figures.save_grid's default).
REAL_GRID_IMAGES = 64


def real_slices_grid(images: Path, table: Path, seed: int, out_png: Path) -> Path:
    """A grid of real test slices drawn like the models' sample grids (stacked sequences side by side),
    reading only the slices shown from the memory-mapped stack."""
    real, _ = load_split(images, table, "test", n=REAL_GRID_IMAGES, seed=seed)
    save_grid(real, out_png)
    return out_png


def report_job(out_html: Path, inputs: ReportInputs, *, registration: RegistrationSettings | Mapping,
               sampling: SamplingSettings | Mapping, synthetic_cohort: bool, title: str,
               provenance: Mapping | None = None, summary_tsv: Path | None = None,
               preprocessing: PreprocessingSettings | Mapping | None = None,
               published: str | Path | None = None) -> None:
    """The report rule: gather every stage's outputs into the report."""
    with tempfile.TemporaryDirectory() as tmp:
        data = load_report_data(inputs, registration=registration, sampling=sampling,
                                synthetic_cohort=synthetic_cohort, title=title, provenance=provenance,
                                workdir=Path(tmp), preprocessing=preprocessing, published=published)
        build_report(Path(out_html), data, summary_tsv=summary_tsv)


_REGISTRATION_NUMBERS = ["mask_dice", "scale_x", "scale_y", "scale_z", "max_shear", "correlation_after",
                         "correlation_before", "brain_ml"]


def _registration_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader of the report needs, the QC numbers as numbers."""
    view = frame.reindex(columns=["subject", "status", *_REGISTRATION_NUMBERS, "reason", "input_warning"])
    for column in _REGISTRATION_NUMBERS:
        view[column] = pd.to_numeric(view[column], errors="coerce")
    return view


def registration_summary(registration: RegistrationSettings, preprocessing: PreprocessingSettings) -> str:
    """One line saying how subjects were registered: extraction, what was matched to what, output."""
    template = registration.template or "MNI152 2009c (nilearn, brain-only)"
    extraction = preprocessing.brain_extraction
    if registration.transform == "none":
        how = f"no transform estimated (inputs taken as already in the space of {template})"
    elif registration.match == "brain":
        source = f"brain extracted with {extraction}" if extraction != "none" else "input as given (brain extraction off)"
        how = f"{registration.transform}, brain to brain: {source} to {template}"
    else:
        how = f"{registration.transform}, head to head: whole head to {template}"
    return f"{how}; output {registration.output} on grid {'x'.join(map(str, registration.grid))}"


def registration_gate_text(registration: RegistrationSettings) -> str:
    low, high = registration.scale_range
    fate = ("left out of slicing" if registration.on_poor_fit == "exclude"
            else "sliced like the others (registration.on_poor_fit: keep)")
    return (f"Worst first. A subject is flagged when the Dice of its registered brain mask with the "
            f"template's is below {registration.min_mask_dice:g}, a scale of its affine lies outside "
            f"{low:g}–{high:g}, its shear exceeds {registration.max_shear:g}, the affine mirrors, or its "
            f"correlation with the template inside the template's brain mask is below "
            f"{registration.min_correlation:g}; flagged subjects are {fate}. Scales are those of the "
            f"subject-to-template map along the template's axes. Click an overlay to enlarge it.")


