"""FID: Inception features as pytorch-fid computes them, exact Fréchet distance, repeated and per-class FID."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pytorch_fid.fid_score import calculate_frechet_distance, get_activations

from pipeline_lib.evaluation import fid
from pipeline_lib.core.errors import InputError
from pipeline_lib.core.pretrained import load_fid_inception

# fid-helper's TorchScript can only be read with torch.jit.load, deprecated in torch 2.14.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory):
    """The FID Inception built offline by the fid_weights job (TORCH_HOME is a scratch dir)."""
    out = tmp_path_factory.mktemp("fid_weights") / "pt_inception-2015-12-05-fid.pth"
    return fid.fid_weights_job(out)


@pytest.fixture(scope="module")
def fid_net(fid_weights):
    return fid.load_feature_network(fid_weights, device="cpu", channels_last=True)


def _relu_features(rng, n, d, shift=0.0, mix=None):
    """Non-negative, correlated features like Inception's pool3 (a ReLU of a random mixture)."""
    mix = rng.normal(size=(d, d)) / np.sqrt(d) if mix is None else mix
    return np.maximum(rng.normal(size=(n, d)) @ mix + shift, 0.0)


# -- Fréchet distance ---------------------------------------------------------------
def test_frechet_distance_matches_pytorch_fid_on_random_statistics():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(48, 48)) / 7
    f1, f2 = _relu_features(rng, 300, 48, mix=mix), _relu_features(rng, 200, 48, 0.2, mix=mix)
    stats1, stats2 = fid.feature_statistics(f1), fid.feature_statistics(f2)
    reference = calculate_frechet_distance(*stats1, *stats2)
    assert reference > 0.1
    assert fid.frechet_distance(*stats1, *stats2) == pytest.approx(reference, rel=1e-6)
    # Enough images per set: the feature path goes through the statistics.
    assert fid.frechet_distance_features(f1, f2) == pytest.approx(reference, rel=1e-6)


@pytest.mark.parametrize("n1, n2", [(20, 30), (20, 200), (150, 25)])
def test_feature_path_matches_pytorch_fid_when_covariances_are_rank_deficient(n1, n2):
    """Fewer images than dimensions on one or both sides: the nuclear-norm path."""
    rng = np.random.default_rng(n1 + n2)
    mix = rng.normal(size=(64, 64)) / 8
    f1, f2 = _relu_features(rng, n1, 64, mix=mix), _relu_features(rng, n2, 64, 0.3, mix=mix)
    reference = calculate_frechet_distance(*fid.feature_statistics(f1), *fid.feature_statistics(f2))
    assert fid.frechet_distance_features(f1, f2) == pytest.approx(reference, rel=1e-6)
    assert fid.frechet_distance_features(f2, f1) == pytest.approx(reference, rel=1e-6)


def test_identical_sets_give_zero_fid():
    rng = np.random.default_rng(1)
    f = _relu_features(rng, 40, 2048)  # fewer images than dimensions, as in a small demo
    assert abs(fid.frechet_distance_features(f, f.copy())) < 1e-3
    g = _relu_features(rng, 80, 32)
    assert abs(fid.frechet_distance(*fid.feature_statistics(g), *fid.feature_statistics(g))) < 1e-3
    assert fid.frechet_distance_features(f, _relu_features(rng, 40, 2048, 0.5)) > 1.0


def test_mismatched_statistics_are_rejected():
    with pytest.raises(InputError, match="statistics do not match"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(InputError, match="at least 2 images"):
        fid.frechet_distance_features(np.zeros((1, 3)), np.zeros((5, 3)))


# -- repeated and per-class FID ---------------------------------------------------------
def test_repeated_fid_draws_r_subsets_of_the_given_size():
    rng = np.random.default_rng(2)
    mix = rng.normal(size=(16, 16)) / 4
    samples, real = _relu_features(rng, 60, 16, 0.3, mix=mix), _relu_features(rng, 90, 16, mix=mix)
    result = fid.repeated_fid(samples, real, repeats=7, subset_size=25, seed=3)
    assert len(result["values"]) == result["repeats"] == 7
    assert result["subset_size"] == 25
    assert result["n_samples"] == 60
    assert result["n_real"] == 90
    assert result["mean"] == pytest.approx(np.mean(result["values"]))
    assert result["std"] == pytest.approx(np.std(result["values"], ddof=1))
    assert result["std"] > 0
    assert not result["warning"]
    assert result["warning_message"] is None  # 25 images ≥ 16 dimensions
    # Same seed → same subsets; the default subset size is the smaller set.
    assert fid.repeated_fid(samples, real, repeats=7, subset_size=25, seed=3)["values"] == result["values"]
    assert fid.repeated_fid(samples, real, repeats=2)["subset_size"] == 60


def test_small_subsets_carry_the_warning():
    rng = np.random.default_rng(4)
    result = fid.repeated_fid(_relu_features(rng, 30, 64), _relu_features(rng, 30, 64), repeats=3, subset_size=10)
    assert result["warning"]
    assert "10 images" in result["warning_message"]
    assert "64" in result["warning_message"]
    with pytest.raises(InputError, match="subset_size 31 exceeds"):
        fid.repeated_fid(_relu_features(rng, 30, 8), _relu_features(rng, 40, 8), subset_size=31)


def test_per_class_fid_compares_each_class_with_its_own_real_images():
    rng = np.random.default_rng(5)
    mix = rng.normal(size=(12, 12)) / 3.5
    real_a, real_b = _relu_features(rng, 60, 12, 0.0, mix), _relu_features(rng, 60, 12, 2.0, mix)
    good_a = _relu_features(rng, 40, 12, 0.0, mix)        # matches class A
    bad_b = _relu_features(rng, 40, 12, 0.0, mix)         # class B samples that look like A
    samples = np.concatenate([good_a, bad_b])
    sample_labels = np.array(["A"] * 40 + ["B"] * 40)
    real = np.concatenate([real_a, real_b, real_b[:1] + 0.0])
    real_labels = np.array(["A"] * 60 + ["B"] * 60 + ["C"])
    out = fid.per_class_fid(samples, sample_labels, real, real_labels, repeats=4, subset_size=30, seed=0)
    assert set(out) == {"A", "B"}
    assert all(len(r["values"]) == 4 and r["subset_size"] == 30 for r in out.values())
    assert out["B"]["mean"] > 5 * out["A"]["mean"]
    lone = fid.per_class_fid(samples[:3], np.array(["C", "C", "C"]), real, real_labels, repeats=2)
    assert "skipped" in lone["C"]


def test_fresh_sample_blocks_put_the_models_sampling_variation_into_the_spread():
    """With subsets as large as both sets, every repeat of the shared-sample FID sees the same images
    (std 0); with one fresh block per repeat the spread is the sample sets' variation."""
    rng = np.random.default_rng(7)
    mix = rng.normal(size=(8, 8)) / 3
    samples, real = _relu_features(rng, 40, 8, 0.2, mix), _relu_features(rng, 40, 8, mix=mix)
    shared = fid.repeated_fid(samples, real, repeats=5, seed=1)
    assert shared["std"] == 0.0
    assert not shared["fresh_samples"]
    blocks = [_relu_features(rng, 40, 8, 0.2, mix) for _ in range(5)]
    fresh = fid.repeated_fid(samples, real, repeats=5, seed=1, sample_blocks=blocks)
    assert fresh["fresh_samples"]
    assert fresh["std"] > 0
    expected = [fid.frechet_distance_features(b, real) for b in blocks]
    np.testing.assert_allclose(fresh["values"], expected, rtol=1e-10)
    # the real and sample subsets are drawn as before: blocks equal to the one set change nothing
    same = fid.repeated_fid(samples, real, repeats=3, subset_size=20, seed=2, sample_blocks=[samples] * 3)
    assert same["values"] == fid.repeated_fid(samples, real, repeats=3, subset_size=20, seed=2)["values"]
    with pytest.raises(InputError, match="3 sample blocks of 40"):
        fid.repeated_fid(samples, real, repeats=3, sample_blocks=blocks[:2])
    with pytest.raises(InputError, match="sample blocks"):
        fid.repeated_fid(samples, real, repeats=2, sample_blocks=[samples, samples[:30]])


def test_per_class_fid_takes_each_classs_rows_of_every_block():
    rng = np.random.default_rng(8)
    mix = rng.normal(size=(8, 8)) / 3
    # as many real images per class as samples: every repeat's subsets are the whole sets
    real = np.concatenate([_relu_features(rng, 20, 8, 0.0, mix), _relu_features(rng, 20, 8, 2.0, mix)])
    real_labels = np.array(["A"] * 20 + ["B"] * 20)
    labels = np.array(["A"] * 20 + ["B"] * 20)
    main = np.concatenate([_relu_features(rng, 20, 8, 0.0, mix), _relu_features(rng, 20, 8, 2.0, mix)])
    # block 1's class-B rows miss their class; block 0 matches
    blocks = [main, np.concatenate([main[:20], _relu_features(rng, 20, 8, 0.0, mix)])]
    out = fid.per_class_fid(main, labels, real, real_labels, repeats=2, seed=0, sample_blocks=blocks)
    assert out["A"]["values"][0] == pytest.approx(out["A"]["values"][1])  # class A rows are the same
    assert out["B"]["values"][1] > 3 * out["B"]["values"][0]
    assert all(r["fresh_samples"] for r in out.values())


# -- feature files ---------------------------------------------------------------
def test_feature_file_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(6)
    feats = rng.random((10, 5)).astype(np.float32)
    path = fid.save_feature_file(tmp_path / "f.npz", feats, rows=np.arange(10))
    data = fid.load_feature_file(path)
    np.testing.assert_array_equal(data["features"], feats)
    np.testing.assert_allclose(data["mu"], feats.astype(np.float64).mean(0))
    np.testing.assert_allclose(data["sigma"], np.cov(feats.astype(np.float64), rowvar=False))
    np.testing.assert_array_equal(data["rows"], np.arange(10))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz"):
        fid.load_feature_file(tmp_path / "bad.npz")
    np.savez(tmp_path / "partial.npz", features=feats)
    with pytest.raises(InputError, match=r"partial.npz.*missing arrays \['mu', 'sigma'\]"):
        fid.load_feature_file(tmp_path / "partial.npz")


# -- Inception features ---------------------------------------------------------------
def test_features_match_pytorch_fid_get_activations(tmp_path, fid_weights, fid_net):
    """Our batched channels_last path on (N, H, W) arrays = pytorch-fid's own PNG path, same weights."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(3, 37, 45), dtype=np.uint8)  # odd sizes: exercises the resize
    files = []
    for i, image in enumerate(pixels):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(image, mode="L").save(files[-1])
    plain = load_fid_inception(fid_weights)  # pytorch-fid's layout, contiguous memory format
    reference = get_activations(files, plain, batch_size=3, dims=2048, device="cpu", num_workers=0)
    ours = fid.extract_features(pixels.astype(np.float32) / 255, fid_net, batch_size=2)
    assert ours.shape == (3, 2048)
    assert ours.dtype == np.float32
    assert np.abs(ours - reference).max() <= 1e-4
    assert reference.mean() > 0.05  # real activations, not zeros


def test_inception_input_is_three_grey_channels():
    x = fid.inception_input(np.random.default_rng(8).random((2, 9, 11)), "cpu", channels_last=True)
    assert x.shape == (2, 3, 9, 11)
    assert x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x[:, 0], x[:, 2])


def test_extract_features_rejects_bad_images(fid_net):
    with pytest.raises(InputError, match="samples.npy: intensities must lie in \\[0, 1\\]"):
        fid.extract_features(np.full((2, 8, 8), 2.0, np.float32), fid_net, what="samples.npy")


def test_feature_jobs_share_one_weights_file_and_agree(tmp_path, fid_weights):
    """real_features (one split, capped) and model_features give the same features for the same images."""
    rng = np.random.default_rng(9)
    images = rng.random((7, 16, 16)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    pd.DataFrame({"row": range(7), "subject": ["s"] * 7, "split": ["train", "test"] * 3 + ["train"],
                  "scanner": list("ABABABA")}).to_csv(tmp_path / "slices.tsv", sep="\t", index=False)
    settings = {"max_real": 2, "batch_size": 2, "device": "cpu"}
    fid.real_features_job(fid_weights, tmp_path / "images.npy", tmp_path / "slices.tsv", "train",
                          tmp_path / "real_train.npz", settings=settings)
    real = fid.load_feature_file(tmp_path / "real_train.npz")
    assert real["features"].shape == (2, 2048)
    assert set(real["rows"]) <= {0, 2, 4, 6}
    assert len(set(real["rows"])) == 2
    np.save(tmp_path / "samples.npy", images[real["rows"]])
    fid.model_features_job(fid_weights, tmp_path / "samples.npy", tmp_path / "model.npz", settings=settings)
    model = fid.load_feature_file(tmp_path / "model.npz")
    np.testing.assert_allclose(model["features"], real["features"], atol=1e-5)
    np.testing.assert_allclose(real["mu"], real["features"].astype(np.float64).mean(0), rtol=1e-6)


def test_weights_job_copies_a_configured_file_and_names_a_missing_one(tmp_path, fid_weights):
    out = fid.fid_weights_job(tmp_path / "w.pth", configured=fid_weights)
    assert out.read_bytes() == fid_weights.read_bytes()
    with pytest.raises(InputError, match="nowhere.pth"):
        fid.fid_weights_job(tmp_path / "x.pth", configured=tmp_path / "nowhere.pth")


def test_model_features_job_stores_the_fresh_sample_blocks(tmp_path, fid_weights):
    rng = np.random.default_rng(10)
    samples = rng.random((3, 16, 16)).astype(np.float32)
    blocks = rng.random((2, 3, 16, 16)).astype(np.float32)
    blocks[1, 0] = samples[0]
    np.save(tmp_path / "samples.npy", samples)
    np.save(tmp_path / "blocks.npy", blocks)
    settings = {"batch_size": 4, "device": "cpu"}
    out = fid.model_features_job(fid_weights, tmp_path / "samples.npy", tmp_path / "m.npz", settings=settings,
                                 blocks=tmp_path / "blocks.npy")
    assert out == {"n_images": 3, "n_blocks": 2}
    arrays = fid.load_feature_file(tmp_path / "m.npz")
    assert arrays["block_features"].shape == (6, 2048)
    assert list(arrays["block_index"]) == [0, 0, 0, 1, 1, 1]
    split = fid.sample_blocks_of(arrays, tmp_path / "m.npz")
    assert len(split) == 2
    assert all(b.shape == (3, 2048) for b in split)
    np.testing.assert_allclose(split[1][0], arrays["features"][0], atol=1e-5)
    assert not np.allclose(split[0][0], arrays["features"][0], atol=1e-3)
    fid.model_features_job(fid_weights, tmp_path / "samples.npy", tmp_path / "plain.npz", settings=settings)
    with pytest.raises(InputError, match="plain.npz: no sample blocks"):
        fid.sample_blocks_of(fid.load_feature_file(tmp_path / "plain.npz"), tmp_path / "plain.npz")
    np.save(tmp_path / "flat.npy", samples)
    with pytest.raises(InputError, match="flat.npy: sample blocks must be"):
        fid.load_sample_blocks(tmp_path / "flat.npy")


def test_equal_per_class_gives_every_class_the_smallest_classs_subset_size():
    """Ballesteros Ramirez's FID per scanner: unequal classes (about 670 real images of one scanner
    against 1,000 samples of each) would each get their own size; equal_sizes gives all the same."""
    rng = np.random.default_rng(11)
    mix = rng.normal(size=(8, 8)) / 3
    counts = {"A": (40, 60), "B": (40, 25), "C": (30, 60)}          # class: (samples, real)
    samples = np.concatenate([_relu_features(rng, s, 8, 0.0, mix) for s, _ in counts.values()])
    real = np.concatenate([_relu_features(rng, r, 8, 0.0, mix) for _, r in counts.values()])
    sample_labels = np.concatenate([[k] * s for k, (s, _) in counts.items()])
    real_labels = np.concatenate([[k] * r for k, (_, r) in counts.items()])
    unequal = fid.per_class_fid(samples, sample_labels, real, real_labels, repeats=2, seed=0)
    assert {k: v["subset_size"] for k, v in unequal.items()} == {"A": 40, "B": 25, "C": 30}
    equal = fid.per_class_fid(samples, sample_labels, real, real_labels, repeats=2, seed=0, equal_sizes=True)
    assert {k: v["subset_size"] for k, v in equal.items()} == {"A": 25, "B": 25, "C": 25}
    capped = fid.per_class_fid(samples, sample_labels, real, real_labels, repeats=2, seed=0, equal_sizes=True,
                               subset_size=10)
    assert {v["subset_size"] for v in capped.values()} == {10}


def test_crop_recovers_the_papers_image_from_its_padded_frame():
    """A 218 x 182 slice centred, zero-padded, in a 256 x 256 frame (fit: crop) comes back pixel for pixel."""
    from pipeline_lib.imaging.slice_geometry import fit_slices

    rng = np.random.default_rng(12)
    slices = rng.random((3, 218, 182)).astype(np.float32)
    framed = fit_slices(slices, (256, 256), "crop")
    assert framed.shape == (3, 256, 256)
    np.testing.assert_array_equal(fid.centre_crop(framed, (218, 182)), slices)
    assert fid.centre_crop(framed, None) is framed
    with pytest.raises(InputError, match="crop \\[300, 182\\] is larger than the 256 x 256 images"):
        fid.centre_crop(framed, (300, 182))


def test_feature_jobs_with_crop_see_only_the_papers_image(tmp_path, fid_weights):
    """Real slices zero-padded into 32 x 32 frames and samples of the same 22 x 18 content with
    noise in the border: cropped to 22 x 18 both jobs give the same features; whole frames differ."""
    from pipeline_lib.imaging.slice_geometry import fit_slices

    rng = np.random.default_rng(13)
    content = rng.random((4, 22, 18)).astype(np.float32)
    real_frames = fit_slices(content, (32, 32), "crop")
    noisy = rng.random((4, 32, 32)).astype(np.float32)
    noisy[:, 5:27, 7:25] = content                       # (32 - 22) // 2 = 5, (32 - 18) // 2 = 7
    np.testing.assert_array_equal(noisy[:, 5:27, 7:25], real_frames[:, 5:27, 7:25])
    np.save(tmp_path / "images.npy", real_frames)
    np.save(tmp_path / "samples.npy", noisy)
    pd.DataFrame({"row": range(4), "subject": ["s"] * 4, "split": ["train"] * 4}).to_csv(
        tmp_path / "slices.tsv", sep="\t", index=False)
    features = {}
    for crop in (None, [22, 18]):
        settings = {"batch_size": 4, "device": "cpu", "crop": crop}
        fid.real_features_job(fid_weights, tmp_path / "images.npy", tmp_path / "slices.tsv", "train",
                              tmp_path / f"real{crop is None}.npz", settings=settings)
        fid.model_features_job(fid_weights, tmp_path / "samples.npy", tmp_path / f"model{crop is None}.npz",
                               settings=settings)
        features[crop is None] = (fid.load_feature_file(tmp_path / f"real{crop is None}.npz")["features"],
                                  fid.load_feature_file(tmp_path / f"model{crop is None}.npz")["features"])
    cropped_real, cropped_model = features[False]
    np.testing.assert_allclose(cropped_model, cropped_real, atol=1e-5)
    whole_real, whole_model = features[True]
    assert np.abs(whole_model - whole_real).max() > 1e-2
    assert not np.allclose(cropped_real, whole_real, atol=1e-3)


def test_distribution_metrics_pass_equal_per_class_and_crop_is_checked():
    from pipeline_lib.core.settings import FidSettings, read_settings
    from pipeline_lib.evaluation.distribution import distribution_metrics

    rng = np.random.default_rng(14)
    samples, real = _relu_features(rng, 60, 8), _relu_features(rng, 70, 8)
    sample_labels = np.array(["A"] * 30 + ["B"] * 30)
    real_labels = np.array(["A"] * 50 + ["B"] * 20)
    sizes = {}
    for equal in (False, True):
        result = distribution_metrics(samples, real, fid={"repeats": 2, "equal_per_class": equal},
                                      kid_cfg={"n_subsets": 2, "subset_size": 10}, prdc_cfg={"nearest_k": 3},
                                      sample_labels=sample_labels, real_labels=real_labels, class_column="scanner")
        sizes[equal] = {k: v["subset_size"] for k, v in result["fid_per_class"]["classes"].items()}
    assert sizes == {False: {"A": 30, "B": 20}, True: {"A": 20, "B": 20}}
    for bad in ([218], [218, 0], "218x182", [218.5, 182]):
        with pytest.raises(InputError, match="crop"):
            read_settings(FidSettings, {"crop": bad})
