"""The evaluation report sections: every number present, counts stated, all text escaped."""

from __future__ import annotations

import base64
import json
import re

import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.report.evaluation_section import evaluation_html_from_files, render_evaluation_html

# A 1×1 PNG.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==")

NETWORK = {"feature_dim": 64, "n_train": 135, "label_column": "scanner",
           "test": {"n_images": 45, "position": {"mae": 0.02, "mae_slices": 0.3, "r2": 0.99,
                                                 "mae_predicting_mean": 0.27},
                    "label": {"column": "scanner", "accuracy": 1.0, "chance": 0.5, "n_images": 45}}}
DOMAIN = {
    "original": {"domain_fd": 1.5, "domain_precision": 0.9, "domain_recall": 0.8, "domain_density": 1.0,
                 "domain_coverage": 0.95, "nearest_k": 5, "n_samples": 45, "n_reference": 135,
                 "feature_dim": 64, "few_images_warning": True},
    "<b>evil</b>": {"domain_fd": 12.25, "domain_precision": 0.5, "domain_recall": 0.25, "domain_density": 0.4,
                    "domain_coverage": 0.3, "nearest_k": 5, "n_samples": 500, "n_reference": 135,
                    "feature_dim": 64, "few_images_warning": False},
}
MEMO = {"<b>evil</b>": {"percentile": 5.0, "n_samples": 500, "n_train": 135, "n_test_reference": 45,
                        "gallery_k": 8,
                        "pixel": {"threshold": 0.004, "fraction_likely_copies": 0.3,
                                  "samples": {"median": 0.01}, "reference": {"median": 0.02}},
                        "domain": {"threshold": 0.1, "fraction_likely_copies": 0.07}}}
COND = {"cvae": {"conditional": True, "accuracy": 0.75, "chance": 0.5, "real_test_accuracy": 0.98,
                 "per_class": [{"class": "scanner-A", "n_samples": 250, "accuracy": 0.9},
                               {"class": "scanner-<B>", "n_samples": 250, "accuracy": 0.6}],
                 "n_samples": 500, "n_train": 135, "n_test": 45, "label_column": "scanner"},
        "vae": {"conditional": False, "note": "not conditional"}}
UTIL = {"vae": {"applicable": True, "task": "classify slice position into 3 equal-width bins",
                "real": {"mean": 0.8, "std": 0.05, "n_train_images": 135},
                "synthetic": {"mean": 0.6, "std": 0.1, "n_train_images": 500},
                "real+synthetic": {"mean": 0.82, "std": 0.02, "n_train_images": 635},
                "chance": 1 / 3, "n_test": 45, "seeds": [0, 1, 2],
                "synthetic_labels": "pseudo-labels & <predicted>"},
        "flat": {"applicable": False, "note": "no slice-position variation"}}


@pytest.fixture
def page():
    return render_evaluation_html(network=NETWORK, domain=DOMAIN, memorization=MEMO,
                                  galleries={"<b>evil</b>": PNG}, conditioning=COND, utility=UTIL)


def _cell(page, table, model, metric):
    row = re.search(rf'<table id="{table}".*?</table>', page, re.S).group(0)
    pattern = rf'<tr data-model="{re.escape(model)}"[^>]*>.*?data-metric="{re.escape(metric)}" data-value="([^"]+)"'
    return float(re.search(pattern, row, re.S).group(1))


def test_every_section_and_number_is_present(page):
    for ident in ("domain-features", "memorization-audit", "conditioning-accuracy", "augmentation-utility"):
        assert f'<section id="{ident}">' in page
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    assert _cell(page, "domain-metrics", "original", "domain_fd") == 1.5
    assert _cell(page, "domain-metrics", "&lt;b&gt;evil&lt;/b&gt;", "domain_coverage") == 0.3
    assert _cell(page, "memorization", "&lt;b&gt;evil&lt;/b&gt;", "pixel_fraction_likely_copies") == 0.3
    assert "30.0 %" in page
    assert "7.0 %" in page
    assert _cell(page, "conditioning", "cvae", "real_test_accuracy") == 0.98
    assert _cell(page, "utility", "vae", "real+synthetic_accuracy") == 0.82
    assert _cell(page, "utility", "vae", "utility_gain") == pytest.approx(0.02)


def test_several_runs_give_mean_and_spread_over_seeds():
    second = {**DOMAIN["<b>evil</b>"], "domain_fd": 14.25}
    html = render_evaluation_html(network=NETWORK, domain={"m": [DOMAIN["<b>evil</b>"], second]}, memorization={},
                                  galleries={}, conditioning={}, utility={})
    cell = re.search(r'<td class="num"[^>]*data-metric="domain_fd"[^>]*>([^<]*)</td>', html)
    assert "13.2 ± 1.4" == cell.group(1)  # mean 13.25, std over the two seeds 1.414
    assert 'data-n="2"' in cell.group(0)


def test_counts_and_feature_space_quality_are_stated(page):
    assert "trained on 135 real training slices" in page
    assert "45 held-out test slices" in page
    assert "accuracy 1 (chance 0.5" in page
    assert "(k = 5)" in page
    assert "64-dimensional" in page
    assert "compared with 135 real training slices" in page
    assert "strongly biased" in page                       # the original row has fewer images than dims
    assert "5th percentile" in page
    assert "135 training slices, 45 real test slices" in page
    assert "the 8 samples closest to a training slice (pixel MSE), out of 500 samples and 135" in page
    assert "135 / 500 / 45" in page
    assert "Not conditional (no class label to check): vae." in page
    assert "flat: no slice-position variation" in page


def test_all_text_is_escaped_and_gallery_embedded(page):
    assert "<b>" not in page
    assert "scanner-&lt;B&gt;" in page
    assert "&amp; &lt;predicted&gt;" in page
    assert "data:image/png;base64," + base64.b64encode(PNG).decode() in page
    assert "<script" not in page


def test_missing_values_show_as_na():
    html = render_evaluation_html(network=None, domain={"m": {"domain_fd": float("nan")}}, memorization={},
                                  galleries={}, conditioning={}, utility={})
    assert "summary is missing" in html
    assert "n/a" in html
    assert "No memorization audit." in html


def test_from_files_reads_json_and_rejects_non_png(tmp_path):
    def dump(name, obj):
        (tmp_path / name).write_text(json.dumps(obj))
        return tmp_path / name

    (tmp_path / "g.png").write_bytes(PNG)
    kwargs = dict(network=dump("n.json", NETWORK), domain={"original": dump("o.json", DOMAIN["original"])},
                  memorization={"vae": dump("m.json", MEMO["<b>evil</b>"])}, galleries={"vae": tmp_path / "g.png"},
                  conditioning={"vae": dump("c.json", COND["vae"])}, utility={"vae": dump("u.json", UTIL["vae"])})
    assert 'data-model="vae"' in evaluation_html_from_files(**kwargs)
    (tmp_path / "bad.png").write_text("not a png")
    with pytest.raises(InputError, match="bad.png: not a PNG"):
        evaluation_html_from_files(**{**kwargs, "galleries": {"vae": tmp_path / "bad.png"}})
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(InputError, match="broken.json: cannot read as JSON"):
        evaluation_html_from_files(**{**kwargs, "network": tmp_path / "broken.json"})
