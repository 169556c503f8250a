"""KID, precision/recall/density/coverage, the distribution-metrics jobs and their report section."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from pipeline_lib.evaluation import distribution as dm
from pipeline_lib.report.distribution_section import render_distribution_metrics_html
from pipeline_lib.core.errors import InputError
from pipeline_lib.evaluation.fid import save_feature_file


def _blobs(rng, n, d, center=0.0, scale=1.0):
    return rng.normal(center, scale, size=(n, d))


# -- KID ---------------------------------------------------------------------------
def test_mmd2_unbiased_matches_its_definition():
    rng = np.random.default_rng(0)
    x, y = rng.random((6, 4)), rng.random((5, 4)) + 0.2
    k = lambda a, b: (a @ b / 4 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(a, b) for a in x for b in y) / 30
    assert dm.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shifted_one():
    rng = np.random.default_rng(1)
    real = _blobs(rng, 400, 32)
    same = dm.kid(_blobs(rng, 400, 32), real, n_subsets=20, subset_size=100, seed=0)
    shifted = dm.kid(_blobs(rng, 400, 32, center=0.5), real, n_subsets=20, subset_size=100, seed=0)
    assert abs(same["mean"]) < 3 * same["std"] / np.sqrt(20) + 1e-3
    assert shifted["mean"] > 0
    assert shifted["mean"] > 20 * abs(same["mean"])
    assert shifted["mean"] - 3 * shifted["std"] > 0
    assert same["subset_size"] == 100
    assert same["n_subsets"] == 20
    # Subsets never exceed the smaller set.
    assert dm.kid(real[:30], real, n_subsets=2, subset_size=1000)["subset_size"] == 30


# -- PRDC --------------------------------------------------------------------------
def _naive_prdc(real, fake, k):
    """Naeem et al.'s definitions on full distance matrices (the authors' reference algorithm)."""
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=2)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=2)
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=2)
    r_real = np.sort(d_rr, axis=1)[:, k]  # k+1-th smallest including itself
    r_fake = np.sort(d_ff, axis=1)[:, k]
    return {
        "precision": (d_rf < r_real[:, None]).any(axis=0).mean(),
        "recall": (d_rf < r_fake[None, :]).any(axis=1).mean(),
        "density": (1 / k) * (d_rf < r_real[:, None]).sum(axis=0).mean(),
        "coverage": (d_rf.min(axis=1) < r_real).mean(),
    }


@pytest.mark.parametrize("block_elements", [7, 1 << 23])
def test_prdc_matches_the_definitions_with_any_block_size(block_elements):
    rng = np.random.default_rng(2)
    real, fake = _blobs(rng, 60, 5), _blobs(rng, 45, 5, center=0.4, scale=1.3)
    ours = dm.prdc(real, fake, nearest_k=5, block_elements=block_elements)
    for key, value in _naive_prdc(real, fake, 5).items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key
    assert ours["n_real"] == 60
    assert ours["n_samples"] == 45
    assert ours["nearest_k"] == 5


@pytest.mark.parametrize("dim, block_elements", [(16, 1 << 23), (2048, 500)])
def test_identical_sets_have_perfect_prdc(dim, block_elements):
    rng = np.random.default_rng(3)
    real = np.maximum(_blobs(rng, 80, dim), 0.0) * 3.0  # Inception-like: non-negative, large norms
    out = dm.prdc(real, real[rng.permutation(80)], nearest_k=5, block_elements=block_elements)
    assert out["precision"] == 1.0
    assert out["recall"] == 1.0
    assert out["coverage"] == 1.0
    assert out["density"] == 1.0  # each real ball holds itself and its k − 1 nearer neighbours


def test_missing_mode_lowers_coverage_and_recall_not_precision():
    rng = np.random.default_rng(4)
    real = np.concatenate([_blobs(rng, 100, 8, 0.0), _blobs(rng, 100, 8, 12.0)])
    one_mode = _blobs(rng, 200, 8, 0.0)
    both = np.concatenate([_blobs(rng, 100, 8, 0.0), _blobs(rng, 100, 8, 12.0)])
    partial, full = dm.prdc(real, one_mode), dm.prdc(real, both)
    assert partial["coverage"] <= 0.55
    assert full["coverage"] >= 0.9
    assert partial["recall"] <= 0.55
    assert full["recall"] >= 0.9
    assert partial["precision"] >= 0.9


def test_prdc_needs_more_than_k_points():
    with pytest.raises(InputError, match="more than k = 5"):
        dm.prdc(np.zeros((5, 3)), np.ones((10, 3)))


# -- jobs ------------------------------------------------------------------------------
@pytest.fixture
def feature_files(tmp_path):
    """Features standing in for Inception's: two classes, a conditional model that gets class B wrong."""
    rng = np.random.default_rng(5)
    d = 12
    table = pd.DataFrame({"row": range(160), "subject": ["s"] * 160,
                          "split": ["train"] * 120 + ["test"] * 40,
                          "scanner": (["A", "B"] * 80)})
    table.to_csv(tmp_path / "slices.tsv", sep="\t", index=False)
    centers = np.where(table["scanner"] == "A", 0.0, 3.0)
    real = rng.normal(size=(160, d)) + centers[:, None]
    train_rows, test_rows = np.arange(120), np.arange(120, 160)
    save_feature_file(tmp_path / "real_train.npz", real[train_rows], rows=train_rows)
    save_feature_file(tmp_path / "real_test.npz", real[test_rows], rows=test_rows)
    samples = rng.normal(size=(60, d))                      # every sample looks like class A
    save_feature_file(tmp_path / "model.npz", samples)
    pd.DataFrame({"sample": range(60), "label": ["A"] * 30 + ["B"] * 30}).to_csv(
        tmp_path / "labels.tsv", sep="\t", index=False)
    return tmp_path


EVALUATION = {"fid": {"repeats": 4, "subset_size": 20}, "kid": {"n_subsets": 5, "subset_size": 20},
              "prdc": {"nearest_k": 3}}


def test_model_job_writes_fid_kid_prdc_and_per_class_fid(feature_files):
    p = feature_files
    out = dm.model_distribution_job(p / "model.npz", p / "real_train.npz", p / "slices.tsv", p / "labels.tsv",
                                    p / "m.distribution.json", model="cvae", condition_on="scanner",
                                    evaluation=EVALUATION)
    saved = json.loads((p / "m.distribution.json").read_text())
    assert saved["fid"]["values"] == out["fid"]["values"]
    assert len(saved["fid"]["values"]) == 4
    assert saved["n_samples"] == 60
    assert saved["n_real"] == 120
    assert saved["feature_dim"] == 12
    assert set(saved["kid"]) >= {"mean", "std"}
    assert saved["prdc"]["nearest_k"] == 3
    classes = saved["fid_per_class"]["classes"]
    assert saved["fid_per_class"]["column"] == "scanner"
    assert set(classes) == {"A", "B"}
    assert classes["B"]["mean"] > 5 * classes["A"]["mean"]  # class B samples miss their class
    assert classes["A"]["subset_size"] == 20
    assert classes["A"]["n_real"] == 60
    assert not saved["warning"]  # 20 images ≥ 12 dimensions


def test_unconditional_model_has_no_per_class_fid(feature_files):
    p = feature_files
    pd.DataFrame({"sample": range(60), "label": [""] * 60}).to_csv(p / "plain.tsv", sep="\t", index=False)
    out = dm.model_distribution_job(p / "model.npz", p / "real_train.npz", p / "slices.tsv", p / "plain.tsv",
                                    p / "u.json", model="vae", condition_on=None, evaluation=EVALUATION)
    assert out["fid_per_class"] is None


def test_original_row_compares_test_with_train(feature_files):
    p = feature_files
    out = dm.original_distribution_job(p / "real_test.npz", p / "real_train.npz", p / "slices.tsv",
                                       p / "original.json", class_columns=["scanner"], evaluation=EVALUATION)
    assert out["kind"] == "original"
    assert out["n_samples"] == 40
    assert set(out["fid_per_class"]["classes"]) == {"A", "B"}
    assert out["prdc"]["coverage"] > 0.5
    assert out["prdc"]["precision"] > 0.7


def test_jobs_name_the_file_with_the_problem(feature_files):
    p = feature_files
    pd.DataFrame({"sample": range(5), "label": ["A"] * 5}).to_csv(p / "short.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="short.tsv"):
        dm.model_distribution_job(p / "model.npz", p / "real_train.npz", p / "slices.tsv", p / "short.tsv",
                                  p / "x.json", model="m", condition_on="scanner", evaluation=EVALUATION)
    with pytest.raises(InputError, match="slices.tsv: no column 'site'"):
        dm.original_distribution_job(p / "real_test.npz", p / "real_train.npz", p / "slices.tsv", p / "y.json",
                                     class_columns=["site"], evaluation=EVALUATION)
    with pytest.raises(InputError, match=r"evaluation\.kid\.subsets: unknown key"):
        dm.original_distribution_job(p / "real_test.npz", p / "real_train.npz", p / "slices.tsv", p / "z.json",
                                     evaluation={"kid": {"subsets": 3}})


def test_fresh_samples_use_one_block_per_repeat_including_per_class(feature_files):
    p = feature_files
    rng = np.random.default_rng(6)
    arrays = dict(np.load(p / "model.npz"))
    blocks = [rng.normal(size=(60, 12)) - 1.0 * r for r in range(4)]  # sets drifting away from the real data
    save_feature_file(p / "blocks.npz", arrays["features"], block_features=np.concatenate(blocks),
                      block_index=np.repeat(np.arange(4), 60))
    fresh_cfg = {**EVALUATION, "fid": {**EVALUATION["fid"], "fresh_samples": True}}
    shared = dm.model_distribution_job(p / "blocks.npz", p / "real_train.npz", p / "slices.tsv", p / "labels.tsv",
                                       p / "shared.json", model="cvae", condition_on="scanner", evaluation=EVALUATION)
    fresh = dm.model_distribution_job(p / "blocks.npz", p / "real_train.npz", p / "slices.tsv", p / "labels.tsv",
                                      p / "fresh.json", model="cvae", condition_on="scanner", evaluation=fresh_cfg)
    assert fresh["fid"]["fresh_samples"]
    assert not shared["fid"]["fresh_samples"]
    # the blocks drift away from the real data, so the fresh FIDs grow repeat by repeat
    assert np.all(np.diff(fresh["fid"]["values"]) > 0)
    assert fresh["fid"]["std"] > shared["fid"]["std"]
    class_a = fresh["fid_per_class"]["classes"]["A"]
    assert class_a["fresh_samples"]
    assert np.all(np.diff(class_a["values"]) > 0)
    assert fresh["kid"] == shared["kid"]
    assert fresh["fid_all"] == shared["fid_all"]  # the main set
    assert "fresh samples per repeat</small>" in render_distribution_metrics_html({"cvae": fresh}, None)
    assert "fresh samples per repeat</small>" not in render_distribution_metrics_html({"cvae": shared}, None)
    with pytest.raises(InputError, match="model.npz: no sample blocks"):
        dm.model_distribution_job(p / "model.npz", p / "real_train.npz", p / "slices.tsv", p / "labels.tsv",
                                  p / "x.json", model="cvae", condition_on="scanner", evaluation=fresh_cfg)


# -- report section --------------------------------------------------------------------------
def test_report_section_has_table_boxplots_bars_and_escapes_text(feature_files):
    p = feature_files
    evaluation = {**EVALUATION, "fid": {"repeats": 3, "subset_size": 8}}  # 8 < 12 dims: warning
    model = dm.model_distribution_job(p / "model.npz", p / "real_train.npz", p / "slices.tsv", p / "labels.tsv",
                                      p / "m.json", model="cvae", condition_on="scanner", evaluation=evaluation)
    original = dm.original_distribution_job(p / "real_test.npz", p / "real_train.npz", p / "slices.tsv",
                                            p / "o.json", evaluation=evaluation)
    page = render_distribution_metrics_html({"<cvae>": model}, original)
    assert "&lt;cvae&gt;" in page
    assert "<cvae>" not in page
    assert 'id="distribution-metrics"' in page
    values = [float(v) for v in re.findall(r'data-value="([^"]+)"', page)]
    assert model["fid"]["mean"] in values
    assert original["fid"]["mean"] in values
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 1  # the FID boxplot (per-class FID is a table)
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "3 subsets of 8" in page  # the figure says how many images
    assert 'class="per-class" data-model="&lt;cvae&gt;"' in page
    # One small-sample warning naming every affected set, not one per row.
    assert page.count("Small-sample warning") == 1
    assert "fewer images per set (8)" in page
    assert "Affected: &lt;cvae&gt;, &lt;cvae&gt; (A), &lt;cvae&gt; (B), original" in page
    noted = []
    quiet = render_distribution_metrics_html({"<cvae>": [model, model]}, original,
                                             notes=lambda kind, message, item: noted.append((kind, item)))
    assert "Small-sample warning" not in quiet
    assert ("small-sample FID", "original") in noted
    assert 'data-n="2"' in quiet  # two runs of the model: mean ± std over them
    assert "<script" not in page
    assert "No distribution metrics" in render_distribution_metrics_html({})


def test_a_set_of_identical_images_keeps_prdc_memory_within_its_blocks():
    """Blank slices give identical features: every pair ties with its radius and is recomputed
    exactly. The ties are gathered a chunk at a time (gathering 4 M pairs of 64-d rows at once
    took 2 GB), and the strict ball membership scores every identical point outside."""
    import tracemalloc

    blank = np.zeros((2000, 64))
    tracemalloc.start()
    out = dm.prdc(blank, blank.copy(), nearest_k=5)
    peak_mb = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    assert peak_mb < 600, f"PRDC of 2,000 identical points peaked at {peak_mb:.0f} MB"
    small = dm.prdc(blank[:50], blank[:40], nearest_k=5)
    for key, value in _naive_prdc(blank[:50], blank[:40], 5).items():
        assert small[key] == value, key
    assert [out[key] for key in ("precision", "recall", "density", "coverage")] == [0.0, 0.0, 0.0, 0.0]
