"""The report's "Training progress" section: training aids, validation curves and snapshot strips.

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
from pipeline_lib.report.html import (escape, figure, figure_png, img_tag, loss_axes_png, number_cell, pyplot,
                                      text_cell)

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
