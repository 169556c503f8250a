"""One self-contained HTML report of a pipeline run, built to answer "which model is best, and how
sure are we".

The page opens with the answer (``summary_section``: a summary table of model × key metrics, a plot
of every run's values and one sentence that the numbers support). A table of contents follows, then
the sections grouped by the question they answer (fidelity, diversity, memorization, usefulness,
human reading, quality control), one warning per kind, and a provenance footer (date, commit,
configuration, package versions, device).

This module only assembles the page: the report's inputs are read in ``inputs.py`` into
:class:`~pipeline_lib.report.inputs.ReportData`; each ``*_section.py`` module renders its blocks
from it and lists them in its ``SECTIONS`` (a :class:`~pipeline_lib.report.sections.Section`: group,
title, anchor, render function); :data:`SECTIONS` here puts those lists in page order. Everything is
inline (CSS in a <style> element, images as base64 PNG data URIs, compacted to 8-bit grey where they
are grey) so the file can be mailed or archived alone and opens offline; it holds no script and no
external reference. All text from inputs goes through ``html.escape``. Numeric cells carry their
exact value in a ``data-value`` attribute (``repr(float)``, the mean over runs) and the spread in
``data-std`` so tests and tools can read the numbers back without parsing the rounded display text.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd

from pipeline_lib.core import io
from pipeline_lib.core.settings import PreprocessingSettings, RegistrationSettings, SamplingSettings
from pipeline_lib.report import (diversity_section, evaluation_section, fidelity_section, paper_section,
                                 protocol_section, qc_section, reader_section, training_section, volumetric_section)
from pipeline_lib.report.failures_section import failed_datasets_html, failed_run_rows, failed_runs_html
from pipeline_lib.report.html import escape as _esc, section
from pipeline_lib.report.inputs import ReportData, ReportInputs, load_report_data
from pipeline_lib.report.sections import GROUPS, Notes, Section
from pipeline_lib.report.summary_section import key_metric_spreads, summary_html, summary_rows

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
table.protocol-table tr[data-status="differs"] td { background: #fbeee0; }
footer { margin-top: 3em; border-top: 2px solid #9ab; font-size: 0.9em; color: #333; }
footer pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; font-size: 0.85em; }
"""

SYNTHETIC_BANNER = (
    "This cohort consists of synthetic phantoms made by deforming the MNI152 template. "
    "All variation between subjects is simulated, so this report supports no claim "
    "about model quality; it only shows that every stage of the pipeline ran."
)

#: The page, in order: each section module's entries (a new block is one more entry in its module).
SECTIONS: list[Section] = [*paper_section.SECTIONS, *protocol_section.SECTIONS, *fidelity_section.SECTIONS,
                           *volumetric_section.SECTIONS, *diversity_section.SECTIONS, *evaluation_section.SECTIONS, *reader_section.SECTIONS,
                           *qc_section.SECTIONS, *training_section.SECTIONS]


def build_report(out_html: Path, data: ReportData, sections: Sequence[Section] | None = None,
                 summary_tsv: Path | None = None) -> None:
    """Write the report as one self-contained HTML file (atomically); ``summary_tsv`` also gets the
    summary table as a TSV file. A missing or malformed input raises InputError naming it."""
    sections = [s for s in (SECTIONS if sections is None else sections) if s.shown(data)]
    notes = Notes()
    summary = _by_dataset(data, summary_html, notes) if data.grouped else summary_html(data, notes)
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
    parts.append(failed_datasets_html(data.failed_datasets))
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
        from pipeline_lib.report.volumetric_section import volume_summary_rows

        io.write_tsv(summary_tsv, pd.DataFrame(rows + volume_summary_rows(data) + failed_run_rows(data.failed_runs)))


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


def report_job(out_html: Path, inputs: ReportInputs, *, registration: RegistrationSettings | Mapping,
               sampling: SamplingSettings | Mapping, synthetic_cohort: bool, title: str,
               provenance: Mapping | None = None, summary_tsv: Path | None = None,
               preprocessing: PreprocessingSettings | Mapping | None = None,
               published: str | Path | None = None, protocol_notes: Mapping[str, str] | None = None) -> None:
    """The report rule: gather every stage's outputs into the report."""
    with tempfile.TemporaryDirectory() as tmp:
        data = load_report_data(inputs, registration=registration, sampling=sampling,
                                synthetic_cohort=synthetic_cohort, title=title, provenance=provenance,
                                workdir=Path(tmp), preprocessing=preprocessing, published=published,
                                protocol_notes=protocol_notes)
        build_report(Path(out_html), data, summary_tsv=summary_tsv)
