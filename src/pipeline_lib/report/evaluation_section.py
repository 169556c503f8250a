"""HTML sections of the report for the domain feature space, memorization, conditioning and utility.

``render_evaluation_html`` turns the JSON outputs of the evaluation rules into
``<section>`` elements for the self-contained report: every text goes through
``html.escape``, images are embedded as base64 PNG, numeric cells carry their
exact value in ``data-value`` (``repr(float)``, as in ``report.py``), and
every table or figure says what was computed on how many images.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from pipeline_lib.core.io import read_json
from pipeline_lib.report.html import (checked_png, count_text as _count, escape as _esc, finite_float as _as_float,
                                      img_tag, section)

_PRDC = ("precision", "recall", "density", "coverage")


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
        section("Domain feature space", ident="domain-features", body=_network_text(network) + _domain_table(domain)),
        section("Memorization audit", ident="memorization-audit", body=
                 _memorization_table(memorization) + _galleries(galleries, memorization)),
        section("Conditioning accuracy", ident="conditioning-accuracy", body=_conditioning_table(conditioning)),
        section("Augmentation utility", ident="augmentation-utility", body=_utility_table(utility)),
    ])


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


def _domain_table(domain: Mapping[str, Mapping]) -> str:
    if not domain:
        return "<p>No domain metrics.</p>"
    order = (["original"] if "original" in domain else []) + [k for k in domain if k != "original"]
    head = "<th>Set</th><th>Domain FD</th>" + "".join(f"<th>{p.capitalize()}</th>" for p in _PRDC)
    head += "<th>Images compared</th><th>Reference images</th>"
    rows, warned, ks, dims, refs = [], False, set(), set(), set()
    for name in order:
        d = domain[name]
        few = bool(d.get("few_images_warning"))
        warned |= few
        ks.add(d.get("nearest_k"))
        dims.add(d.get("feature_dim"))
        refs.add(d.get("n_reference"))
        label = "Original (real test slices)" if name == "original" else name
        cells = [_num("domain_fd", d.get("domain_fd"), mark="*" if few else "")]
        cells += [_num(f"domain_{p}", d.get(f"domain_{p}")) for p in _PRDC]
        cells += [_int_cell(d.get("n_samples")), _int_cell(d.get("n_reference"))]
        rows.append(f'<tr data-model="{_esc(name)}"><th>{_esc(label)}</th>{"".join(cells)}</tr>')
    caption = (f"Fréchet distance and precision / recall / density / coverage (k = {_join(ks)}) in the "
               f"domain network's {_join(dims)}-dimensional feature space; each row's images are compared "
               f"with {_join(refs)} real training slices (image counts per row in the table). The Original "
               "row shows what unseen real slices score.")
    if warned:
        caption += (" * Fewer images than feature dimensions: the Fréchet distance is then strongly "
                    "biased (upwards) and not comparable across sample sizes.")
    return _table("domain-metrics", caption, head, rows)


# ----------------------------------------------------------------- memorization


def _memorization_table(memo: Mapping[str, Mapping]) -> str:
    if not memo:
        return "<p>No memorization audit.</p>"
    head = ("<th>Model</th><th>Samples</th><th>Likely copies (pixel MSE)</th><th>Pixel threshold</th>"
            "<th>Median nearest MSE (samples / real test)</th><th>Likely copies (domain cosine)</th>"
            "<th>Domain threshold</th>")
    rows, percentiles, counts = [], set(), set()
    for name, m in memo.items():
        percentiles.add(m.get("percentile"))
        counts.add((m.get("n_train"), m.get("n_test_reference")))
        pixel, dom = m.get("pixel") or {}, m.get("domain") or {}
        median = (f"{_fmt((pixel.get('samples') or {}).get('median'))} / "
                  f"{_fmt((pixel.get('reference') or {}).get('median'))}")
        cells = [_int_cell(m.get("n_samples")),
                 _num("pixel_fraction_likely_copies", pixel.get("fraction_likely_copies"), percent=True),
                 _num("pixel_threshold", pixel.get("threshold")),
                 f"<td>{_esc(median)}</td>",
                 _num("domain_fraction_likely_copies", dom.get("fraction_likely_copies"), percent=True),
                 _num("domain_threshold", dom.get("threshold"))]
        rows.append(f'<tr data-model="{_esc(name)}"><th>{_esc(name)}</th>{"".join(cells)}</tr>')
    p = _join(percentiles)
    sizes = "; ".join(f"{_count(t)} training slices, {_count(r)} real test slices" for t, r in sorted(
        counts, key=str))
    caption = (f"For every sample its nearest training slice by per-pixel mean squared error and by cosine "
               f"distance of standardised domain features. A sample is a likely copy when it lies closer "
               f"to a training slice than the {p}th percentile of the distances from real test slices "
               f"(other subjects) to their nearest training slice (the threshold). A model that does not "
               f"copy scores about {p} %; more points to memorized training patients, a privacy leak. "
               f"Reference: {sizes}.")
    return _table("memorization", caption, head, rows)


def _galleries(galleries: Mapping[str, bytes | Path], memo: Mapping[str, Mapping]) -> str:
    if not galleries:
        return "<p>No memorization galleries.</p>"
    figs = []
    for name, png in galleries.items():
        m = memo.get(name, {})
        text = (f"{name}: the {_count(m.get('gallery_k'))} samples closest to a training slice (pixel MSE), "
                f"out of {_count(m.get('n_samples'))} samples and {_count(m.get('n_train'))} training "
                "slices; left the sample, right its nearest training slice.")
        figs.append(f'<figure data-model="{_esc(name)}"><figcaption>{_esc(text)}</figcaption>'
                    f"{img_tag(png, f'memorization gallery {name}')}</figure>")
    return "\n".join(figs)


# ----------------------------------------------------------------- conditioning


def _conditioning_table(cond: Mapping[str, Mapping]) -> str:
    if not cond:
        return "<p>No conditioning results.</p>"
    conditional = {k: v for k, v in cond.items() if v.get("conditional")}
    others = [k for k, v in cond.items() if not v.get("conditional")]
    parts = []
    if conditional:
        head = ("<th>Model</th><th>Class</th><th>Samples</th><th>Accuracy</th><th>Chance</th>"
                "<th>Real test accuracy (ceiling)</th>")
        rows, sizes = [], []
        for name, c in conditional.items():
            entries = list(c.get("per_class") or []) + [
                {"class": "all classes", "n_samples": c.get("n_samples"), "accuracy": c.get("accuracy")}]
            for e in entries:
                cells = [f"<td>{_esc(e.get('class'))}</td>", _int_cell(e.get("n_samples")),
                         _num("accuracy", e.get("accuracy")), _num("chance", c.get("chance")),
                         _num("real_test_accuracy", c.get("real_test_accuracy"))]
                rows.append(f'<tr data-model="{_esc(name)}" data-class="{_esc(e.get("class"))}">'
                            f'<th>{_esc(name)}</th>{"".join(cells)}</tr>')
            sizes.append(f"{name}: '{c.get('label_column')}', {_count(c.get('n_train'))} training and "
                         f"{_count(c.get('n_test'))} test slices")
        caption = ("A classifier trained on real training slices predicts the class of each sample; accuracy "
                   "is the share predicted as the class the sample was generated for. Chance = 1 / number "
                   "of classes; the ceiling is the classifier's accuracy on real test slices. "
                   + "; ".join(sizes) + ".")
        parts.append(_table("conditioning", caption, head, rows))
    if others:
        parts.append(f'<p id="not-conditional">Not conditional (no class label to check): '
                     f'{_esc(", ".join(others))}.</p>')
    return "\n".join(parts)


# ----------------------------------------------------------------- utility


def _utility_table(util: Mapping[str, Mapping]) -> str:
    if not util:
        return "<p>No augmentation-utility results.</p>"
    head = ("<th>Model</th><th>Task</th><th>Real only</th><th>Synthetic only</th><th>Real + synthetic</th>"
            "<th>Chance</th><th>Images (real / synthetic / test)</th><th>Seeds</th><th>Synthetic labels</th>")
    rows, notes = [], []
    for name, u in util.items():
        if not u.get("applicable"):
            notes.append(f"{name}: {u.get('note', 'not applicable')}")
            continue
        counts = (f"{_count((u.get('real') or {}).get('n_train_images'))} / "
                  f"{_count((u.get('synthetic') or {}).get('n_train_images'))} / {_count(u.get('n_test'))}")
        cells = [f"<td>{_esc(u.get('task'))}</td>"]
        cells += [_num(f"{regime}_accuracy", (u.get(regime) or {}).get("mean"),
                       std=(u.get(regime) or {}).get("std")) for regime in ("real", "synthetic", "real+synthetic")]
        cells += [_num("chance", u.get("chance")), f"<td>{_esc(counts)}</td>",
                  _int_cell(len(u.get("seeds") or [])), f"<td>{_esc(u.get('synthetic_labels'))}</td>"]
        rows.append(f'<tr data-model="{_esc(name)}"><th>{_esc(name)}</th>{"".join(cells)}</tr>')
    caption = ("Accuracy (mean ± std over seeds) on the real test slices of a small classifier trained on real "
               "training slices only, on the model's samples only, and on both, with the same number of "
               "steps each. Conditional models: the task is their condition label. Unconditional models: "
               "slice-position bins, with the synthetic labels predicted by the domain network.")
    out = _table("utility", caption, head, rows) if rows else ""
    if notes:
        out += "<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>"
    return out


# ----------------------------------------------------------------- helpers


def _table(ident: str, caption: str, head: str, rows: list[str]) -> str:
    return (f'<table id="{_esc(ident)}"><caption>{_esc(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _num(key: str, value: Any, std: Any = None, percent: bool = False, mark: str = "") -> str:
    number = _as_float(value)
    attrs = f'data-metric="{_esc(key)}" data-value="{_esc(repr(number if number is not None else math.nan))}"'
    if number is None:
        return f'<td class="num na" {attrs}>n/a</td>'
    text = f"{100 * number:.1f} %" if percent else f"{number:.4g}"
    if std is not None and _as_float(std) is not None:
        attrs += f' data-std="{_esc(repr(_as_float(std)))}"'
        text += f" ± {_as_float(std):.2g}"
    return f'<td class="num" {attrs}>{_esc(text + mark)}</td>'


def _int_cell(value: Any) -> str:
    return f'<td class="num">{_esc(_count(value))}</td>'


def _fmt(value: Any) -> str:
    number = _as_float(value)
    return "n/a" if number is None else f"{number:.3g}"




def _join(values: set) -> str:
    shown = sorted({_fmt(v) if not isinstance(v, int) else str(v) for v in values if v is not None})
    return " / ".join(shown) if shown else "n/a"




