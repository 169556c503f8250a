"""HTML sections of the report for the domain feature space, memorization, conditioning and utility.

Each model maps to the records of its training runs (one per seed; a single record is taken as
one run): every number is the mean over runs with the standard deviation over seeds
(``html.spread_cell``). Every text goes through ``html.escape``, images are embedded as base64 PNG,
numeric cells carry their exact value in ``data-value`` (``repr(float)``), and every table or figure
says what was computed on how many images. The tables are separate functions (``domain_html``,
``memorization_html``, ``conditioning_html``, ``utility_html``) so the report places each under the
question it answers; ``SECTIONS`` places the memorization and usefulness ones (the domain table is a
fidelity block, ``fidelity_section.py``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from pipeline_lib.core.io import read_json
from pipeline_lib.evaluation.seeds import spread, spread_of
from pipeline_lib.report.html import (checked_png, count_text as _count, escape as _esc, finite_float as _as_float,
                                      format_number, img_tag, section, spread_cell)
from pipeline_lib.report.inputs import ReportData
from pipeline_lib.report.sections import Notes, Section

_PRDC = ("precision", "recall", "density", "coverage")
Runs = Sequence[Mapping[str, Any]]


def as_runs(value: Mapping[str, Any] | Runs | None) -> list[Mapping[str, Any]]:
    """A model's records as a list of runs (one record = one run)."""
    if value is None:
        return []
    return [value] if isinstance(value, Mapping) else list(value)


def _runs(by_model: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    return {name: as_runs(value) for name, value in by_model.items()}


def _first(runs: Runs) -> Mapping[str, Any]:
    return runs[0] if runs else {}


def render_evaluation_html(*, network: Mapping | None, domain: Mapping[str, Mapping],
                           memorization: Mapping[str, Mapping], galleries: Mapping[str, bytes | Path],
                           conditioning: Mapping[str, Mapping], utility: Mapping[str, Mapping]) -> str:
    """The four report sections as one HTML fragment.

    ``network`` is the domain network's summary (results/domain/network.json);
    ``domain`` maps ``"original"`` and model names to their ``*.domain.json``;
    ``memorization``, ``conditioning`` and ``utility`` map model names to the
    rules' JSON; ``galleries`` maps model names to the gallery PNG (bytes or
    a path). Missing entries are shown as missing, never silently dropped.
    """
    return "\n".join([
        section("Domain feature space", ident="domain-features", body=domain_html(network, domain)),
        section("Memorization audit", ident="memorization-audit", body=memorization_html(memorization, galleries)),
        section("Conditioning accuracy", ident="conditioning-accuracy", body=conditioning_html(conditioning)),
        section("Augmentation utility", ident="augmentation-utility", body=utility_html(utility)),
    ])


def domain_html(network: Mapping | None, domain: Mapping[str, Any]) -> str:
    """The domain network's quality and the domain-feature table (Fréchet distance, PRDC)."""
    return _network_text(network) + _domain_table(_runs(domain))


def memorization_html(memorization: Mapping[str, Any], galleries: Mapping[str, bytes | Path]) -> str:
    runs = _runs(memorization)
    return _memorization_table(runs) + _galleries(galleries, runs)


def conditioning_html(conditioning: Mapping[str, Any]) -> str:
    return _conditioning_table(_runs(conditioning))


def utility_html(utility: Mapping[str, Any]) -> str:
    return _utility_table(_runs(utility))


def evaluation_html_from_files(*, network: Path, domain: Mapping[str, Path], memorization: Mapping[str, Path],
                               galleries: Mapping[str, Path], conditioning: Mapping[str, Path],
                               utility: Mapping[str, Path]) -> str:
    """:func:`render_evaluation_html` on the rules' output files (read now; errors name the file)."""
    return render_evaluation_html(
        network=read_json(network), domain={k: read_json(p) for k, p in domain.items()},
        memorization={k: read_json(p) for k, p in memorization.items()},
        galleries={k: checked_png(p) for k, p in galleries.items()},
        conditioning={k: read_json(p) for k, p in conditioning.items()},
        utility={k: read_json(p) for k, p in utility.items()})


# ----------------------------------------------------------------- domain


def _network_text(net: Mapping | None) -> str:
    if not net:
        return "<p>The domain network's summary is missing.</p>"
    test = net.get("test") or {}
    label = net.get("label_column")
    parts = [
        f"A small convolutional network ({_count(net.get('feature_dim'))} features in its penultimate "
        f"layer) was trained on {_count(net.get('n_train'))} real training slices to predict the slice "
        "position" + (f" and the label '{label}'" if label else "") + ". Its features, not ImageNet "
        "Inception features, give the distances below; they capture what this network learnt to "
        "tell apart and nothing else.",
        f"Quality on {_count(test.get('n_images'))} held-out test slices:",
    ]
    items = []
    position = test.get("position")
    if position:
        items.append(
            f"slice position: mean absolute error {_fmt(position.get('mae'))} of the slice range "
            f"({_fmt(position.get('mae_slices'))} slices; always answering the mean position gives "
            f"{_fmt(position.get('mae_predicting_mean'))}), R² {_fmt(position.get('r2'))}")
    label_result = test.get("label")
    if label_result:
        items.append(f"'{label_result.get('column')}': accuracy {_fmt(label_result.get('accuracy'))} "
                     f"(chance {_fmt(label_result.get('chance'))}, "
                     f"{_count(label_result.get('n_images'))} slices)")
    if not items:
        items.append("no held-out slices were available")
    return (f'<p id="domain-network">{_esc(parts[0])}</p><p>{_esc(parts[1])}</p><ul>'
            + "".join(f"<li>{_esc(i)}</li>" for i in items) + "</ul>")


def _domain_table(domain: Mapping[str, Runs]) -> str:
    if not domain:
        return "<p>No domain metrics.</p>"
    order = (["original"] if "original" in domain else []) + [k for k in domain if k != "original"]
    head = "<th>Set</th><th>Runs</th><th>Domain FD</th>" + "".join(f"<th>{p.capitalize()}</th>" for p in _PRDC)
    head += "<th>Images compared</th><th>Reference images</th>"
    rows, warned, ks, dims, refs = [], False, set(), set(), set()
    for name in order:
        runs = domain[name]
        d = _first(runs)
        few = any(r.get("few_images_warning") for r in runs)
        warned |= few
        ks.add(d.get("nearest_k"))
        dims.add(d.get("feature_dim"))
        refs.add(d.get("n_reference"))
        label = "Original (real test slices)" if name == "original" else name
        cells = [_int_cell(len(runs)), spread_cell(spread_of(runs, "domain_fd"), key="domain_fd", mark="*" if few else "")]
        cells += [spread_cell(spread_of(runs, f"domain_{p}"), key=f"domain_{p}") for p in _PRDC]
        cells += [_int_cell(d.get("n_samples")), _int_cell(d.get("n_reference"))]
        rows.append(f'<tr data-model="{_esc(name)}"><th>{_esc(label)}</th>{"".join(cells)}</tr>')
    caption = (f"Fréchet distance and precision / recall / density / coverage (k = {_join(ks)}) in the "
               f"domain network's {_join(dims)}-dimensional feature space, mean ± std over training seeds; "
               f"each row's images are compared with {_join(refs)} real training slices (image counts per "
               "run in the table). The Original row shows what unseen real slices score.")
    if warned:
        caption += (" * Fewer images than feature dimensions: the Fréchet distance is then strongly "
                    "biased (upwards) and not comparable across sample sizes.")
    return _table("domain-metrics", caption, head, rows)


# ----------------------------------------------------------------- memorization


def _memorization_table(memo: Mapping[str, Runs]) -> str:
    if not memo:
        return "<p>No memorization audit.</p>"
    head = ("<th>Model</th><th>Runs</th><th>Samples</th><th>Likely copies (pixel MSE)</th><th>Pixel threshold</th>"
            "<th>Median nearest MSE, samples</th><th>Median nearest MSE, real test</th>"
            "<th>Likely copies (domain cosine)</th><th>Domain threshold</th>")
    rows, percentiles, counts = [], set(), set()
    for name, runs in memo.items():
        m = _first(runs)
        percentiles.add(m.get("percentile"))
        counts.add((m.get("n_train"), m.get("n_test_reference")))
        cells = [_int_cell(len(runs)), _int_cell(m.get("n_samples")),
                 spread_cell(spread_of(runs, "pixel.fraction_likely_copies"), key="pixel_fraction_likely_copies",
                             percent=True),
                 spread_cell(spread_of(runs, "pixel.threshold"), key="pixel_threshold"),
                 spread_cell(spread_of(runs, "pixel.samples.median"), key="pixel_median_samples"),
                 spread_cell(spread_of(runs, "pixel.reference.median"), key="pixel_median_reference"),
                 spread_cell(spread_of(runs, "domain.fraction_likely_copies"), key="domain_fraction_likely_copies",
                             percent=True),
                 spread_cell(spread_of(runs, "domain.threshold"), key="domain_threshold")]
        rows.append(f'<tr data-model="{_esc(name)}"><th>{_esc(name)}</th>{"".join(cells)}</tr>')
    p = _join(percentiles)
    sizes = "; ".join(f"{_count(t)} training slices, {_count(r)} real test slices" for t, r in sorted(
        counts, key=str))
    caption = (f"For every sample its nearest training slice by per-pixel mean squared error and by cosine "
               f"distance of standardised domain features. A sample is a likely copy when it lies closer "
               f"to a training slice than the {p}th percentile of the distances from real test slices "
               f"(other subjects) to their nearest training slice (the threshold). A model that does not "
               f"copy scores about {p} %; more points to memorized training patients, a privacy leak. "
               f"Mean ± std over training seeds. Reference: {sizes}.")
    return _table("memorization", caption, head, rows)


def _galleries(galleries: Mapping[str, bytes | Path], memo: Mapping[str, Runs]) -> str:
    if not galleries:
        return "<p>No memorization galleries.</p>"
    figs = []
    for name, png in galleries.items():
        m = _first(memo.get(name, []))
        text = (f"{name}: the {_count(m.get('gallery_k'))} samples closest to a training slice (pixel MSE), "
                f"out of {_count(m.get('n_samples'))} samples and {_count(m.get('n_train'))} training "
                "slices; left the sample, right its nearest training slice"
                + (f" (first seed, {_count(m.get('seed'))})." if m.get("seed") is not None else "."))
        figs.append(f'<figure data-model="{_esc(name)}"><figcaption>{_esc(text)}</figcaption>'
                    f"{img_tag(png, f'memorization gallery {name}')}</figure>")
    return "\n".join(figs)


# ----------------------------------------------------------------- conditioning


def _conditioning_table(cond: Mapping[str, Runs]) -> str:
    if not cond:
        return "<p>No conditioning results.</p>"
    conditional = {k: v for k, v in cond.items() if _first(v).get("conditional")}
    others = [k for k, v in cond.items() if not _first(v).get("conditional")]
    parts = []
    if conditional:
        head = ("<th>Model</th><th>Class</th><th>Runs</th><th>Samples</th><th>Accuracy</th><th>Chance</th>"
                "<th>Real test accuracy (ceiling)</th>")
        rows, sizes = [], []
        for name, runs in conditional.items():
            c = _first(runs)
            classes = [e.get("class") for e in c.get("per_class") or []]
            for i, cls in enumerate(classes + ["all classes"]):
                if cls == "all classes":
                    accuracy, n_samples = spread_of(runs, "accuracy"), c.get("n_samples")
                else:
                    accuracy = spread(_class_entry(r, i).get("accuracy") for r in runs)
                    n_samples = (c.get("per_class") or [])[i].get("n_samples")
                cells = [f"<td>{_esc(cls)}</td>", _int_cell(len(runs)), _int_cell(n_samples),
                         spread_cell(accuracy, key="accuracy"), _num("chance", c.get("chance")),
                         spread_cell(spread_of(runs, "real_test_accuracy"), key="real_test_accuracy")]
                rows.append(f'<tr data-model="{_esc(name)}" data-class="{_esc(cls)}">'
                            f'<th>{_esc(name)}</th>{"".join(cells)}</tr>')
            sizes.append(f"{name}: '{c.get('label_column')}', {_count(c.get('n_train'))} training and "
                         f"{_count(c.get('n_test'))} test slices")
        caption = ("A classifier trained on real training slices predicts the class of each sample; accuracy "
                   "is the share predicted as the class the sample was generated for (mean ± std over "
                   "training seeds). Chance = 1 / number of classes; the ceiling is the classifier's accuracy "
                   "on real test slices. " + "; ".join(sizes) + ".")
        parts.append(_table("conditioning", caption, head, rows))
    if others:
        parts.append(f'<p id="not-conditional">Not conditional (no class label to check): '
                     f'{_esc(", ".join(others))}.</p>')
    return "\n".join(parts)


# ----------------------------------------------------------------- utility


def _utility_table(util: Mapping[str, Runs]) -> str:
    if not util:
        return "<p>No augmentation-utility results.</p>"
    head = ("<th>Model</th><th>Task</th><th>Runs</th><th>Real only</th><th>Synthetic only</th>"
            "<th>Real + synthetic</th><th>Gain from synthetic</th><th>Chance</th>"
            "<th>Images (real / synthetic / test)</th><th>Classifier seeds</th><th>Synthetic labels</th>")
    rows, notes = [], []
    for name, runs in util.items():
        u = _first(runs)
        if not u.get("applicable"):
            notes.append(f"{name}: {u.get('note', 'not applicable')}")
            continue
        counts = (f"{_count((u.get('real') or {}).get('n_train_images'))} / "
                  f"{_count((u.get('synthetic') or {}).get('n_train_images'))} / {_count(u.get('n_test'))}")
        cells = [f"<td>{_esc(u.get('task'))}</td>", _int_cell(len(runs))]
        cells += [spread_cell(spread_of(runs, f"{regime}.mean"), key=f"{regime}_accuracy")
                  for regime in ("real", "synthetic", "real+synthetic")]
        cells += [spread_cell(spread_of([{"gain": utility_gain(r)} for r in runs], "gain"), key="utility_gain"),
                  _num("chance", u.get("chance")), f"<td>{_esc(counts)}</td>",
                  _int_cell(len(u.get("seeds") or [])), f"<td>{_esc(u.get('synthetic_labels'))}</td>"]
        rows.append(f'<tr data-model="{_esc(name)}"><th>{_esc(name)}</th>{"".join(cells)}</tr>')
    caption = ("Accuracy on the real test slices of a small classifier trained on real training slices only, "
               "on the model's samples only, and on both, with the same number of steps each (each value "
               "averaged over the classifier seeds, then mean ± std over training seeds). Gain = real + "
               "synthetic minus real only. Conditional models: the task is their condition label. "
               "Unconditional models: slice-position bins, with the synthetic labels predicted by the "
               "domain network.")
    perfect = [name for name, runs in util.items()
               if runs and all(utility_ceiling(r) is not None and utility_ceiling(r) <= 0 for r in runs)]
    if perfect:
        caption += (f" The real-only classifier is already perfect for {', '.join(perfect)}: nothing is left to "
                    "gain, so a gain of 0 there shows no usefulness, and a negative one shows harm.")
    out = _table("utility", caption, head, rows) if rows else ""
    if notes:
        out += "<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>"
    return out


def _class_entry(record: Mapping[str, Any], index: int) -> Mapping[str, Any]:
    entries = record.get("per_class") or []
    return entries[index] if index < len(entries) else {}


def utility_gain(record: Mapping[str, Any]) -> float | None:
    """Accuracy with real + synthetic training slices minus real only (None when not applicable)."""
    if not record.get("applicable"):
        return None
    both = _as_float((record.get("real+synthetic") or {}).get("mean"))
    real = _as_float((record.get("real") or {}).get("mean"))
    return None if both is None or real is None else both - real


def utility_ceiling(record: Mapping[str, Any]) -> float | None:
    """The most a run's utility gain can be: 1 − its real-only accuracy (None when not applicable)."""
    real = _as_float((record.get("real") or {}).get("mean")) if record.get("applicable") else None
    return None if real is None else 1.0 - real


# ----------------------------------------------------------------- helpers


def _table(ident: str, caption: str, head: str, rows: list[str]) -> str:
    return (f'<table id="{_esc(ident)}"><caption>{_esc(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _num(key: str, value: Any) -> str:
    number = _as_float(value)
    attrs = f'data-metric="{_esc(key)}" data-value="{_esc(repr(number if number is not None else math.nan))}"'
    if number is None:
        return f'<td class="num na" {attrs}>n/a</td>'
    return f'<td class="num" {attrs}>{_esc(format_number(number))}</td>'


def _int_cell(value: Any) -> str:
    return f'<td class="num">{_esc(_count(value))}</td>'


def _fmt(value: Any) -> str:
    return format_number(value)




def _join(values: set) -> str:
    shown = sorted({_fmt(v) if not isinstance(v, int) else str(v) for v in values if v is not None})
    return " / ".join(shown) if shown else "n/a"


# ---------------------------------------------------------------- on the page


def _memorization(data: ReportData, notes: Notes) -> str:
    galleries = {model: run.files.gallery for model, run in data.first_runs().items()}
    return memorization_html(data.records("memorization"), galleries)


def _conditioning(data: ReportData, notes: Notes) -> str:
    return conditioning_html(data.records("conditioning"))


def _utility(data: ReportData, notes: Notes) -> str:
    return utility_html(data.records("utility"))


SECTIONS = [
    Section("memorization", "Memorization audit", "memorization-audit", _memorization),
    Section("usefulness", "Conditioning accuracy", "conditioning-accuracy", _conditioning),
    Section("usefulness", "Augmentation utility", "augmentation-utility", _utility),
]
