"""The report's training blocks: every training run (steps, budget, status, hyperparameters), the loss
plot of every run, and "Training progress": training aids, validation curves and snapshot strips.

Reads what the train rule wrote for every model: ``summary.json`` (which aids
the run used), ``losses.csv`` and ``validation.csv`` (train and test curves of
the same loss terms, as Ballesteros Ramirez's Figure 3 plots them) and
``snapshots.npz`` (samples drawn with fixed latents every K steps, one row per
snapshot). A model without a validation loss or snapshots says so in its row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.figures import tile
from pipeline_lib.core.io import read_json
from pipeline_lib.report.html import (count_text as _count, escape, figure, figure_png, figures,
                                      float_or_nan, format_number, img_tag, loss_axes_png, number_cell, plain_text,
                                      pyplot, text_cell)
from pipeline_lib.report.inputs import ReportData
from pipeline_lib.report.sections import Notes, Section

#: At most this many points of a training curve are drawn (a moving average over the rest).
_CURVE_POINTS = 200


def render_training_html(summaries: Mapping[str, Mapping], losses: Mapping[str, pd.DataFrame],
                         validation: Mapping[str, pd.DataFrame], snapshots: Mapping[str, Mapping[str, np.ndarray]]
                         ) -> str:
    """The section's body from already-read inputs (model name -> summary, losses table, validation
    table, snapshot arrays ``steps``, ``kinds``, ``images``)."""
    parts = [_aids_table(summaries),
             "<h4>Validation curves</h4>", _validation_figures(losses, validation),
             "<h4>Snapshots during training</h4>", _snapshot_figures(snapshots)]
    return "\n".join(parts)


def read_training_files(*, summaries: Mapping[str, Path], losses: Mapping[str, Path],
                        validation: Mapping[str, Path], snapshots: Mapping[str, Path]) -> tuple[dict, ...]:
    """The train rule's files as :func:`render_training_html` takes them (errors name the file)."""
    return ({m: read_json(p) for m, p in summaries.items()},
            {m: _read_csv(p) for m, p in losses.items()},
            {m: _read_csv(p) for m, p in validation.items()},
            {m: _read_snapshots(p) for m, p in snapshots.items()})


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read as CSV ({exc})") from exc
    if "step" not in frame.columns:
        raise InputError(f"{path}: no 'step' column")
    return frame


def _read_snapshots(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in ("steps", "kinds", "images")}
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: cannot read as a snapshots file ({exc})") from exc
    if len(arrays["steps"]) and arrays["images"].ndim != 4:
        raise InputError(f"{path}: images must be (snapshots, n, H, W), got {arrays['images'].shape}")
    return arrays


# ----------------------------------------------------------------- aids


def _aids_table(summaries: Mapping[str, Mapping]) -> str:
    head = ("<th>Model</th><th>Steps</th><th>EMA decay</th><th>Samples drawn with</th><th>LR schedule</th>"
            "<th>Warm-up steps</th><th>Validation every</th><th>Snapshot every</th><th>Augmentation</th>")
    rows = []
    for name, s in summaries.items():
        aids: Mapping[str, Any] = s.get("training_aids") or {}
        ema = aids.get("ema_decay")
        cells = [number_cell(s.get("steps"), str(s.get("steps", "n/a"))),
                 number_cell(ema, "off" if ema is None else f"{ema:g}"),
                 text_cell(aids.get("sampled_with", "trained weights")),
                 text_cell(aids.get("lr_schedule", "constant")),
                 number_cell(aids.get("lr_warmup_steps", 0), str(aids.get("lr_warmup_steps", 0))),
                 text_cell(aids.get("validate_every") or "off"),
                 text_cell(aids.get("snapshot_every") or "off"),
                 text_cell(_augment_text(aids.get("augment")))]
        rows.append(f'<tr data-model="{escape(name)}"><th>{escape(name)}</th>{"".join(cells)}</tr>')
    caption = ("Training aids of every run. EMA: exponential moving average of the networks sampling uses "
               "(generator, VAE encoder and decoder, diffusion UNet), decay ramped as min(decay, (1+n)/(10+n)). "
               "GAN options (DiffAugment policy, R1 weight) and the perceptual network of ldm are among each "
               "model's hyperparameters in the Models table. Augmentation: on-the-fly flips and affine of "
               "the training batches only (never validation, snapshots or samples).")
    table = (f'<table id="training-aids"><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead>'
             f"<tbody>{''.join(rows)}</tbody></table>")
    return table + _perceptual_note(summaries)


def _augment_text(augment: Mapping[str, Any] | None) -> str:
    """``training_aids.augment`` in words, e.g. "flip 0.5, rotate ±5°, shift ±2 px, zoom ±0.05"."""
    if not augment:
        return "off"
    parts = [(augment.get("flip_lr"), "flip {:g}"), (augment.get("rotate_deg"), "rotate ±{:g}°"),
             (augment.get("translate_px"), "shift ±{:g} px"), (augment.get("scale"), "zoom ±{:g}")]
    return ", ".join(fmt.format(value) for value, fmt in parts if value) or "off"


def _perceptual_note(summaries: Mapping[str, Mapping]) -> str:
    """Which feature network each perceptual loss ran on, and whether it replaced the published one."""
    items = []
    for name, s in summaries.items():
        p = s.get("perceptual")
        if not p:
            continue
        text = f"{name}: {p.get('backbone')}"
        if p.get("backbone") == "none":
            text += " (no perceptual term)"
        elif p.get("substitute"):
            text += " (offline substitute" + (f" for {p['published']}" if p.get("published") else "") + ")"
        items.append(f"<li>{escape(text)}</li>")
    if not items:
        return ""
    return '<p id="perceptual-networks">Perceptual loss networks:</p><ul>' + "".join(items) + "</ul>"


# ----------------------------------------------------------------- curves


def _validation_figures(losses: Mapping[str, pd.DataFrame], validation: Mapping[str, pd.DataFrame]) -> str:
    figures, without = [], []
    for name, frame in losses.items():
        val = validation.get(name)
        columns = [c for c in (val.columns if val is not None else []) if c != "step"]
        if val is None or val.empty or not columns:
            without.append(name)
            continue
        figures.append(figure(img_tag(plot_train_and_validation(frame, val, title=name),
                                      f"validation curve {name}", "grid"),
                              f"{name}: training (lines) and test-split (markers) losses"))
    parts = ["\n".join(figures)] if figures else []
    if without:
        parts.append(f'<p id="no-validation">No validation loss: {escape(", ".join(without))} (GAN objectives '
                     "pit two networks against each other and have no held-out counterpart; for other "
                     "families set validate_every).</p>")
    return "\n".join(parts) or "<p>No models.</p>"


def plot_train_and_validation(train: pd.DataFrame, validation: pd.DataFrame, title: str = "") -> bytes:
    """PNG: every loss term the validation table has, its training curve (moving average down to at
    most ``_CURVE_POINTS`` points) as a line and its validation values as markers, in one colour."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    columns = [c for c in validation.columns if c != "step"]
    values = []
    for i, column in enumerate(columns):
        colour = f"C{i}"
        if column in train.columns:
            curve = train[["step", column]].dropna()
            window = max(1, len(curve) // _CURVE_POINTS)
            smooth = curve[column].rolling(window, min_periods=1).mean()
            ax.plot(curve["step"], smooth, color=colour, linewidth=1, label=f"{column} (train)")
            values.append(smooth.to_numpy(dtype=float))
        points = validation[["step", column]].dropna()
        ax.plot(points["step"], points[column], "o--", color=colour, markersize=4, linewidth=0.8,
                label=f"{column} (test)")
        values.append(points[column].to_numpy(dtype=float))
    return loss_axes_png(fig, ax, np.concatenate(values) if values else np.zeros(0), title, "x-small")


# ----------------------------------------------------------------- snapshots


def _snapshot_figures(snapshots: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    figures, without = [], []
    for name, snap in snapshots.items():
        if not len(snap["steps"]):
            without.append(name)
            continue
        figures.append(figure(img_tag(plot_snapshot_strip(snap, title=name), f"snapshots {name}", "grid"),
                              f"{name}: one row per snapshot, the same latents in every row"))
    parts = ["\n".join(figures)] if figures else []
    if without:
        parts.append(f'<p id="no-snapshots">No snapshots: {escape(", ".join(without))} (set snapshot_every).</p>')
    return "\n".join(parts) or "<p>No models.</p>"


def plot_snapshot_strip(snap: Mapping[str, np.ndarray], title: str = "") -> bytes:
    """PNG: snapshot rows (step and what they show on the left), images side by side."""
    plt = pyplot()
    steps, kinds, images = snap["steps"], snap["kinds"], snap["images"]
    rows = len(steps)
    n = images.shape[1]
    fig, axes = plt.subplots(rows, 1, figsize=(max(3.0, 0.75 * n + 1.2), 0.8 * rows + 0.5), dpi=100,
                             squeeze=False)
    for ax, step, kind, row in zip(axes[:, 0], steps, kinds, images):
        ax.imshow(tile(np.clip(row, 0, 1), ncols=n), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        label = f"step {int(step)}" + ("" if str(kind) == "samples" else f"\n{kind}")
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    if title:
        axes[0, 0].set_title(title, fontsize="small")
    fig.tight_layout()
    return figure_png(fig)


# ---------------------------------------------------------------- on the page


def _training_progress(data: ReportData, notes: Notes) -> str:
    first = data.first_runs()
    summaries, losses, validation, snapshots = read_training_files(
        summaries={m: r.files.summary for m, r in first.items()}, losses={m: r.files.losses for m, r in first.items()},
        validation={m: r.files.validation for m, r in first.items()},
        snapshots={m: r.files.snapshots for m, r in first.items()})
    note = "<p>Each model's first seed; the losses of every run are under Training losses.</p>" \
        if any(len(runs) > 1 for runs in data.runs.values()) else ""
    return note + render_training_html(summaries, losses, validation, snapshots)


def _training_section(data: ReportData, notes: Notes) -> str:
    head = ("<th>Model</th><th>Seed</th><th>Family</th><th>Steps trained</th><th>Budget</th><th>Status</th>"
            "<th>Wall time (s)</th><th>Device</th>")
    rows = []
    for model, runs in data.runs.items():
        for run in runs:
            s = run.summary
            status = "incomplete ⚠ (time cap)" if run.incomplete else "complete"
            budget = s.get("budget") or {}
            budget_text = ", ".join(f"{k} {plain_text(v)}" for k, v in budget.items())
            css = ' class="incomplete"' if run.incomplete else ""
            rows.append(
                f'<tr data-model="{escape(model)}" data-seed="{run.seed}"{css}><th>{escape(model)}</th>'
                f'<td class="num">{run.seed}</td><td>{escape(s.get("family", ""))}</td>'
                f'<td class="num" data-value="{escape(repr(float_or_nan(s.get("steps"))))}">'
                f'{escape(_count(s.get("steps")))} of {escape(_count(s.get("target_steps", s.get("steps"))))}</td>'
                f"<td>{escape(budget_text)}</td><td data-status=\"{'incomplete' if run.incomplete else 'complete'}\">"
                f"{escape(status)}</td><td class=\"num\">{escape(format_number(s.get('train_seconds')))}</td>"
                f"<td>{escape(s.get('device', ''))}</td></tr>")
    hparams = []
    for model, runs in data.runs.items():
        if runs:
            hparams.append(f'<tr data-model="{escape(model)}"><th>{escape(model)}</th>'
                           f"<td>{escape(plain_text(runs[0].summary.get('hparams', {})))}</td></tr>")
    caption = ("Every training run (one per model and seed). The budget's steps or epochs decide the result; "
               "the minutes value is only a safety cap, and a run it stopped is marked incomplete.")
    return (f'<table id="training-runs"><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
            f'<table id="models"><thead><tr><th>Model</th><th>Hyperparameters</th></tr></thead>'
            f"<tbody>{''.join(hparams)}</tbody></table>")


def _losses_section(data: ReportData, notes: Notes) -> str:
    plots = {}
    for model, runs in data.runs.items():
        plots[model] = plot_losses({run.seed: run.files.losses for run in runs}, title=model)
    return figures(plots, "losses") if plots else "<p>No training losses.</p>"


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


SECTIONS = [
    Section("qc", "Training runs", "training", _training_section),
    Section("qc", "Training losses", "losses", _losses_section),
    Section("qc", "Training progress: aids, validation curves, snapshots", "training-progress", _training_progress),
]
