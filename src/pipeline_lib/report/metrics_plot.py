"""The summary's plot: every key metric as one small panel, each model's runs (one dot per seed) with
their mean ± std, the real test slices' value and any floor or ceiling as lines, so the spread
behind each number of the summary table is visible at a glance."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from pipeline_lib.report.html import figure_png, pyplot

#: Panels per row of the figure.
_PANELS_PER_ROW = 4


@dataclass(frozen=True)
class MetricPanel:
    """One metric: ``values`` maps each model to its runs' values as the table shows them (scaled)."""

    heading: str
    values: Mapping[str, Sequence[float]]
    reference: float | None = None
    bound: float | None = None
    bound_label: str = ""
    marked: str | None = None  # the model the summary marks best (★)
    level: Sequence[str] = field(default_factory=tuple)  # the models marked ≈


def plot_metric_spreads(panels: Sequence[MetricPanel], models: Sequence[str]) -> bytes:
    """PNG bytes: one panel per metric, the models in ``models``' order along x."""
    plt = pyplot()
    columns = min(_PANELS_PER_ROW, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    width = max(0.45 * len(models) + 1.2, 2.6)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, 2.5 * rows + 0.4), dpi=80, squeeze=False)
    lines = {}
    for ax, panel in zip(axes.flat, panels):
        _draw_panel(ax, panel, models, lines)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if lines:
        fig.legend(list(lines.values()), list(lines), loc="lower center", ncol=len(lines), fontsize="small",
                   frameon=False)
    fig.tight_layout(rect=(0, 0.06 if lines else 0, 1, 1))
    return figure_png(fig, dpi=80)


def _draw_panel(ax, panel: MetricPanel, models: Sequence[str], lines: dict) -> None:
    for x, model in enumerate(models):
        values = [v for v in panel.values.get(model, ()) if v is not None and math.isfinite(v)]
        if not values:
            continue
        # Runs side by side around the model's position, so equal values stay visible.
        offsets = [0.0] if len(values) == 1 else [-0.15 + 0.3 * i / (len(values) - 1) for i in range(len(values))]
        lines.setdefault("one run (seed)", ax.scatter([x + o for o in offsets], values, s=9, color="0.55",
                                                      zorder=2))
        mean = sum(values) / len(values)
        std = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0)
        colour = "tab:green" if model == panel.marked else ("tab:olive" if model in panel.level else "tab:blue")
        ax.errorbar([x + 0.3], [mean], yerr=[std], fmt="o", color=colour, markersize=4, capsize=3, linewidth=1.2,
                    zorder=3)
        lines.setdefault("mean ± std over seeds", _mean_handle())
    if panel.reference is not None and math.isfinite(panel.reference):
        lines.setdefault("real test slices", ax.axhline(panel.reference, color="tab:red", linestyle="--",
                                                         linewidth=0.9))
    if panel.bound is not None and math.isfinite(panel.bound):
        label = panel.bound_label or "bound"
        lines.setdefault(label, ax.axhline(panel.bound, color="0.3", linestyle=":", linewidth=1.0))
    ax.set_title(panel.heading, fontsize="medium")
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=30 if len(models) > 2 else 0, ha="right" if len(models) > 2 else "center",
                       fontsize="small")
    ax.set_xlim(-0.6, len(models) - 0.2)
    ax.tick_params(axis="y", labelsize="small")
    ax.grid(axis="y", color="0.9", linewidth=0.6)


def _mean_handle():
    """The legend's mean ± std entry, in the colour of an unmarked model (a marked one is green)."""
    from matplotlib.lines import Line2D

    return Line2D([], [], color="tab:blue", marker="o", markersize=4, linewidth=1.2)
