"""MS-SSIM diversity and SSIM/PSNR of reconstructions (evaluation/diversity.py) and their report sections."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import read_json, write_npy
from pipeline_lib.evaluation.diversity import (MS_SSIM_WEIGHTS, _metric_values, model_diversity_job, ms_ssim_metric,
                                               ms_ssim_weights, original_diversity_job, pairwise_ms_ssim, random_pairs,
                                               reconstruction_similarity)
from pipeline_lib.report.diversity_section import render_diversity_html
from pipeline_lib.report.training_section import render_training_html

from helpers.images import ellipses

SIZE = 64


def test_scales_follow_the_image_size():
    assert ms_ssim_weights(64, 4) == MS_SSIM_WEIGHTS
    assert len(ms_ssim_weights(32, 4)) == 3
    assert sum(ms_ssim_weights(32, 4)) == pytest.approx(1.0)
    assert len(ms_ssim_weights(128, 11)) == 4


@pytest.mark.parametrize("kernel", [4, 7, 11])
@pytest.mark.parametrize("size", [11, 12, 16, 20, 22, 23, 32, 44, 45, 64, 88, 128])
def test_the_chosen_scales_run_on_images_of_that_size(size, kernel):
    """Every size the window fits gets scales MONAI can compute (two scales at 16 px with an
    11 px window used to pass MONAI's check and fail in its convolution at the 8 px level)."""
    metric = ms_ssim_metric(size, kernel)
    images = ellipses(2, size)
    assert np.isfinite(_metric_values(metric, images[:1], images[1:])).all()


def test_a_window_wider_than_the_images_is_a_config_error():
    from pipeline_lib.core.config_check import config_problems

    schema = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"
    config = {"input": {"source": "demo"}, "slicing": {"image_size": 16},
              "models": {"vae": {"family": "vae", "budget": {"steps": 10}}},
              "evaluation": {"diversity": {"kernel_size": 20}}}
    assert any(p.startswith("evaluation.diversity.kernel_size: a 20-pixel window does not fit the 16-pixel")
               for p in config_problems(config, schema))
    config["evaluation"]["diversity"]["kernel_size"] = 11
    assert config_problems(config, schema) == []


def test_random_pairs_are_distinct_seeded_and_complete_when_few():
    assert random_pairs(4, 10, 0).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    pairs = random_pairs(50, 300, 3)
    assert pairs.shape == (300, 2)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    np.testing.assert_array_equal(pairs, random_pairs(50, 300, 3))
    with pytest.raises(InputError, match="at least 2"):
        random_pairs(1, 10, 0)


def test_ms_ssim_orders_copies_structure_and_noise_and_matches_monai_per_pair():
    from monai.metrics import MultiScaleSSIMMetric

    structured = ellipses(12, SIZE)
    copies = np.repeat(structured[:1], 12, axis=0)
    noise = np.random.default_rng(1).random((12, SIZE, SIZE), dtype=np.float32)
    assert pairwise_ms_ssim(copies, n_pairs=20, seed=0, kernel_size=4)["ms_ssim_mean"] == pytest.approx(1.0)
    result = pairwise_ms_ssim(structured, n_pairs=20, seed=0, kernel_size=4)
    assert result["n_pairs"] == 20
    assert result["ms_ssim_scales"] == 5
    noisy = pairwise_ms_ssim(noise, n_pairs=20, seed=0, kernel_size=4)["ms_ssim_mean"]
    assert noisy < 0.1 < result["ms_ssim_mean"] < 1.0
    # The batched value is the mean of MONAI's per-pair values.
    metric = MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, kernel_size=4)
    one = [metric(torch.from_numpy(structured[[j]])[None], torch.from_numpy(structured[[i]])[None]).item()
           for i, j in random_pairs(12, 20, 0)]
    assert result["ms_ssim_mean"] == pytest.approx(np.mean(one), rel=1e-5)


def test_reconstruction_similarity_against_known_errors():
    originals = ellipses(6, SIZE) * 0.8
    shifted = originals + 0.1  # MSE 0.01 everywhere: PSNR 10 log10(1 / 0.01) = 20 dB
    result = reconstruction_similarity(originals, shifted, kernel_size=4)
    assert result["recon_psnr_mean"] == pytest.approx(20.0, abs=1e-3)
    assert result["recon_psnr_std"] < 1e-3
    closer = reconstruction_similarity(originals, originals + 0.01, kernel_size=4)
    assert closer["recon_psnr_mean"] == pytest.approx(40.0, abs=1e-2)
    assert 0 < result["recon_ssim_mean"] < closer["recon_ssim_mean"] < 1.0
    near = reconstruction_similarity(originals, originals + 1e-4, kernel_size=4)
    assert near["recon_ssim_mean"] == pytest.approx(1.0, abs=1e-3)
    assert near["recon_ms_ssim_mean"] == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(InputError, match="shape"):
        reconstruction_similarity(originals, originals[:3], kernel_size=4)


def _slice_files(tmp_path, n_train=10, n_test=8):
    images = ellipses(n_train + n_test, SIZE, seed=4)
    write_npy(tmp_path / "images.npy", images)
    pd.DataFrame({"row": range(len(images)), "subject": ["sub-0000000001"] * len(images),
                  "slice_index": range(len(images)),
                  "split": ["train"] * n_train + ["test"] * n_test}).to_csv(tmp_path / "slices.tsv", sep="\t",
                                                                           index=False)
    return tmp_path / "images.npy", tmp_path / "slices.tsv", images[n_train:]


def test_rule_jobs_write_the_model_and_original_rows(tmp_path):
    images, table, test = _slice_files(tmp_path)
    write_npy(tmp_path / "samples.npy", ellipses(9, SIZE, seed=7))
    write_npy(tmp_path / "recon.npy", test[:5] * 0.5)
    write_npy(tmp_path / "none.npy", np.zeros((0, SIZE, SIZE), np.float32))
    settings = {"n_pairs": 15, "kernel_size": 4}
    model = model_diversity_job(tmp_path / "samples.npy", tmp_path / "recon.npy", images, table,
                                tmp_path / "m.json", settings=settings, sampling={"n_reconstruct": 5, "seed": 0})
    assert read_json(tmp_path / "m.json") == model
    assert model["n_pairs"] == 15
    assert model["n_reconstructions"] == 5
    assert model["recon_psnr_mean"] > 0
    gan = model_diversity_job(tmp_path / "samples.npy", tmp_path / "none.npy", images, table,
                              tmp_path / "g.json", settings=settings, sampling={"n_reconstruct": 5, "seed": 0})
    assert "recon_ssim_mean" not in gan
    original = original_diversity_job(images, table, tmp_path / "o.json", settings={"n_reference": 6})
    assert original["kind"] == "original"
    assert original["n_images"] == 6
    assert original["n_pairs"] == 15


def test_diversity_section_shows_every_row_with_exact_values():
    html = render_diversity_html(
        {"ddpm": {"ms_ssim_mean": 0.31, "ms_ssim_std": 0.05, "n_pairs": 1000, "n_images": 256,
                  "ms_ssim_scales": 5, "kernel_size": 4},
         "vae<1>": {"ms_ssim_mean": 0.6, "ms_ssim_std": 0.1, "n_pairs": 1000, "n_images": 256, "ms_ssim_scales": 5,
                    "kernel_size": 4, "recon_ssim_mean": 0.8, "recon_ssim_std": 0.01, "recon_ms_ssim_mean": 0.9,
                    "recon_ms_ssim_std": 0.02, "recon_psnr_mean": 25.5, "recon_psnr_std": 1.0,
                    "n_reconstructions": 40}},
        {"ms_ssim_mean": 0.35, "ms_ssim_std": 0.04, "n_pairs": 1000, "n_images": 45, "ms_ssim_scales": 5,
         "kernel_size": 4})
    assert 'data-model="original"' in html
    assert 'data-model="ddpm"' in html
    assert "vae&lt;1&gt;" in html
    assert "<1>" not in html
    assert re.search(r'data-metric="ms_ssim" class="num" data-value="0\.31"', html)
    assert re.search(r'data-metric="recon_psnr" class="num" data-value="25\.5" data-std="1\.0"', html)
    assert html.count("<tr data-model=") == 4  # three MS-SSIM rows, one reconstruction row


def test_training_section_plots_curves_and_strips_and_names_what_is_missing():
    steps = np.arange(1, 41)
    losses = pd.DataFrame({"step": steps, "loss": 1 / steps, "kl": np.full(40, 2.0)})
    validation = pd.DataFrame({"step": [20, 40], "loss": [0.1, 0.05], "kl": [2.1, 2.0]})
    snaps = {"steps": np.array([20, 40]), "kinds": np.array(["reconstructions", "samples"]),
             "images": np.random.default_rng(0).random((2, 3, 16, 16)).astype(np.float32)}
    empty = {"steps": np.zeros(0, np.int64), "kinds": np.array([]), "images": np.zeros((0, 0, 0, 0), np.float32)}
    summary = {"steps": 40, "perceptual": {"backbone": "inception", "substitute": True, "published": "LPIPS"},
               "training_aids": {"ema_decay": 0.999, "sampled_with": "ema", "lr_schedule": "cosine",
                                              "lr_warmup_steps": 5, "validate_every": 20, "snapshot_every": 20}}
    html = render_training_html({"vae": summary, "gan": {"steps": 40}},
                                {"vae": losses, "gan": losses[["step", "loss"]]},
                                {"vae": validation, "gan": pd.DataFrame({"step": []})},
                                {"vae": snaps, "gan": empty})
    assert html.count('alt="validation curve vae"') == 1
    assert html.count('alt="snapshots vae"') == 1
    assert 'id="no-validation"' in html
    assert 'id="no-snapshots"' in html
    assert "gan" in html
    assert "cosine" in html
    assert "0.999" in html
    assert "vae: inception (offline substitute for LPIPS)" in html
