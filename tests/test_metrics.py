"""Metrics of Ungría Hirte et al. checked against direct per-pair loops and analytic values."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_lib.evaluation import pixel_metrics as metrics
from pipeline_lib.core.errors import InputError

RTOL = 1e-9


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return float(np.mean((a - b) ** 2))


def _loop_ds(samples, originals) -> float:
    return float(np.mean([[_mse(s, o) for o in originals] for s in samples]))


def _loop_isd(samples) -> float:
    n = len(samples)
    return float(np.mean([_mse(samples[i], samples[j]) for i in range(n) for j in range(n) if i != j]))


def _loop_min_isd(samples) -> float:
    n = len(samples)
    return float(np.mean([min(_mse(samples[i], samples[j]) for j in range(n) if j != i) for i in range(n)]))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def samples(rng):
    return rng.random((30, 8, 8))


@pytest.fixture
def originals(rng):
    # Different mean and spread from the samples so DS differs from ISD.
    return np.clip(0.2 + 0.5 * rng.random((23, 8, 8)), 0, 1)


def test_dataset_similarity_matches_pair_loop(samples, originals):
    got = metrics.dataset_similarity(samples, originals)
    assert got == pytest.approx(_loop_ds(samples, originals), rel=RTOL)


def test_dataset_similarity_float32_input_computed_in_float64(samples, originals):
    s32, o32 = samples.astype(np.float32), originals.astype(np.float32)
    got = metrics.dataset_similarity(s32, o32)
    assert got == pytest.approx(_loop_ds(s32, o32), rel=RTOL)


def test_isd_matches_pair_loop(samples):
    assert metrics.intra_sample_diversity(samples) == pytest.approx(_loop_isd(samples), rel=RTOL)


def test_identical_sets_ds_matches_loop_and_relates_to_isd(samples):
    # DS of a set with itself averages over all N² pairs, the N zero pairs i = j
    # included, so it equals ISD * (N - 1) / N.
    n = len(samples)
    ds = metrics.dataset_similarity(samples, samples)
    assert ds == pytest.approx(_loop_ds(samples, samples), rel=RTOL)
    assert ds == pytest.approx(metrics.intra_sample_diversity(samples) * (n - 1) / n, rel=RTOL)


def test_streaming_blocks_agree_with_loop(rng, monkeypatch):
    # Force several blocks so the streamed reductions and block seams are exercised.
    monkeypatch.setattr(metrics, "_BLOCK", 7)
    a = rng.random((30, 6, 5))
    b = rng.random((17, 6, 5))
    assert metrics.dataset_similarity(a, b) == pytest.approx(_loop_ds(a, b), rel=RTOL)
    assert metrics.intra_sample_diversity(a) == pytest.approx(_loop_isd(a), rel=RTOL)


@pytest.mark.parametrize("block", [1, 4, 7, 256])
def test_minimum_isd_matches_loop_for_any_block(samples, block):
    assert metrics.minimum_isd(samples, block=block) == pytest.approx(_loop_min_isd(samples), rel=RTOL)


def test_minimum_isd_finds_planted_near_duplicate(rng):
    base = rng.random((30, 8, 8)) * 0.9
    # Sample 29 is sample 3 plus a tiny perturbation: their mutual MSE is tiny,
    # far below any other pair, and must come out exactly despite cancellation
    # in the ||a||² + ||b||² − 2ab form.
    delta = 1e-4 * rng.random((8, 8))
    base[29] = base[3] + delta
    expected_pair = float(np.mean(delta**2))
    loop = _loop_min_isd(base)
    got = metrics.minimum_isd(base, block=8)
    assert got == pytest.approx(loop, rel=RTOL)

    # Without the planted pair the metric is much larger: the duplicate pulls it down.
    others = np.delete(base, 29, axis=0)
    per_sample_without = metrics.minimum_isd(others)
    assert got < per_sample_without
    # The two duplicated samples each contribute exactly the planted MSE.
    n = len(base)
    rest = (loop * n - 2 * expected_pair) / (n - 2)
    assert rest > 1000 * expected_pair


def test_minimum_isd_exact_duplicates_give_zero_contribution(rng):
    a = rng.random((10, 5, 5))
    a[7] = a[2]
    got = metrics.minimum_isd(a)
    assert got == pytest.approx(_loop_min_isd(a), rel=RTOL)
    a_all_same = np.repeat(a[:1], 5, axis=0)
    assert metrics.minimum_isd(a_all_same) == 0.0
    assert metrics.intra_sample_diversity(a_all_same) == 0.0


def test_laplacian_variance_constant_image_is_zero():
    images = np.full((3, 16, 16), 0.37)
    assert np.all(metrics.laplacian_variance(images) == 0.0)


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_laplacian_variance_checkerboard_analytic(scale):
    # Checkerboard of 0/1: with reflect-101 borders every pixel's four
    # neighbours have the other colour, so the Laplacian is ±4·scale on a
    # half/half split: mean 0, variance 16·scale².
    yy, xx = np.mgrid[0:16, 0:16]
    board = ((yy + xx) % 2).astype(np.float64)
    got = metrics.laplacian_variance(board[None], scale=scale)
    assert got.shape == (1,)
    assert got[0] == pytest.approx(16.0 * scale**2, rel=1e-12)


def test_laplacian_variance_per_image_and_float32(rng):
    yy, xx = np.mgrid[0:12, 0:12]
    board = ((yy + xx) % 2).astype(np.float32)
    images = np.stack([np.full((12, 12), 0.5, np.float32), board, 0.5 * board])
    got = metrics.laplacian_variance(images)
    expected = 16.0 * 255.0**2 * np.array([0.0, 1.0, 0.25])
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_reconstruction_mse_per_image(rng):
    a = rng.random((5, 6, 6))
    b = rng.random((5, 6, 6))
    per = np.array([_mse(x, y) for x, y in zip(a, b)])
    mean, std = metrics.reconstruction_mse(a, b)
    assert mean == pytest.approx(per.mean(), rel=RTOL)
    assert std == pytest.approx(per.std(), rel=RTOL)


def test_reconstruction_pixel_spread_is_over_every_pixel(rng):
    """The paper's "0.004 ± 0.02": the spread of the squared error over pixels, not over images."""
    a = rng.random((4, 5, 7))
    b = rng.random((4, 5, 7))
    out = metrics.reconstruction_metrics(a, b, 255.0)
    squared = (a - b) ** 2
    assert out["recon_mse_mean"] == pytest.approx(squared.mean(), rel=RTOL)
    assert out["recon_mse_pixel_std"] == pytest.approx(squared.std(), rel=1e-9)
    # one wrong pixel in a perfect reconstruction: tiny per-image spread, large pixel spread
    c = a.copy()
    c[0, 0, 0] = 1.0 - a[0, 0, 0]
    sparse = metrics.reconstruction_metrics(a, c, 255.0)
    assert sparse["recon_mse_pixel_std"] == pytest.approx(((a - c) ** 2).std(), rel=1e-9)
    assert sparse["recon_mse_pixel_std"] > 4 * sparse["recon_mse_std"]


def test_sample_metrics_keys_and_values(samples, originals):
    out = metrics.sample_metrics(samples, originals, sharpness_scale=1.0)
    assert out["dataset_similarity"] == pytest.approx(_loop_ds(samples, originals), rel=RTOL)
    assert out["isd"] == pytest.approx(_loop_isd(samples), rel=RTOL)
    assert out["min_isd"] == pytest.approx(_loop_min_isd(samples), rel=RTOL)
    sharp = metrics.laplacian_variance(samples, scale=1.0)
    assert out["sharpness_mean"] == pytest.approx(sharp.mean())
    assert out["sharpness_std"] == pytest.approx(sharp.std())
    assert out["n_samples"] == 30
    assert out["n_originals"] == 23
    assert out["sharpness_scale"] == 1.0
    assert all(isinstance(v, (int, float)) for v in out.values())


def test_reconstruction_metrics(originals, rng):
    recon = np.clip(originals + 0.01 * rng.standard_normal(originals.shape), 0, 1)
    out = metrics.reconstruction_metrics(originals, recon, 255.0)
    assert set(out) >= {
        "recon_mse_mean",
        "recon_mse_std",
        "recon_mse_pixel_std",
        "recon_sharpness_mean",
        "recon_sharpness_std",
        "original_sharpness_mean",
        "original_sharpness_std",
    }
    assert 0 < out["recon_mse_mean"] < 1e-3
    assert out["original_sharpness_mean"] == pytest.approx(metrics.laplacian_variance(originals).mean())


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.full((3, 4, 4), 1.5), r"\[0, 1\]"),
        (np.full((3, 4, 4), -0.1), r"\[0, 1\]"),
        (np.zeros((4, 4)), r"\(N, H, W\)"),
        (np.zeros((2, 1, 4, 4)), r"\(N, H, W\)"),
        (np.full((3, 4, 4), np.nan), "non-finite"),
        (np.zeros((0, 4, 4)), "empty"),
    ],
)
def test_bad_images_raise_input_error(bad, message, originals):
    with pytest.raises(InputError, match=message):
        metrics.dataset_similarity(bad, originals[:, :4, :4])
    with pytest.raises(InputError, match=message):
        metrics.intra_sample_diversity(bad)
    with pytest.raises(InputError, match=message):
        metrics.minimum_isd(bad)
    with pytest.raises(InputError, match=message):
        metrics.laplacian_variance(bad)


def test_mismatched_shapes_raise(samples, originals):
    with pytest.raises(InputError, match="image size"):
        metrics.dataset_similarity(samples, originals[:, :4, :4])
    with pytest.raises(InputError, match="does not match"):
        metrics.reconstruction_mse(originals, originals[:5])
    with pytest.raises(InputError, match="at least 2"):
        metrics.minimum_isd(samples[:1])


def test_load_images_names_the_file(tmp_path):
    good = tmp_path / "images.npy"
    np.save(good, np.full((2, 3, 3), 0.5, np.float32))
    assert metrics.load_checked_images(good).shape == (2, 3, 3)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((2, 3, 3), 2.0, np.float32))
    with pytest.raises(InputError, match="bad.npy"):
        metrics.load_checked_images(bad)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy")
    with pytest.raises(InputError, match="junk.npy"):
        metrics.load_checked_images(junk)
