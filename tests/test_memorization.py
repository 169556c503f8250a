"""Memorization audit: copies of training slices are flagged, fresh images only at the percentile's rate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline_lib.core.settings import DomainSettings
from pipeline_lib.evaluation import domain_features as dfm
from pipeline_lib.evaluation import memorization as mem
from pipeline_lib.core.errors import InputError

from helpers.threads import single_torch_thread

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(steps=80, batch_size=32, lr=2e-3, width=8, feature_dim=16)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def iid(evaluation_slices):
    """Independent images (one per subject, random position): train 240, test 160, fresh 160."""
    images, table = evaluation_slices(n_subjects=560, slices_per_subject=1, size=24, seed=5,
                                      test_fraction=0.0, random_positions=True)
    return images[:240], images[240:400], images[400:], table.iloc[:240].reset_index(drop=True)


@pytest.fixture(scope="module")
def features(iid):
    train, test, fresh, table = iid
    with single_torch_thread():
        net = dfm.train_domain_network(train, table, DomainSettings(seed=0, **FAST))
    return lambda x: dfm.extract_domain_features(net, x)


def _loop_nearest(q, r):
    d = np.array([[np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) for b in r] for a in q])
    return d.argmin(axis=1), d.min(axis=1)


def test_nearest_by_mse_matches_pair_loop_across_blocks():
    rng = np.random.default_rng(0)
    refs = rng.random((23, 6, 5)).astype(np.float32)
    queries = rng.random((11, 6, 5)).astype(np.float32)
    queries[3] = refs[17]                      # an exact copy
    queries[4] = refs[2] + 1e-6                # a near copy: the product form alone loses it
    idx, mse = mem.nearest_by_mse(queries, refs, block=4)
    want_idx, want_mse = _loop_nearest(queries, refs)
    assert idx.tolist() == want_idx.tolist()
    np.testing.assert_allclose(mse, want_mse, rtol=1e-12, atol=0)
    assert idx[3] == 17
    assert mse[3] == 0.0
    assert mse[4] == pytest.approx(1e-12, rel=0.05)


def test_nearest_by_mse_ties_go_to_the_lowest_index():
    refs = np.zeros((5, 3, 3))
    refs[1] = refs[3] = 0.5
    idx, _ = mem.nearest_by_mse(np.full((1, 3, 3), 0.5), refs, block=2)
    assert idx.tolist() == [1]


def test_nearest_by_mse_rejects_mismatched_sizes():
    with pytest.raises(InputError, match="cannot be compared"):
        mem.nearest_by_mse(np.zeros((2, 4, 4)), np.zeros((2, 5, 5)))


def test_nearest_by_cosine():
    refs = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    idx, dist = mem.nearest_by_cosine(np.array([[0.0, 5.0], [3.0, 2.9], [0.0, 0.0]]), refs)
    assert idx[:2].tolist() == [1, 2]
    assert dist[0] == pytest.approx(0.0, abs=1e-12)
    assert dist[2] == pytest.approx(1.0)       # a zero vector is similar to nothing


def test_copy_fraction_threshold_is_the_reference_percentile():
    reference = np.arange(1, 101, dtype=float)
    threshold, fraction = mem.copy_fraction(np.array([0.5, 5.0, 5.96, 50.0]), reference, 5)
    assert threshold == pytest.approx(5.95)
    assert fraction == 0.5
    with pytest.raises(InputError, match="percentile"):
        mem.copy_fraction(reference, reference, 100)


def test_fresh_images_are_flagged_only_at_about_the_percentile_rate(iid, features):
    train, test, fresh, _ = iid
    result = mem.audit(fresh, train, test, percentile=5, sample_features=features(fresh),
                       train_features=features(train), test_features=features(test))
    assert result["n_samples"] == 160
    assert result["n_train"] == 240
    assert result["n_test_reference"] == 160
    for space in ("pixel", "domain"):
        assert result[space]["fraction_likely_copies"] <= 0.12, space


def test_copies_of_training_slices_are_flagged(iid, features):
    train, test, fresh, _ = iid
    rng = np.random.default_rng(1)
    n_copies = 48                              # 30 % of 160 samples
    copied = rng.choice(len(train), n_copies, replace=False)
    # Near-copies: a training slice with a little noise (as a memorizing generator would produce).
    copies = np.clip(train[copied] + rng.normal(0, 0.002, train[copied].shape), 0, 1).astype(np.float32)
    samples = np.concatenate([copies, fresh[: 160 - n_copies]])
    result = mem.audit(samples, train, test, percentile=5, sample_features=features(samples),
                       train_features=features(train), test_features=features(test))
    arrays = result["_arrays"]
    # Every copy is flagged, and found next to the slice it copies.
    assert np.all(arrays["pixel_distance"][:n_copies] < result["pixel"]["threshold"])
    assert arrays["pixel_nearest"][:n_copies].tolist() == copied.tolist()
    assert np.all(arrays["domain_distance"][:n_copies] < result["domain"]["threshold"])
    for space in ("pixel", "domain"):
        assert 0.30 <= result[space]["fraction_likely_copies"] <= 0.30 + 0.7 * 0.12, space
    pairs = mem.closest_pairs(arrays["pixel_nearest"], arrays["pixel_distance"], 5)
    assert all(s < n_copies for s, _, _ in pairs)
    assert [d for _, _, d in pairs] == sorted(d for _, _, d in pairs)


def test_features_must_be_given_together(iid, features):
    train, test, fresh, _ = iid
    with pytest.raises(ValueError, match="together"):
        mem.audit(fresh[:5], train, test, sample_features=features(fresh[:5]))


def test_gallery_is_a_png_with_a_row_per_group_of_pairs(tmp_path, iid):
    train, _, fresh, _ = iid
    pairs = [(0, 3, 0.01), (1, 4, 0.02), (2, 5, 0.03)]
    mem.save_gallery(fresh, train, pairs, tmp_path / "a.png", threshold=0.015, pairs_per_row=1)
    mem.save_gallery(fresh, train, pairs[:1], tmp_path / "b.png", pairs_per_row=1)
    mem.save_gallery(fresh, train, pairs, tmp_path / "c.png", threshold=0.015, pairs_per_row=1)
    a, b = (tmp_path / "a.png").read_bytes(), (tmp_path / "b.png").read_bytes()
    assert a.startswith(PNG)
    assert b.startswith(PNG)
    height = lambda data: int.from_bytes(data[20:24], "big")  # noqa: E731  (PNG IHDR height)
    assert height(a) > 2 * height(b)
    assert (tmp_path / "c.png").read_bytes() == a          # same input, same bytes


def test_memorization_job_end_to_end(tmp_path, evaluation_slices):
    images, table = evaluation_slices(n_subjects=12, slices_per_subject=8, size=24, seed=2)
    np.save(tmp_path / "images.npy", images)
    table.to_csv(tmp_path / "slices.tsv", sep="\t", index=False)
    dfm.domain_network_job(tmp_path / "images.npy", tmp_path / "slices.tsv", out_network=tmp_path / "net.pt",
                           out_summary=tmp_path / "net.json", settings={"seed": 0, **FAST})
    train_rows = table.index[table["split"] == "train"].to_numpy()
    samples = np.concatenate([images[train_rows[:6]], images[table["split"] == "test"][:14]])
    np.save(tmp_path / "samples.npy", samples)
    settings = {"percentile": 5, "gallery_k": 4, "n_test_reference": None, "seed": 0, "block": 16}
    result = mem.memorization_job(tmp_path / "samples.npy", tmp_path / "images.npy", tmp_path / "slices.tsv",
                                  tmp_path / "net.pt", out_audit=tmp_path / "m.json",
                                  out_gallery=tmp_path / "m.png", settings=settings)
    written = json.loads((tmp_path / "m.json").read_text())
    assert written == json.loads(json.dumps(result))
    # The 6 exact copies are the 6 closest pairs (MSE 0) and are all flagged.
    assert written["pixel"]["n_likely_copies"] >= 6
    assert written["domain"]["n_likely_copies"] >= 6
    assert len(written["closest_pairs"]) == 4
    for pair in written["closest_pairs"]:
        assert pair["mse"] == 0.0
        assert pair["sample"] < 6
        assert pair["train_row"] == int(train_rows[pair["sample"]])
        assert pair["train_subject"] == table.loc[pair["train_row"], "subject"]
    assert (tmp_path / "m.png").read_bytes().startswith(PNG)
    with pytest.raises(InputError, match="unknown key"):
        mem.memorization_job(tmp_path / "samples.npy", tmp_path / "images.npy", tmp_path / "slices.tsv",
                             tmp_path / "net.pt", out_audit=tmp_path / "x.json", out_gallery=tmp_path / "x.png",
                             settings={"percentil": 5})
