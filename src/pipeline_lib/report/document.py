"""One self-contained HTML report of a pipeline run.

Everything is inline (CSS in a <style> element, images as base64 PNG data
URIs) so the file can be mailed or archived alone and opens offline; it holds
no script and no external reference. All text from inputs goes through
``html.escape``. Metric cells carry their exact value in a ``data-value``
attribute (``repr(float)``) so tests and tools can read the numbers back
without parsing the rounded display text.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline_lib.core.figures import save_pairs
from pipeline_lib.core.io import read_json
from pipeline_lib.core.qc import successful_outputs
from pipeline_lib.core.settings import RegistrationSettings, SamplingSettings, read_settings
from pipeline_lib.core.slices import load_split, load_table
from pipeline_lib.report.distribution_section import render_distribution_metrics_html
from pipeline_lib.report.diversity_section import diversity_html_from_files
from pipeline_lib.report.training_section import training_html_from_files
from pipeline_lib.report.evaluation_section import evaluation_html_from_files
from pipeline_lib.report.reader_section import render_reader_results_html
from pipeline_lib.report.html import (count_text as _count, escape as _esc, finite_float as _as_float,
                                      float_or_nan, format_number, img_tag, loss_axes_png, pyplot, section)
from pipeline_lib.core import io
from pipeline_lib.core.errors import InputError


_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1, h2, h3 { color: #123; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em 0; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #eef; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.na { color: #a00; font-style: italic; }
tr.failed td { background: #fee; }
caption { caption-side: bottom; text-align: left; font-size: 0.9em; color: #444; padding-top: 0.3em; }
.banner { border: 3px solid #c00; background: #fee; padding: 0.8em 1em; font-weight: bold; margin-bottom: 1.5em; }
img.thumb { max-width: 10em; height: auto; }
img.grid { max-width: 100%; height: auto; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.9em; }
"""

_COHORT_LABELS = {
    "subjects_found": "Subjects found",
    "subjects_ingested": "Subjects ingested",
    "subjects_registered": "Subjects registered",
    "subjects_failed": "Subjects failed",
    "slices_train": "Slices (train)",
    "slices_test": "Slices (test)",
    "image_size": "Image size (pixels)",
}

# (metrics key for the value, key for ± std or None, column heading) — Ungría Hirte et al., Table 1.
_TABLE1_COLUMNS = [
    ("dataset_similarity", None, "Data Similarity"),
    ("isd", None, "ISD"),
    ("min_isd", None, "Minimum ISD"),
    ("sharpness_mean", "sharpness_std", "Laplace Sharpness (mean ± std)"),
]

_RECON_COLUMNS = [
    ("recon_mse_mean", "recon_mse_std", "Reconstruction MSE (mean ± std)"),
    ("recon_sharpness_mean", "recon_sharpness_std", "Reconstruction sharpness (mean ± std)"),
    ("original_sharpness_mean", "original_sharpness_std", "Original sharpness (mean ± std)"),
]

_MODEL_INFO_LABELS = {
    "family": "Family",
    "hyperparameters": "Hyperparameters",
    "steps": "Steps trained",
    "steps_trained": "Steps trained",
    "device": "Device",
    "wall_time_s": "Wall time (s)",
    "wall_time": "Wall time",
}

SYNTHETIC_BANNER = (
    "This cohort consists of synthetic phantoms made by deforming the MNI152 template. "
    "All variation between subjects is simulated, so this report supports no claim "
    "about model quality; it only shows that every stage of the pipeline ran."
)


def build_report(
    out_html: Path,
    *,
    cohort: dict,
    ingest_qc: pd.DataFrame,
    registration_qc: pd.DataFrame,
    overlays: dict[str, Path],
    metrics: dict[str, dict],
    original_metrics: dict,
    sample_grids: dict[str, Path],
    reconstruction_grids: dict[str, Path],
    losses: dict[str, Path],
    model_info: dict[str, dict],
    synthetic_cohort: bool,
    title: str = "Brain-MRI generative models: pipeline report",
    extra_sections: list[str] = (),
) -> None:
    """Write the whole run's report as one self-contained HTML file (atomically).

    ``metrics`` maps model name to its metrics dict (``sample_metrics`` keys,
    plus ``reconstruction_metrics`` keys for models that reconstruct);
    ``original_metrics`` is the "Original" row. Image and CSV paths are read
    now and embedded; a missing or malformed one raises InputError naming it.
    ``extra_sections`` are complete ``<section>`` blocks rendered (and escaped)
    by the evaluation modules that own them.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        f"<h1>{_esc(title)}</h1>",
    ]
    if synthetic_cohort:
        parts.append(f'<div class="banner" id="synthetic-banner">{_esc(SYNTHETIC_BANNER)}</div>')
    parts.append(section("Cohort", _cohort_table(cohort)))
    parts.append(section("Ingest QC", _frame_table(ingest_qc, table_id="ingest-qc")))
    parts.append(section("Registration QC", _registration_block(registration_qc, overlays)))
    parts.append(section("Sample metrics (Ungría Hirte et al., Table 1)", _table1(original_metrics, metrics)))
    parts.append(section("Reconstruction", _reconstruction_table(metrics)))
    parts.append(section("Samples", _figures(sample_grids, "sample grid")))
    parts.append(section("Reconstructions", _figures(reconstruction_grids, "originals and reconstructions")))
    parts.append(section("Training losses", _loss_figures(losses)))
    parts.append(section("Models", _model_info_table(model_info)))
    parts += list(extra_sections)
    parts.append("</body></html>")
    io.write_text(out_html, "\n".join(parts) + "\n")


# ---------------------------------------------------------------- sections


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
        css = ' class="failed"' if status in {"failed", "skipped"} else ""
        cells = "".join(_value_cell(record[c], numeric[c]) for c in frame.columns)
        if extra is not None:
            cells += f"<td>{extra.get(pos, '')}</td>"
        rows.append(f"<tr{css}>{cells}</tr>")
    return f'<table id="{_esc(table_id)}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _registration_block(frame: pd.DataFrame, overlays: Mapping[str, Path]) -> str:
    """Registration table with each subject's overlay thumbnail beside its row."""
    subjects = [str(s) for s in frame["subject"]] if frame is not None and "subject" in frame else []
    thumbs = {
        pos: img_tag(overlays[subject], f"overlay {subject}", "thumb")
        for pos, subject in enumerate(subjects)
        if subject in overlays
    }
    parts = [_frame_table(frame, "registration-qc", extra=thumbs, extra_heading="Overlay")]
    unmatched = {k: v for k, v in overlays.items() if str(k) not in subjects}
    if unmatched:
        parts.append(_figures(unmatched, "overlay", css="thumb"))
    return "\n".join(parts)


def _table1(original: Mapping, models: Mapping[str, Mapping]) -> str:
    """Seed 001's Table 1: rows "Original" then one per model."""
    head = "<th></th>" + "".join(f"<th>{_esc(h)}</th>" for _, _, h in _TABLE1_COLUMNS)
    rows = [_metric_row("Original", original, _TABLE1_COLUMNS)]
    rows += [_metric_row(name, values, _TABLE1_COLUMNS) for name, values in models.items()]
    caption = _table1_caption(original, models)
    return (
        f'<table id="table1"><caption>{_esc(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _table1_caption(original: Mapping, models: Mapping[str, Mapping]) -> str:
    counts = [f"Original: {_count(original.get('n_samples'))} images"]
    counts += [
        f"{name}: {_count(values.get('n_samples'))} samples vs {_count(values.get('n_originals'))} originals"
        for name, values in models.items()
    ]
    return (
        "Dataset similarity, intra-sample diversity (ISD) and minimum ISD are mean per-pixel squared "
        "errors on images in [0, 1]; the Original row treats held-out real test slices as the sample set. "
        f"Laplace sharpness: variance of the Laplacian with intensities multiplied by "
        f"{_scale_text(original, models)}. Images: " + "; ".join(counts) + "."
    )


def _reconstruction_table(models: Mapping[str, Mapping]) -> str:
    with_recon = {name: values for name, values in models.items() if "recon_mse_mean" in values}
    if not with_recon:
        return "<p>No model reconstructs images.</p>"
    head = "<th>Model</th>" + "".join(f"<th>{_esc(h)}</th>" for _, _, h in _RECON_COLUMNS) + "<th>n</th>"
    rows = []
    for name, values in with_recon.items():
        row = _metric_row(name, values, _RECON_COLUMNS)
        n = _count(values.get("n_reconstructions"))
        rows.append(row.replace("</tr>", f'<td class="num">{_esc(n)}</td></tr>'))
    caption = (
        "Per-image mean squared error between test images and their reconstructions (intensities "
        f"in [0, 1]); sharpness as in Table 1, intensities multiplied by {_scale_text({}, with_recon)}."
    )
    return (
        f'<table id="reconstruction"><caption>{_esc(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _metric_row(name: str, values: Mapping, columns: Iterable[tuple[str, str | None, str]]) -> str:
    cells = [f"<th>{_esc(name)}</th>"]
    for key, std_key, _ in columns:
        cells.append(_metric_cell(key, values.get(key), None if std_key is None else values.get(std_key)))
    return f'<tr data-model="{_esc(name)}">' + "".join(cells) + "</tr>"


def _metric_cell(key: str, value: Any, std: Any = None) -> str:
    """A numeric cell; ``data-value`` holds repr(float) of the value (``nan`` if missing)."""
    number = _as_float(value)
    attrs = f'data-metric="{_esc(key)}" data-value="{_esc(repr(float_or_nan(value)))}"'
    text = format_number(value)
    if std is not None:
        attrs += f' data-std="{_esc(repr(float_or_nan(std)))}"'
        text = f"{text} ± {format_number(std)}"
    css = "num" if number is not None else "num na"
    return f'<td class="{css}" {attrs}>{_esc(text)}</td>'


def _figures(images: Mapping[str, Path | bytes], what: str, css: str = "grid") -> str:
    if not images:
        return f"<p>No {_esc(what)} images.</p>"
    return "\n".join(f"<figure><figcaption>{_esc(str(name))}</figcaption>"
                     f"{img_tag(png, f'{what} {name}', css)}</figure>" for name, png in images.items())


def _loss_figures(losses: Mapping[str, Path]) -> str:
    if not losses:
        return "<p>No training losses.</p>"
    return _figures({name: plot_losses(path, title=str(name)) for name, path in losses.items()}, "losses")


def _model_info_table(model_info: Mapping[str, Mapping]) -> str:
    if not model_info:
        return "<p>No model information.</p>"
    keys: list[str] = []
    for info in model_info.values():
        keys += [k for k in info if k not in keys]
    known = [k for k in _MODEL_INFO_LABELS if k in keys]
    keys = known + [k for k in keys if k not in _MODEL_INFO_LABELS]
    head = "<th>Model</th>" + "".join(f"<th>{_esc(_MODEL_INFO_LABELS.get(k, k))}</th>" for k in keys)
    rows = []
    for name, info in model_info.items():
        cells = "".join(f"<td>{_esc(_plain(info[k])) if k in info else ''}</td>" for k in keys)
        rows.append(f'<tr data-model="{_esc(name)}"><th>{_esc(name)}</th>{cells}</tr>')
    return f'<table id="models"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


# ---------------------------------------------------------------- losses plot


def plot_losses(csv_path: Path, title: str = "") -> bytes:
    """PNG bytes of every loss column of ``losses.csv`` against its ``step`` column.

    The y axis is logarithmic when every finite loss value is positive.
    """
    frame = _read_losses(Path(csv_path))
    columns = [c for c in frame.columns if c != "step"]
    fig, ax = pyplot().subplots(figsize=(6, 3.5), dpi=100)
    for column in columns:
        ax.plot(frame["step"], frame[column], label=str(column), linewidth=1)
    return loss_axes_png(fig, ax, frame[columns].to_numpy(dtype=float), title)


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




@dataclass(frozen=True)
class ModelOutputs:
    """What the report reads of one model: training, sampling and every evaluation stage."""

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
class ReportInputs:
    """Every file the report reads, by name; ``models`` in the report's row order."""

    subjects: Path
    ingest_qc: Path
    registration_qc: Path
    registered: Sequence[Path]
    table: Path
    images: Path
    original: Path
    distribution_original: Path
    domain_network: Path
    domain_original: Path
    reader_scores: Path
    diversity_original: Path
    models: Mapping[str, ModelOutputs]


def report_job(out_html: Path, inputs: ReportInputs, *, registration: RegistrationSettings | Mapping,
               sampling: SamplingSettings | Mapping, synthetic_cohort: bool, title: str) -> None:
    """The report rule: gather every stage's outputs into the report."""
    registration = read_settings(RegistrationSettings, registration)
    sampling = read_settings(SamplingSettings, sampling)
    models = inputs.models
    subjects = read_tsv(inputs.subjects)
    ingest_qc = read_tsv(inputs.ingest_qc)
    registration_qc = read_tsv(inputs.registration_qc)
    table = load_table(Path(inputs.table))
    cohort = {
        "subjects_found": len(subjects),
        "subjects_ingested": int((ingest_qc["status"] == "ok").sum()),
        "subjects_registered": int((registration_qc["status"] == "ok").sum()),
        "subjects_failed": int((registration_qc["status"] != "ok").sum()),
        "slices_train": int((table["split"] == "train").sum()),
        "slices_test": int((table["split"] == "test").sum()),
        "image_size": int(np.load(inputs.images, mmap_mode="r").shape[-1]),
        "registration": f"{registration.transform} to "
                        f"{registration.template or 'MNI152 2009c (nilearn)'}, "
                        f"grid {'x'.join(map(str, registration.grid))}",
    }
    summaries = {m: read_json(o.summary) for m, o in models.items()}
    model_info = {
        m: {"family": s["family"], "hyperparameters": s["hparams"], "steps": s["steps"],
            "device": s["device"], "wall_time_s": s["train_seconds"]}
        for m, s in summaries.items()
    }
    with tempfile.TemporaryDirectory() as tmp:
        reconstruction_grids = {}
        recon_paths = {m: Path(o.reconstructions) for m, o in models.items()
                       if np.load(o.reconstructions, mmap_mode="r").shape[0]}
        if recon_paths:
            test_images, _ = load_split(Path(inputs.images), Path(inputs.table), "test",
                                        n=sampling.n_reconstruct, seed=sampling.seed)
            for m, p in recon_paths.items():
                reconstruction_grids[m] = Path(tmp) / f"{m}.png"
                save_pairs(test_images, np.load(p), reconstruction_grids[m])
        build_report(
            Path(out_html),
            cohort=cohort,
            ingest_qc=ingest_qc[["subject", "status", "file", "reason"]],
            registration_qc=_registration_view(registration_qc),
            overlays={s: p.parent / "overlay.png"
                      for s, p in successful_outputs(inputs.registered, "qc.json").items()},
            metrics={m: read_json(o.metrics) for m, o in models.items()},
            original_metrics=read_json(inputs.original),
            sample_grids={m: Path(o.grid) for m, o in models.items()},
            reconstruction_grids=reconstruction_grids,
            losses={m: Path(o.losses) for m, o in models.items()},
            model_info=model_info,
            synthetic_cohort=synthetic_cohort,
            title=title,
            extra_sections=evaluation_sections(inputs),
        )


def _registration_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader of the report needs, correlations as numbers."""
    view = frame.reindex(columns=["subject", "status", "correlation_before", "correlation_after", "reason"])
    for column in ("correlation_before", "correlation_after"):
        view[column] = pd.to_numeric(view[column], errors="coerce")
    return view


def evaluation_sections(inputs: ReportInputs) -> list[str]:
    """The sections of the training and evaluation stages (training progress, FID/KID/PRDC, diversity,
    domain features, memorization, conditioning, utility, reader study)."""
    models = inputs.models
    return [
        training_html_from_files(summaries={m: o.summary for m, o in models.items()},
                                 losses={m: o.losses for m, o in models.items()},
                                 validation={m: o.validation for m, o in models.items()},
                                 snapshots={m: o.snapshots for m, o in models.items()}),
        render_distribution_metrics_html({m: read_json(o.distribution) for m, o in models.items()},
                                         read_json(inputs.distribution_original)),
        diversity_html_from_files(models={m: o.diversity for m, o in models.items()},
                                  original=inputs.diversity_original),
        evaluation_html_from_files(
            network=inputs.domain_network,
            domain={"original": inputs.domain_original, **{m: o.domain for m, o in models.items()}},
            memorization={m: o.memorization for m, o in models.items()},
            galleries={m: o.gallery for m, o in models.items()},
            conditioning={m: o.conditioning for m, o in models.items()},
            utility={m: o.utility for m, o in models.items()}),
        render_reader_results_html(Path(inputs.reader_scores)),
    ]


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
