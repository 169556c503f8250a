"""Domain feature space: the slice CNN learns slice position and a label from real training slices."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline_lib.core.settings import DomainSettings
from pipeline_lib.evaluation import domain_features as dfm
from pipeline_lib.core.errors import InputError

from helpers.threads import single_torch_thread

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(steps=120, batch_size=32, lr=2e-3, width=8, feature_dim=16)


@pytest.fixture(scope="module")
def toy(evaluation_slices):
    return evaluation_slices(n_subjects=16, slices_per_subject=10, size=32, seed=3)


@pytest.fixture(scope="module")
def trained(toy):
    images, table = toy
    with single_torch_thread():
        return dfm.train_domain_network(images, table, DomainSettings(seed=1, **FAST))


def test_network_beats_chance_on_held_out_subjects(toy, trained):
    images, table = toy
    result = dfm.evaluate_domain_network(trained, images, table, "test")
    assert trained.label_column == "scanner"
    assert trained.class_names == ["scanner-A", "scanner-B"]
    assert result["n_images"] == 40
    # Always answering the mean position (0.5) errs by mean |k/9 - 0.5| over k = 0..9 = 25/90.
    assert result["position"]["mae_predicting_mean"] == pytest.approx(25 / 90)
    assert result["position"]["mae"] < 0.5 * result["position"]["mae_predicting_mean"]
    assert result["position"]["r2"] > 0.5
    assert result["label"]["chance"] == 0.5
    assert result["label"]["accuracy"] >= 0.9


def test_training_is_deterministic_for_a_seed(toy, trained):
    images, table = toy
    again = dfm.train_domain_network(images, table, DomainSettings(seed=1, **FAST))
    other = dfm.train_domain_network(images, table, DomainSettings(seed=2, **FAST))
    f1 = dfm.extract_domain_features(trained, images[:20])
    assert np.array_equal(f1, dfm.extract_domain_features(again, images[:20]))
    assert not np.allclose(f1, dfm.extract_domain_features(other, images[:20]))


def test_features_shape_dtype_and_batch_independence(toy, trained):
    images, _ = toy
    full = dfm.extract_domain_features(trained, images, batch_size=256)
    pieces = dfm.extract_domain_features(trained, images, batch_size=7)
    assert full.shape == (len(images), FAST["feature_dim"])
    assert full.dtype == np.float64
    np.testing.assert_allclose(full, pieces, rtol=1e-5, atol=1e-6)
    # Leaky units: no feature is constant over the data set.
    assert np.all(full.std(axis=0) > 0)


def test_save_and_load_round_trip(tmp_path, toy, trained):
    images, _ = toy
    path = tmp_path / "network.pt"
    dfm.save_domain_network(trained, path)
    loaded = dfm.load_domain_network(path)
    assert loaded.label_column == "scanner"
    assert loaded.position_span == (0, 9)
    assert np.array_equal(dfm.extract_domain_features(loaded, images[:10]),
                          dfm.extract_domain_features(trained, images[:10]))


def test_load_rejects_a_file_that_is_not_a_network(tmp_path):
    bad = tmp_path / "network.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="network.pt"):
        dfm.load_domain_network(bad)


def test_label_column_choice():
    table = pd.DataFrame({
        "row": range(6), "subject": list("aabbcc"), "slice_index": [0, 1] * 3,
        "split": ["train"] * 4 + ["test"] * 2,
        "site": ["x"] * 6,                      # one class: not a label to learn
        "scanner": ["A", "A", "B", "B", "A", "B"],
        "sequence": ["t1", "t2", "t1", "t2", "t1", "t1"],
    })
    assert dfm.label_columns(table) == ["site", "scanner", "sequence"]
    assert dfm.choose_label_column(table, None) == "scanner"
    assert dfm.choose_label_column(table, "sequence") == "sequence"
    with pytest.raises(InputError, match="'site' has 1 class"):
        dfm.choose_label_column(table, "site")
    with pytest.raises(InputError, match="no label column 'age'"):
        dfm.choose_label_column(table, "age")
    assert dfm.choose_label_column(table.drop(columns=["scanner", "sequence"]), None) is None
    # Too many classes for an automatic choice (looks like an identifier or a number) ...
    n = dfm.MAX_AUTO_CLASSES + 1
    many = pd.DataFrame({"row": range(n), "subject": [f"s{i}" for i in range(n)], "slice_index": 0,
                         "split": "train", "age": [str(20 + i) for i in range(n)]})
    assert dfm.choose_label_column(many, None) is None
    # ... but it may still be asked for by name.
    assert dfm.choose_label_column(many, "age") == "age"


def test_positions_and_bins():
    table = pd.DataFrame({"slice_index": [5, 6, 12, 19]})
    span = dfm.position_range(table)
    assert span == (5, 19)
    np.testing.assert_allclose(dfm.slice_positions(table, span), [0, 1 / 14, 0.5, 1])
    assert dfm.position_bins(np.array([0.0, 0.33, 0.34, 0.99, 1.0]), 3).tolist() == [0, 0, 1, 2, 2]
    with pytest.raises(InputError, match="two distinct"):
        dfm.slice_positions(table, (7, 7))


def test_position_only_network_when_no_label(toy):
    images, table = toy
    net = dfm.train_domain_network(images, table.drop(columns=["scanner"]),
                                   DomainSettings(seed=0, **{**FAST, "steps": 20}))
    assert net.label_column is None
    assert net.position_span == (0, 9)
    assert "label" not in dfm.predict(net.model, images[:4])


def test_nothing_to_learn_is_an_input_error(toy):
    images, table = toy
    flat = table.drop(columns=["scanner"]).assign(slice_index=3)
    with pytest.raises(InputError, match="nothing to learn"):
        dfm.train_domain_network(images, flat, DomainSettings(**FAST))


def test_domain_network_job_writes_weights_and_held_out_summary(tmp_path, toy):
    images, table = toy
    np.save(tmp_path / "images.npy", images)
    table.to_csv(tmp_path / "slices.tsv", sep="\t", index=False)
    summary = dfm.domain_network_job(tmp_path / "images.npy", tmp_path / "slices.tsv",
                                     out_network=tmp_path / "domain" / "network.pt",
                                     out_summary=tmp_path / "domain" / "network.json",
                                     settings={"seed": 1, **FAST})
    written = json.loads((tmp_path / "domain" / "network.json").read_text())
    assert written["test"]["n_images"] == 40
    assert written["n_train"] == 120
    assert written["test"]["label"]["accuracy"] == summary["test"]["label"]["accuracy"]
    assert written["label_column"] == "scanner"
    assert written["feature_dim"] == FAST["feature_dim"]
    assert dfm.load_domain_network(tmp_path / "domain" / "network.pt").summary["test"] == written["test"]


def test_domain_metrics_known_answers(tmp_path, toy):
    images, table = toy
    np.save(tmp_path / "images.npy", images)
    table.to_csv(tmp_path / "slices.tsv", sep="\t", index=False)
    settings = {"seed": 1, **FAST, "n_reference": None, "nearest_k": 5}
    dfm.domain_network_job(tmp_path / "images.npy", tmp_path / "slices.tsv", out_network=tmp_path / "net.pt",
                           out_summary=tmp_path / "net.json", settings=settings)
    train = images[(table["split"] == "train").to_numpy()]
    args = (tmp_path / "net.pt", tmp_path / "images.npy", tmp_path / "slices.tsv")

    # Samples identical to the reference set: distance 0, every sample and real slice covered.
    np.save(tmp_path / "same.npy", train)
    same = dfm.domain_metrics_job(*args, tmp_path / "same.json", settings=settings, samples=tmp_path / "same.npy")
    assert same["kind"] == "model"
    assert same["n_samples"] == same["n_reference"] == 120
    assert same["domain_fd"] == pytest.approx(0.0, abs=1e-8)
    assert same["domain_precision"] == same["domain_recall"] == same["domain_coverage"] == 1.0
    assert same["few_images_warning"] is False
    assert same["nearest_k"] == 5

    # One mode only (the smallest slices of scanner A): coverage and recall drop, distance grows.
    narrow = train[(table.loc[table["split"] == "train", "slice_index"] <= 1).to_numpy()
                   & (table.loc[table["split"] == "train", "scanner"] == "scanner-A").to_numpy()]
    np.save(tmp_path / "narrow.npy", narrow)
    one_mode = dfm.domain_metrics_job(*args, tmp_path / "n.json", settings=settings,
                                      samples=tmp_path / "narrow.npy")
    assert one_mode["domain_coverage"] < 0.3
    assert one_mode["domain_recall"] < 0.3
    assert one_mode["domain_fd"] > 1.0
    assert one_mode["few_images_warning"] is True          # 12 images, 16 dimensions

    original = dfm.domain_metrics_job(*args, tmp_path / "o.json", settings=settings)
    assert original["kind"] == "original"
    assert original["n_samples"] == 40
    assert 0 < original["domain_fd"] < one_mode["domain_fd"]
    assert json.loads((tmp_path / "o.json").read_text()) == original
