"""This run's values in the layout of a paper's published tables (``report.published``).

``published_section.py`` draws a published table beside a table of the same rows and columns;
this module fills the second one from the run's records, study by study:

- Ungría Hirte et al. 2020: Table 1 (Data Similarity, ISD, Minimum ISD, Laplace sharpness per
  model), the reconstruction figures of section 4 (MSE and sharpness), Table 2 (the share of
  each source's images the readers rated real or synthetic, one value per reader) and the readers'
  Cohen's kappa (0.84 in the paper; Fleiss' kappa when this run has more than two readers). Models are
  matched to the paper's rows by family: vae -> Vanilla VAE, dfc_vae -> DFC VAE, intro_vae ->
  introVAE, stylegan -> Style-Based GAN; "Original" is the real test slices.
- Han et al. 2018: Table 1, the Visual Turing Test per GAN (dcgan -> DCGAN, wgan -> WGAN),
  sequence (the model's block, else its dataset's single ``sequence`` value, else Concat) and
  image size, from the reader scores; "no readings yet" while no reader has answered.
- Ballesteros Ramirez 2025: Table 2, the FID per scanner of the conditional VAE (its
  ``fid_per_class``, mean ± std over the repeats), and the FID of dcgan/wgan_gp models for the
  table's second part.
- Kazuhiro et al. 2018: Table 1, per reader the TP/FN/FP/TN rates (%) and the balanced accuracy,
  which is the paper's accuracy; this run's reader IDs are its own rows.

Several training runs of a model give mean ± std over seeds (noted under the table); one run gives
the run's own spread where the paper's cell has one (sharpness over images, FID over repeats).
It reads records only; it computes no metric.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pipeline_lib.core.numbers import finite_float
from pipeline_lib.core.published import PublishedTable
from pipeline_lib.core.io import read_json
from pipeline_lib.report.html import escape as _esc
from pipeline_lib.report.inputs import ReportData
from pipeline_lib.report.published_section import render_published_tables
from pipeline_lib.report.sections import Notes, Section

NO_READINGS = "no readings yet"

UNGRIA_FAMILIES = {"vae": "Vanilla VAE", "dfc_vae": "DFC VAE", "intro_vae": "introVAE", "stylegan": "Style-Based GAN"}
#: Table 2 of the same paper spells the GAN's column "Style-Base GAN".
UNGRIA_READER_COLUMNS = {**UNGRIA_FAMILIES, "stylegan": "Style-Base GAN"}
HAN_FAMILIES = {"dcgan": "DCGAN", "wgan": "WGAN"}
HAN_SEQUENCES = {"t1": "T1", "t1c": "T1c", "t1ce": "T1c", "t1gd": "T1c", "t2": "T2", "flair": "FLAIR",
                 "concat": "Concat"}
BALLESTEROS_OTHER = {"dcgan": "DCGAN", "wgan_gp": "WGAN-GP"}


@dataclass(frozen=True)
class ModelView:
    """One model of the run: its family, dataset, and each run's metrics and distribution records."""

    name: str
    family: str
    dataset: str
    metrics: Sequence[Mapping] = ()
    distribution: Sequence[Mapping] = ()


@dataclass(frozen=True)
class DatasetView:
    """One slice dataset: image size, its ``sequence`` values, real reference metrics, reader scores."""

    name: str
    image_size: Any = None
    sequences: tuple[str, ...] = ()
    original: Mapping = field(default_factory=dict)
    reader_scores: Mapping | None = None


@dataclass
class PaperValues:
    """What the report puts beside the published tables: per table id the rows, a note, and
    whether this run may add rows of its own."""

    ours: dict[str, dict] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    extra_rows: set[str] = field(default_factory=set)


def over_runs(records: Sequence[Mapping], get: Callable[[Mapping], Any],
              within_sd: Callable[[Mapping], Any] | None = None) -> Any:
    """A cell over a model's runs: one run -> its value (with its own spread when ``within_sd``);
    several -> {mean, sd} over the runs' values; None when no run has a value."""
    values = [v for v in (finite_float(get(r)) for r in records) if v is not None]
    if not values:
        return None
    if len(values) == 1:
        sd = finite_float(within_sd(records[0])) if within_sd is not None and len(records) == 1 else None
        return {"mean": values[0], "sd": sd} if sd is not None else values[0]
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values)}


def _by_family(models: Sequence[ModelView], names: Mapping[str, str]) -> tuple[dict[str, ModelView], list[str]]:
    """The first model of each mapped family, by the paper's name; and the models left out."""
    chosen: dict[str, ModelView] = {}
    skipped = []
    for model in models:
        label = names.get(model.family)
        if label is None:
            continue
        if label in chosen:
            skipped.append(model.name)
        else:
            chosen[label] = model
    return chosen, skipped


def _which(chosen: Mapping[str, ModelView], skipped: Sequence[str]) -> str:
    if not chosen:
        return "No model of this run has a family the paper's rows name."
    text = "Rows by family: " + ", ".join(f"{label} = {m.name}" for label, m in chosen.items()) + "."
    if any(len(m.metrics) > 1 or len(m.distribution) > 1 for m in chosen.values()):
        text += " A model with several training runs shows mean ± std over seeds."
    if skipped:
        text += f" Not shown (a model of the same family is): {', '.join(skipped)}."
    return text


# ---------------------------------------------------------------- Ungría Hirte et al.


def _ungria(tables: Mapping[str, PublishedTable], models: Sequence[ModelView],
            datasets: Mapping[str, DatasetView]) -> PaperValues:
    out = PaperValues()
    chosen, skipped = _by_family(models, UNGRIA_FAMILIES)
    dataset = datasets[next(iter(chosen.values())).dataset] if chosen else next(iter(datasets.values()), None)
    original = dict(dataset.original) if dataset is not None else {}
    if "generation" in tables:
        rows = {}
        if original:
            rows["Original"] = _table1_cells([original])
        for label, model in chosen.items():
            rows[label] = _table1_cells(model.metrics)
        out.ours["generation"] = rows
        out.notes["generation"] = _which(chosen, skipped) + " Original: this run's real test slices."
    if "reconstruction" in tables:
        rows = {}
        if original:
            rows["Original"] = {"Laplace Sharpness Variance Score": over_runs(
                [original], lambda r: r.get("sharpness_mean"), lambda r: r.get("sharpness_std"))}
        for label, model in chosen.items():
            if label == "Style-Based GAN" or not any("recon_mse_mean" in r for r in model.metrics):
                continue
            rows[label] = {
                "MSE": over_runs(model.metrics, lambda r: r.get("recon_mse_mean"),
                                 lambda r: r.get("recon_mse_pixel_std")),
                "Laplace Sharpness Variance Score": over_runs(
                    model.metrics, lambda r: r.get("recon_sharpness_mean"), lambda r: r.get("recon_sharpness_std"))}
        out.ours["reconstruction"] = rows
        out.notes["reconstruction"] = ("Reconstructions of the real test slices by each VAE. MSE ± the "
                                       "standard deviation of the squared error over every pixel, the "
                                       "paper's spread (a per-image spread is in the fidelity section).")
    if "readers" in tables:
        scores = dataset.reader_scores if dataset is not None else None
        readers_chosen, _ = _by_family(models, UNGRIA_READER_COLUMNS)
        out.ours["readers"], out.notes["readers"] = _ungria_readers(scores, readers_chosen)
    if "agreement" in tables:
        out.ours["agreement"], out.notes["agreement"] = _ungria_agreement(
            dataset.reader_scores if dataset is not None else None)
        out.extra_rows.add("agreement")
    return out


def _table1_cells(records: Sequence[Mapping]) -> dict[str, Any]:
    return {"Data Similarity": over_runs(records, lambda r: r.get("dataset_similarity")),
            "ISD": over_runs(records, lambda r: r.get("isd")),
            "Minimum ISD": over_runs(records, lambda r: r.get("min_isd")),
            "Laplace Sharpness Variance Score": over_runs(records, lambda r: r.get("sharpness_mean"),
                                                          lambda r: r.get("sharpness_std"))}


def _ungria_readers(scores: Mapping | None, chosen: Mapping[str, ModelView]) -> tuple[dict, str]:
    if not scores or scores.get("status") != "ok":
        return {}, f"No reader has answered yet: {NO_READINGS}."
    readers = [r["reader_id"] for r in scores.get("readers", [])]
    shares: dict[tuple[str, str], dict[str, float | None]] = {}
    for row in scores.get("sources", []):
        shares[(row["source"], row["reader_id"])] = {"real": finite_float(row.get("pct_rated_real")),
                                                     "synthetic": finite_float(row.get("pct_rated_synthetic"))}
    columns = {"Original Dataset": "real", **{label: m.name for label, m in chosen.items()}}
    cells: dict[str, dict[str, Any]] = {name: {} for name in
                                        ("True Positives", "False Positives", "True Negatives", "False Negatives")}
    for column, source in columns.items():
        per_reader = [shares.get((source, r), {}) for r in readers]
        if not any(p.get("real") is not None for p in per_reader):
            continue
        def values(kind: str, zero: bool) -> list[float]:
            return [0.0 if zero else (p.get(kind) if p.get(kind) is not None else float("nan")) for p in per_reader]
        real = source == "real"
        cells["True Positives"][column] = values("real", not real)
        cells["False Negatives"][column] = values("synthetic", not real)
        cells["False Positives"][column] = values("real", real)
        cells["True Negatives"][column] = values("synthetic", real)
    note = (f"Readers in order: {' / '.join(readers)}; positive = real, as the paper's table (a real image rated "
            "real is a true positive, a synthetic one rated real a false positive).")
    return cells, note


def _ungria_agreement(scores: Mapping | None) -> tuple[dict, str]:
    """This run's inter-reader kappa beside the paper's Cohen's kappa of its two readers: Cohen's
    with two readers; with more, Fleiss' kappa in a row of its own (the paper's row stays empty)."""
    if not scores or scores.get("status") != "ok":
        return {}, f"No reader has answered yet: {NO_READINGS}."
    agreement = scores.get("agreement") or {}
    readers, images = agreement.get("readers") or [], agreement.get("n_images", 0)
    if agreement.get("method") == "cohen":
        rows = {"Cohen's kappa": {"Value": agreement.get("kappa")}}
    elif agreement.get("method") == "fleiss":
        rows = {f"Fleiss' kappa ({len(readers)} readers)": {"Value": agreement.get("kappa")}}
    else:
        return {}, f"Kappa needs two readers; this run has {len(readers)}."
    note = (f"Readers {', '.join(map(str, readers))}, on the {images} images every one of them answered"
            + (f"; {agreement['note']}" if agreement.get("note") else "") + ".")
    return rows, note


# ---------------------------------------------------------------- Han et al.


def _sequence_label(value: str) -> str:
    return HAN_SEQUENCES.get(str(value).strip().lower(), str(value))


def _han(tables: Mapping[str, PublishedTable], models: Sequence[ModelView],
         datasets: Mapping[str, DatasetView]) -> PaperValues:
    out = PaperValues()
    if "turing_test" not in tables:
        return out
    columns = tables["turing_test"].columns[3:]
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    any_scores = False
    for model in models:
        gan = HAN_FAMILIES.get(model.family)
        if gan is None:
            continue
        dataset = datasets.get(model.dataset)
        size = str(dataset.image_size) if dataset is not None else "?"
        scores = dataset.reader_scores if dataset is not None else None
        blocks = _model_blocks(scores, model.name) if scores and scores.get("status") == "ok" else {}
        if blocks:
            any_scores = True
            for block, cells in blocks.items():
                suffix = block.split("/", 1)[1] if "/" in block else _default_sequence(dataset)
                rows[(_sequence_label(suffix), gan, size)] = _han_cells(cells)
        else:
            rows[(_default_sequence(dataset), gan, size)] = {c: NO_READINGS for c in columns}
    out.ours["turing_test"] = rows
    out.extra_rows.add("turing_test")
    out.notes["turing_test"] = (
        "Rows from this run's DCGAN and WGAN models: sequence from the reader study's block (else the model's "
        "dataset: its one sequence, or Concat), size from the dataset. Counts pooled over this run's readers "
        "(the paper had one); accuracy = (real as real + synt as synt) / images."
        + ("" if any_scores else f" No reader has answered yet: {NO_READINGS}."))
    return out


def _default_sequence(dataset: DatasetView | None) -> str:
    if dataset is None or not dataset.sequences:
        return "(no sequence label)"
    return _sequence_label(dataset.sequences[0]) if len(dataset.sequences) == 1 else "Concat"


def _model_blocks(scores: Mapping, model: str) -> dict[str, dict[str, int]]:
    """block name -> the 2x2 counts pooled over readers, for ``model``'s blocks (Han's design), else
    the model's row of the models table (today's one-block-per-model kit: block = model)."""
    out: dict[str, dict[str, int]] = {}
    for row in scores.get("blocks_table", []) or []:
        if model not in (row.get("models") or "").split(","):
            continue
        cells = out.setdefault(row["block"], {})
        for key in ("real_rated_real", "real_rated_synthetic", "synthetic_rated_real", "synthetic_rated_synthetic"):
            cells[key] = cells.get(key, 0) + int(row.get(key) or 0)
    if out:
        return out
    for row in scores.get("models_table", []) or []:
        if row.get("model") == model and not row.get("group"):
            cells = out.setdefault(model, {})
            for key in ("real_rated_real", "real_rated_synthetic", "synthetic_rated_real",
                        "synthetic_rated_synthetic"):
                cells[key] = cells.get(key, 0) + int(row.get(key) or 0)
    return out


def _han_cells(c: Mapping[str, int]) -> dict[str, Any]:
    n = sum(c.values())
    accuracy = round(100.0 * (c["real_rated_real"] + c["synthetic_rated_synthetic"]) / n, 1) if n else None
    return {"Accuracy (%)": accuracy, "Real as Real": c["real_rated_real"], "Real as Synt": c["real_rated_synthetic"],
            "Synt as Real": c["synthetic_rated_real"], "Synt as Synt": c["synthetic_rated_synthetic"]}


# ---------------------------------------------------------------- Ballesteros Ramirez


def _scanner_key(name: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    return "gyroscanintera" if key == "gyrosanintera" else key


def _ballesteros(tables: Mapping[str, PublishedTable], models: Sequence[ModelView],
                 datasets: Mapping[str, DatasetView]) -> PaperValues:
    out = PaperValues()
    if "fid_per_scanner" in tables:
        table = tables["fid_per_scanner"]
        published = {_scanner_key(k[0]): k[0] for k in (table.key(r) for r in table.rows)}
        cvae = next((m for m in models if m.family == "cvae"), None)
        rows: dict[str, dict[str, Any]] = {}
        if cvae is not None:
            per_run = [(_at(d, "fid_per_class", "classes") or {}) for d in cvae.distribution]
            names = sorted({name for classes in per_run for name in classes})
            for name in names:
                records = [classes.get(name) or {} for classes in per_run]
                label = published.get(_scanner_key(name), name)
                rows[label] = {"FID": over_runs(records, lambda r: r.get("mean"), lambda r: r.get("std"))}
        out.ours["fid_per_scanner"] = rows
        out.extra_rows.add("fid_per_scanner")
        out.notes["fid_per_scanner"] = (
            f"Per-class FID of {cvae.name} (mean ± std over the FID repeats; over seeds with several runs); "
            "scanner labels of this run's data, matched to the paper's by name." if cvae is not None else
            "No conditional VAE (family cvae) in this run.")
    if "fid_other_models" in tables:
        chosen, skipped = _by_family(models, BALLESTEROS_OTHER)
        out.ours["fid_other_models"] = {label: {"FID": over_runs(m.distribution, lambda r: _at(r, "fid", "mean"))}
                                        for label, m in chosen.items()}
        out.notes["fid_other_models"] = (_which(chosen, skipped) + " The paper's numbers are another work's; ours "
                                         "are this run's models on this run's data.")
    return out


def _at(record: Mapping | None, *path: str) -> Any:
    node: Any = record
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


# ---------------------------------------------------------------- Kazuhiro et al.


def _kazuhiro(tables: Mapping[str, PublishedTable], models: Sequence[ModelView],
              datasets: Mapping[str, DatasetView]) -> PaperValues:
    out = PaperValues()
    if "readers" not in tables:
        return out
    dataset = next((d for d in datasets.values() if d.reader_scores), None)
    scores = dataset.reader_scores if dataset is not None else None
    rows = {}
    if scores and scores.get("status") == "ok":
        for row in scores.get("readers", []):
            ba = finite_float(row.get("balanced_accuracy"))
            rows[str(row["reader_id"])] = {
                "TP": _round(row.get("TP_rate")), "FN": _round(row.get("FN_rate")), "FP": _round(row.get("FP_rate")),
                "TN": _round(row.get("TN_rate")), "Accuracy": None if ba is None else round(ba, 2)}
        positive = scores.get("positive_class", "real")
        note = ("Rates in % of each true class; accuracy is the balanced accuracy (TPR + TNR) / 2, which is the "
                "paper's accuracy (its formula applied to rates). This run's reader IDs are its own rows"
                + ("." if positive == "real" else "; ⚠ reader_study.positive_class is synthetic, so TP/FN and "
                   "FP/TN swap roles against the paper's table."))
    else:
        note = f"No reader has answered yet: {NO_READINGS}."
    out.ours["readers"] = rows
    out.extra_rows.add("readers")
    out.notes["readers"] = note
    return out


def _round(value: Any) -> float | None:
    number = finite_float(value)
    return None if number is None else round(number, 1)


STUDIES: dict[str, Callable[..., PaperValues]] = {
    "ungria_hirte_2020": _ungria,
    "han_2018": _han,
    "ballesteros_ramirez_2025": _ballesteros,
    "kazuhiro_2018": _kazuhiro,
}


def paper_values(tables: Mapping[str, PublishedTable], models: Sequence[ModelView],
                 datasets: Mapping[str, DatasetView]) -> PaperValues:
    """This run's cells for every table of a study (empty, with a note, for a study this module
    does not know: a user's own file shows the published side only)."""
    if not tables:
        return PaperValues()
    study = next(iter(tables.values())).study
    fill = STUDIES.get(study)
    if fill is None:
        return PaperValues(notes={t: f"This report has no mapping of a run's values onto study {study!r}; "
                                     "only the published side is shown." for t in tables})
    return fill(tables, models, datasets)


# ---------------------------------------------------------------- on the page


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


SECTIONS = [
    Section("paper", "The paper's tables beside this run's", "published", _paper, per_dataset=False,
            when=lambda data: bool(data.published)),
]
