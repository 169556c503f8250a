"""The 3-D models' blocks, from the volumetric_metrics rule (evaluation/volumetric.py): orthogonal views
of samples beside real volumes, the volumetric metrics (2.5-D FID, 3-D MS-SSIM, nearest-training-volume
memorization, brain volume and tissue intensity), and the 2-D metrics on three planes of the sampled
volumes beside the 2-D models' values of the same metrics. Shown only when the run has 3-D models."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from pipeline_lib.evaluation.seeds import spread
from pipeline_lib.evaluation.volumetric import FID_25D_NOTE, PLANES

from pipeline_lib.report.html import escape, figure, spread_cell, zoomable_img
from pipeline_lib.report.inputs import ReportData, Run, nested
from pipeline_lib.report.sections import Notes, Section

#: The 2-D metrics shown on slices (record key, heading): evaluation/pixel_metrics.sample_metrics and
#: the MS-SSIM of evaluation/diversity.pairwise_ms_ssim (a 2-D run's ``metrics`` and ``diversity``).
SLICE_METRICS = (("dataset_similarity", "DS"), ("isd", "ISD"), ("min_isd", "Minimum ISD ↑"),
                 ("sharpness_mean", "Sharpness"), ("ms_ssim_mean", "MS-SSIM between slices"))

#: The volumetric table's columns: key, heading, the value of a run's ``volumetric`` record, percent.
VOLUME_COLUMNS: tuple[tuple[str, str, Callable[[dict], Any], bool], ...] = (
    ("fid_2_5d", "2.5-D FID ↓", lambda r: nested(r, "fid", "fid_2_5d"), False),
    *((f"fid_{p}", f"FID {p}", lambda r, p=p: nested(r, "fid", f"fid_{p}"), False) for p in PLANES),
    ("ms_ssim_3d", "3-D MS-SSIM", lambda r: nested(r, "ms_ssim_3d", "ms_ssim_3d_mean"), False),
    ("likely_copies", "Likely copies ↓", lambda r: nested(r, "memorization", "voxel", "fraction_likely_copies"), True),
    ("brain_ml", "Brain volume (mL)", lambda r: nested(r, "brain_volume", "generated_ml", "mean"), False),
    ("brain_w1", "Brain volume W₁ (mL) ↓", lambda r: nested(r, "brain_volume", "wasserstein_ml"), False),
    ("tissue_w1", "Tissue intensity W₁ ↓", lambda r: nested(r, "tissue_intensity", "wasserstein"), False),
)

#: The real volumes' values of the columns that have one (in every run's record; the first is shown).
REAL_VALUES: dict[str, Callable[[dict], Any]] = {
    "ms_ssim_3d": lambda r: nested(r, "ms_ssim_3d_real", "ms_ssim_3d_mean"),
    "brain_ml": lambda r: nested(r, "brain_volume", "real_ml", "mean"),
}


def has_volume_runs(data: ReportData) -> bool:
    return bool(data.volume_runs)


def _label(model: str, run: Run, n_runs: int) -> str:
    return model if n_runs == 1 else f"{model} (seed {run.seed})"


def _views(data: ReportData, notes: Notes) -> str:
    figures = []
    for model, runs in data.volume_runs.items():
        for run in runs:
            label = _label(model, run, len(runs))
            figures.append(figure(zoomable_img(run.files.volumetric_views, f"orthogonal views of {label}", "grid"),
                                  label))
    caption = ("Each row one volume's central axial, coronal and sagittal slices (first channel, in the slice "
               "datasets' radiological display: the patient's right on the image's left); samples on the "
               "left, real test volumes on the right. Click a figure to enlarge it.")
    return f'<div class="sample-grids">{"".join(figures)}</div><p>{escape(caption)}</p>'


def _cells(records: Iterable[dict], columns) -> str:
    records = list(records)
    return "".join(spread_cell(spread(get(r) for r in records), key=key, percent=percent)
                   for key, _, get, percent in columns)


def _volumetric_table(data: ReportData, notes: Notes) -> str:
    head = "<th>Model</th><th>Runs</th>" + "".join(f"<th>{escape(h)}</th>" for _, h, _, _ in VOLUME_COLUMNS)
    rows, first = [], None
    for model, runs in data.volume_runs.items():
        records = [run.volumetric for run in runs]
        first = first or records[0]
        for record in records:
            if nested(record, "fid", "warning"):
                notes.add("small FID sample", record["fid"]["warning"], model)
        rows.append(f'<tr data-model="{escape(model)}"><th>{escape(model)}</th><td class="num">{len(runs)}</td>'
                    f"{_cells(records, VOLUME_COLUMNS)}</tr>")
    real_columns = [(key, head, REAL_VALUES.get(key, lambda r: None), percent)
                    for key, head, _, percent in VOLUME_COLUMNS]
    rows.insert(0, '<tr class="reference" data-model="original"><th>Real volumes</th><td class="num">1</td>'
                f"{_cells([first], real_columns)}</tr>")
    caption = (f"Mean ± std over training seeds. {FID_25D_NOTE}; samples' slices against the training volumes' "
               "slices at the same positions. 3-D MS-SSIM: MONAI's MultiScaleSSIMMetric with spatial_dims=3 "
               "between random pairs of distinct volumes (lower = more diverse; the real row: pairs of real "
               "test volumes). Likely copies: samples nearer (per-voxel MSE) to their nearest training "
               "volume than the test volumes' 5th percentile distance to theirs. Brain volume: voxels above "
               "0.1 times the voxel volume (the real row: the training volumes); W₁: Wasserstein-1 distance "
               "between the samples' and the training volumes' brain volumes, and between their tissue "
               "intensity histograms (intensities in [0, 1]).")
    return (f'<table id="volumetric-metrics"><caption>{escape(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _slice_cells(records: Iterable[dict | None]) -> str:
    records = [r for r in records if r]
    return "".join(spread_cell(spread(r.get(key) for r in records), key=key) for key, _ in SLICE_METRICS)


def _slice_table(data: ReportData, notes: Notes) -> str:
    head = ("<th>Model</th><th>Slices</th><th>Runs</th>"
            + "".join(f"<th>{escape(h)}</th>" for _, h in SLICE_METRICS))
    rows, reference = [], None
    for model, runs in data.volume_runs.items():
        reference = reference or runs[0].volumetric
        for plane in PLANES:
            cells = _slice_cells(nested(run.volumetric, "planes", plane) for run in runs)
            rows.append(f'<tr data-model="{escape(model)}" data-plane="{plane}" data-kind="3-D"><th>{escape(model)}'
                        f'</th><td>{plane} slices of the sampled volumes</td><td class="num">{len(runs)}</td>'
                        f"{cells}</tr>")
    for plane in PLANES:
        rows.append(f'<tr class="reference" data-model="original" data-plane="{plane}" data-kind="3-D"><th>Real '
                    f'test volumes</th><td>{plane} slices</td><td class="num">1</td>'
                    f'{_slice_cells([nested(reference, "real_planes", plane)])}</tr>')
    parts = data.datasets or {"": data}
    for name, part in parts.items():
        where = f" of dataset {name}" if name else ""
        for model, runs in part.runs.items():
            rows.append(f'<tr data-model="{escape(model)}" data-kind="2-D"><th>{escape(model)}</th>'
                        f'<td>2-D samples{escape(where)}</td><td class="num">{len(runs)}</td>'
                        f"{_slice_cells(run.metrics | run.diversity for run in runs)}</tr>")
        if part.runs and part.original:
            rows.append(f'<tr class="reference" data-model="original" data-kind="2-D"><th>Real test slices</th>'
                        f'<td>the 2-D dataset{escape(where)}</td><td class="num">1</td>'
                        f"{_slice_cells([part.original | (part.diversity_original or {})])}</tr>")
    caption = ("Ungría Hirte et al.'s metrics (DS: mean per-pixel squared error to the training slices; ISD: "
               "between samples; minimum ISD: to the nearest other sample; sharpness: variance of the "
               "Laplacian on the 8-bit scale) and MONAI's MS-SSIM between random pairs of distinct slices "
               "(lower = more diverse), mean ± std over seeds. A 3-D model's values are on "
               "axial, coronal and sagittal slices of its sampled volumes at the same positions as the real "
               "volumes' (the central half of each axis); a 2-D model's on its own samples against its "
               "dataset's slices. DS and ISD depend on the slice size and field of view: compare a 2-D "
               "and a 3-D model only on the same plane and grid, and each against its own real row.")
    return (f'<table id="volumetric-slice-metrics"><caption>{escape(caption)}</caption><thead><tr>{head}</tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table>")


#: The conditioning table's columns: key, heading, the value of one covariate's record.
CONDITIONING_COLUMNS: tuple[tuple[str, str, Callable[[dict], Any], bool], ...] = (
    ("pearson_r", "Pearson r ↑", lambda r: r.get("pearson_r"), False),
    ("slope", "Slope (1 = follows)", lambda r: r.get("slope"), False),
    ("mae", "MAE ↓", lambda r: r.get("mae"), False),
    ("mae_if_ignored", "MAE if ignored", lambda r: r.get("mae_if_ignored"), False),
)


def has_conditioned_volume_runs(data: ReportData) -> bool:
    return any(nested(run.volumetric, "conditioning") for runs in data.volume_runs.values() for run in runs)


def _conditioning_table(data: ReportData, notes: Notes) -> str:
    head = ("<th>Model</th><th>Covariate</th><th>Runs</th>"
            + "".join(f"<th>{escape(h)}</th>" for _, h, _, _ in CONDITIONING_COLUMNS))
    rows = []
    for model, runs in data.volume_runs.items():
        checks = [nested(run.volumetric, "conditioning") or {} for run in runs]
        for covariate in dict.fromkeys(name for check in checks for name in check):
            records = [check[covariate] for check in checks if covariate in check]
            if any(record.get("measured") is None for record in records):
                notes.add("covariate not checked", records[0].get("note") or covariate, model)
                continue
            rows.append(f'<tr data-model="{escape(model)}" data-covariate="{escape(covariate)}"><th>{escape(model)}'
                        f'</th><td>{escape(covariate)}</td><td class="num">{len(records)}</td>'
                        f"{_cells(records, CONDITIONING_COLUMNS)}</tr>")
    caption = ("Covariate-conditional 3-D models (condition_on_covariates; Pinaya et al. 2022): each sample was "
               "drawn with the covariates of a training volume, and what can be measured on a volume is "
               "measured on it (brain volume: voxels above 0.1 times the voxel volume, as the dataset "
               "measured its volumes). Pearson r and slope of measured on requested, mean absolute error, and "
               "the error with the measured values shuffled over the samples (a model that draws the right "
               "distribution but ignores each request). Following means r and slope near 1 and an error well "
               "below the shuffled one; mean ± std over seeds.")
    if not rows:
        return f"<p>{escape('No covariate of these models can be measured on a generated volume.')}</p>"
    return (f'<table id="volumetric-conditioning"><caption>{escape(caption)}</caption><thead><tr>{head}</tr>'
            f"</thead><tbody>{''.join(rows)}</tbody></table>")


def volume_summary_rows(data: ReportData) -> list[dict[str, Any]]:
    """summary.tsv's rows of the 3-D models (``kind`` 3-D): runs, seeds and each volumetric column's
    mean, std and count over the seeds, so a 3-D-only run's table is not empty."""
    rows = []
    for model, runs in data.volume_runs.items():
        row: dict[str, Any] = {"model": model, "kind": "3-D", "runs": len(runs),
                               "seeds": " ".join(str(r.seed) for r in runs)}
        for key, _, get, _ in VOLUME_COLUMNS:
            s = spread(get(run.volumetric) for run in runs)
            row[f"{key}_mean"], row[f"{key}_std"], row[f"{key}_n"] = s.mean, s.std, s.n
        rows.append(row)
    return rows


SECTIONS = [
    Section("fidelity", "3-D models: samples beside real volumes", "volumetric-views", _views,
            per_dataset=False, when=has_volume_runs),
    Section("fidelity", "3-D models: volumetric metrics", "volumetric", _volumetric_table,
            per_dataset=False, when=has_volume_runs),
    Section("fidelity", "3-D and 2-D models on the same slice metrics", "volumetric-slices", _slice_table,
            per_dataset=False, when=has_volume_runs),
    Section("fidelity", "3-D models: do samples follow the requested covariates?", "volumetric-conditioning",
            _conditioning_table, per_dataset=False, when=has_conditioned_volume_runs),
]
