"""The report's "Reader study" section: the papers' confusion tables, kappa and timing, from
``results/reader_study/scores.json`` (written by ``reader_study/scoring.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from pipeline_lib.core.errors import InputError
from pipeline_lib.reader_study.kit import REAL
from pipeline_lib.reader_study.scoring import NO_RESPONSES
from pipeline_lib.report.html import escape as _esc, format_number
from pipeline_lib.report.inputs import ReportData
from pipeline_lib.report.sections import Notes, Section


def render_reader_results_html(scores_dir_or_files: Path | str | Iterable[Path | str], heading: bool = True,
                               responses_dir: str | None = None, kit_dir: str | None = None) -> str:
    """An HTML fragment (one <section>, no script) with the reader-study tables.

    Accepts the folder holding scores.json, the scores.json path, or a list of
    the rule's outputs (scores.json is picked from it). Says "no reader
    responses yet" when nobody has answered. Every value is escaped; numeric
    cells carry their exact value in ``data-value``. ``heading=False`` leaves out the section's own
    heading (the report gives it one). ``responses_dir`` and ``kit_dir`` name the folder the readers'
    answer files go into and the kit's folder (reader_study.responses_dir and the kit rule's output).
    """
    scores = _load_scores(scores_dir_or_files)
    parts = ['<section class="reader-study">'] + (["<h2>Reader study</h2>"] if heading else [])
    if scores.get("status") == NO_RESPONSES or not scores.get("readers"):
        parts.append(f'<p id="reader-kit">Kit {_esc(scores.get("kit_id", ""))} ({_esc(scores.get("n_images", ""))} '
                     f"images): no reader responses yet. {_kit_text(kit_dir, responses_dir)}</p>")
        return "\n".join(parts + ["</section>"])
    readers = [r["reader_id"] for r in scores["readers"]]
    parts.append(f'<p id="reader-kit">Kit {_esc(scores["kit_id"])}: {_esc(len(readers))} reader(s), '
                 f"{_esc(scores['n_images'])} images. {_kit_text(kit_dir, responses_dir, more=True)}</p>")
    parts += [_html_readers(scores), _html_sources(scores, readers), _html_models(scores),
              _html_agreement(scores["agreement"]), _html_timing(scores)]
    return "\n".join(parts + ["</section>"])


def _kit_text(kit_dir: str | None, responses_dir: str | None, more: bool = False) -> str:
    """Where the kit is and where its answers go, as escaped HTML."""
    kit = (f"The kit to send to readers is the folder <code>{_esc(kit_dir.rstrip('/'))}/</code> (open its "
           "index.html; README.txt is for the coordinator). " if kit_dir else "")
    folder = (f"the folder <code>{_esc(responses_dir.rstrip('/'))}/</code> (reader_study.responses_dir)"
              if responses_dir else "the responses folder (reader_study.responses_dir)")
    what = "More answers: put" if more else "Put"
    return (f"{kit}{what} each reader's downloaded CSV file (reader-&lt;ID&gt;-&lt;kit&gt;.csv) into {folder} "
            "and rerun the pipeline to score them.")


def _load_scores(source) -> dict:
    if isinstance(source, (str, Path)):
        path = Path(source)
        path = path / "scores.json" if path.is_dir() else path
    else:
        candidates = [Path(p) for p in source if Path(p).name == "scores.json"]
        if not candidates:
            raise InputError("render_reader_results_html: no scores.json among the given files")
        path = candidates[0]
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: cannot read reader-study scores ({error})") from None


def _html_readers(scores: Mapping) -> str:
    d = scores["definitions"]
    head = ["Reader", "Answered", "TP", "FN", "FP", "TN", "Accuracy"]
    rows = [[_text(r["reader_id"]), _num(r["n_answered"], f"{r['n_answered']} of {r['n_images']}"),
             _num(r["TP"]), _num(r["FN"]), _num(r["FP"]), _num(r["TN"]), _num(r["accuracy"], format_number(r["accuracy"]))]
            for r in scores["readers"]]
    caption = (f"Per reader (layout of Kazuhiro et al., Table 1). Positive = {d['positive']}: TP = {d['TP']}, "
               f"FN = {d['FN']}, FP = {d['FP']}, TN = {d['TN']}; accuracy = {d['accuracy']}.")
    return _table("reader-confusion", head, rows, caption, "Per-reader confusion matrix and accuracy")


def _html_sources(scores: Mapping, readers: list[str]) -> str:
    by = {(r["reader_id"], r["source"]): r for r in scores["sources"]}
    sources = [REAL] + list(scores["models"])
    head = [""] + ["Original dataset" if s == REAL else s for s in sources]
    # Seed 001's Table 2: the real column holds TP/FN, the models' columns FP/TN (positive = real).
    labels = [("Rated real", "pct_rated_real"), ("Rated synthetic", "pct_rated_synthetic")]
    rows = []
    for label, field in labels:
        row = [_text(label)]
        for source in sources:
            values = [by[(r, source)][field] for r in readers]
            row.append(_num(values[0] if len(values) == 1 else None, " / ".join(_pct(v) for v in values),
                            data={f"reader-{i}": v for i, v in enumerate(values)}))
        rows.append(row)
    caption = ("Share of each source's images rated real / synthetic, one entry per reader in the order "
               f"{' / '.join(readers)} (layout of Ungría Hirte et al., Table 2: for the original images these are TP / FN, "
               "for each model FP / TN, positive = real).")
    return _table("reader-sources", head, rows, caption, "Images rated real, by source")


def _html_models(scores: Mapping) -> str:
    head = ["Reader", "Model", "Group", "Accuracy (%)", "Real as real", "Real as synthetic",
            "Synthetic as real", "Synthetic as synthetic"]
    rows = [[_text(r["reader_id"]), _text(r["model"]), _text(r["group"] or "all"),
             _num(r["accuracy"], _pct(r["accuracy"] * 100 if r["accuracy"] is not None else None)),
             _num(r["real_rated_real"]), _num(r["real_rated_synthetic"]), _num(r["synthetic_rated_real"]),
             _num(r["synthetic_rated_synthetic"])] for r in scores["models_table"]]
    caption = ("Per reader and model (layout of Han et al., Table 1): that model's synthetic images against the real "
               "images of its block (all real images when the kit has no per-model blocks); per label group when "
               "the kit has groups. Accuracy near 50 % means the model's images were hard to tell from real ones.")
    return _table("reader-models", head, rows, caption, "Per-model confusion tables")


def _html_agreement(agreement: Mapping) -> str:
    if agreement["method"] is None:
        return f"<h3>Inter-reader agreement</h3>\n<p>{_esc(agreement['note'])}.</p>"
    name = "Cohen's kappa" if agreement["method"] == "cohen" else "Fleiss' kappa"
    rows = [[_text(name), _text(", ".join(agreement["readers"])), _num(agreement["n_images"]),
             _num(agreement["kappa"], format_number(agreement["kappa"])),
             _num(agreement["percent_agreement"], _pct(agreement["percent_agreement"]))]]
    if agreement["method"] == "fleiss":
        rows += [[_text("Cohen's kappa"), _text(f"{p['reader_a']}, {p['reader_b']}"), _num(p["n_images"]),
                  _num(p["kappa"], format_number(p["kappa"])), _num(p["percent_agreement"], _pct(p["percent_agreement"]))]
                 for p in agreement["pairwise"]]
    caption = ("On the images every reader answered; percent agreement = share of images on which all "
               "readers gave the same answer." + (f" {agreement['note']}." if agreement.get("note") else ""))
    return _table("reader-agreement", ["Statistic", "Readers", "Images", "Kappa", "Agreement"], rows, caption,
                  "Inter-reader agreement")


def _html_timing(scores: Mapping) -> str:
    head = ["Reader", "True class", "Images", "Mean response (s)", "Median response (s)", "Mean confidence (1-5)",
            "Timed out"]
    rows = [[_text(r["reader_id"]), _text(r["truth"]), _num(r["n"]),
             _num(r["mean_response_ms"], _fmt(_seconds(r["mean_response_ms"]), 1)),
             _num(r["median_response_ms"], _fmt(_seconds(r["median_response_ms"]), 1)),
             _num(r["mean_confidence"], _fmt(r["mean_confidence"], 1)), _num(r["n_timed_out"])]
            for r in scores["timing"]]
    caption = ("Response time runs from the image appearing to the real/synthetic decision; "
               "'timed out' counts decisions made after the time limit had hidden the image.")
    return _table("reader-timing", head, rows, caption, "Response time and confidence by true class")


def _table(table_id: str, head: list[str], rows: list[list[str]], caption: str, title: str) -> str:
    lines = [f"<h3>{_esc(title)}</h3>", f'<table id="{_esc(table_id)}">', f"<caption>{_esc(caption)}</caption>",
             "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    lines += ["<tr>" + "".join(row) + "</tr>" for row in rows]
    return "\n".join(lines + ["</table>"])


def _text(value: Any) -> str:
    return f"<td>{_esc(value)}</td>"


def _num(value: Any, shown: str | None = None, data: Mapping[str, Any] | None = None) -> str:
    attrs = "" if value is None else f' data-value="{_esc(repr(float(value)))}"'
    attrs += "".join(f' data-{_esc(k)}="{_esc("" if v is None else repr(float(v)))}"' for k, v in (data or {}).items())
    text = shown if shown is not None else ("n/a" if value is None else str(value))
    return f'<td class="num"{attrs}>{_esc(text)}</td>'


def _fmt(value: Any, digits: int) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def _pct(value: Any) -> str:
    """A value already in percent, with the report's one percentage format ("83.3 %")."""
    return "n/a" if value is None else f"{float(value):.1f} %"


def _seconds(ms: Any) -> float | None:
    return None if ms is None else float(ms) / 1000.0


# ---------------------------------------------------------------- on the page


def _reader(data: ReportData, notes: Notes) -> str:
    if data.reader_scores is None:
        return "<p>No reader study.</p>"
    return render_reader_results_html(Path(data.reader_scores), heading=False, responses_dir=data.reader_responses,
                                      kit_dir=data.reader_kit)


SECTIONS = [
    Section("reading", "Reader study", "reader-study", _reader),
]
