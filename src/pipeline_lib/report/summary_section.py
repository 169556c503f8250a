"""The page's opening: the summary table (model × key metrics, the best per column marked only
where the seeds separate it, runs and spreads over training seeds), a plot of every run's values and
one sentence, the conclusion, that the numbers support. Also written as ``summary.tsv``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from pipeline_lib.evaluation.seeds import ColumnMarks, Spread, mark_column, separated, shared_bound, spread
from pipeline_lib.report.evaluation_section import utility_ceiling, utility_gain
from pipeline_lib.report.html import (escape as _esc, finite_float as _as_float, format_mean_std, spread_cell,
                                      zoomable_img)
from pipeline_lib.report.inputs import ReportData, Run, nested
from pipeline_lib.report.metrics_plot import MetricPanel, plot_metric_spreads
from pipeline_lib.report.sections import Notes


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



KEY_METRICS = (
    KeyMetric("fid", "FID", True, lambda r: nested(r.distribution, "fid", "mean"),
              reference=lambda d: nested(d.distribution_original or {}, "fid", "mean")),
    KeyMetric("kid", "KID × 10³", True, lambda r: nested(r.distribution, "kid", "mean"), scale=1e3,
              reference=lambda d: nested(d.distribution_original or {}, "kid", "mean")),
    KeyMetric("precision", "Precision", False, lambda r: nested(r.distribution, "prdc", "precision"),
              reference=lambda d: nested(d.distribution_original or {}, "prdc", "precision")),
    KeyMetric("recall", "Recall", False, lambda r: nested(r.distribution, "prdc", "recall"),
              reference=lambda d: nested(d.distribution_original or {}, "prdc", "recall")),
    KeyMetric("domain_fd", "Domain FD", True, lambda r: r.domain.get("domain_fd"),
              reference=lambda d: (d.domain_original or {}).get("domain_fd")),
    # The audit's threshold is the percentile of real test slices' distances, so a model that does not
    # copy scores about that share; fewer likely copies than that is no better.
    KeyMetric("likely_copies", "Likely copies", True, lambda r: nested(r.memorization, "pixel", "fraction_likely_copies"),
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


def summary_html(data: ReportData, notes: Notes) -> str:
    """The summary block: the conclusion, the table and the plot (warnings go to ``notes``)."""
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

