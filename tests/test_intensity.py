"""The samples' grey levels against the real training slices (evaluation/intensity.py) and their
block on the report page (report/fidelity_section.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from pipeline_lib.core.errors import InputError
from pipeline_lib.evaluation import intensity
from pipeline_lib.report import fidelity_section
from pipeline_lib.report.inputs import ModelOutputs, ReportData, Run
from pipeline_lib.report.sections import Notes


def test_two_flat_images_are_their_grey_levels_apart():
    dark, bright = np.full((2, 4, 4), 51 / 255), np.full((3, 4, 4), 153 / 255)
    result = intensity.intensity_statistics(dark, bright)
    assert result["wasserstein"] == pytest.approx(0.4)
    assert (result["mean"], result["real_mean"]) == (pytest.approx(0.2), pytest.approx(0.6))
    assert (result["std"], result["real_std"]) == (pytest.approx(0.0, abs=1e-9), pytest.approx(0.0, abs=1e-9))
    assert (result["n_samples"], result["n_real"]) == (2, 3)
    assert intensity.intensity_statistics(bright, bright)["wasserstein"] == 0.0


def test_the_binned_distance_is_scipys_on_8_bit_levels_and_reads_in_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    samples = rng.beta(2, 5, (40, 8, 8))
    real = rng.beta(3, 3, (70, 8, 8))
    monkeypatch.setattr(intensity, "_BLOCK", 16)  # several blocks, the last one short
    levels = lambda images: np.rint(images * 255).ravel() / 255  # noqa: E731
    result = intensity.intensity_statistics(samples, real)
    assert result["wasserstein"] == pytest.approx(wasserstein_distance(levels(samples), levels(real)), rel=1e-9)
    assert result["mean"] == pytest.approx(samples.mean())
    assert result["real_std"] == pytest.approx(real.std())


def test_background_is_the_share_of_near_black_pixels():
    head = np.zeros((1, 10, 10))
    head[0, 2:8, 2:8] = 0.7                      # 36 of 100 pixels are tissue
    noisy = head + 0.05                           # a background painted grey
    result = intensity.intensity_statistics(noisy, head)
    assert result["real_background"] == pytest.approx(0.64)
    assert result["background"] == 0.0
    assert result["wasserstein"] == pytest.approx(13 / 255)  # every pixel moved by 0.05 = 12.75 levels -> 13


def test_the_job_compares_samples_with_the_training_split_only(tmp_path, evaluation_slices):
    images, table = evaluation_slices(n_subjects=8, slices_per_subject=4, size=16, seed=1)
    np.save(tmp_path / "images.npy", images)
    table.to_csv(tmp_path / "slices.tsv", sep="\t", index=False)
    np.save(tmp_path / "samples.npy", images[:5])
    result = intensity.intensity_job(tmp_path / "samples.npy", tmp_path / "images.npy", tmp_path / "slices.tsv",
                                     out=tmp_path / "intensity.json")
    assert json.loads((tmp_path / "intensity.json").read_text()) == result
    train = images[(table["split"] == "train").to_numpy()]
    assert result["n_real"] == len(train) < len(images)
    assert result["real_mean"] == pytest.approx(train.mean())
    np.save(tmp_path / "small.npy", images[:5, :8, :8])
    with pytest.raises(InputError, match="small.npy: image size"):
        intensity.intensity_job(tmp_path / "small.npy", tmp_path / "images.npy", tmp_path / "slices.tsv",
                                out=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_the_report_shows_each_models_grey_levels_over_its_seeds():
    def run(seed, distance):
        record = {"wasserstein": distance, "mean": 0.3, "real_mean": 0.25, "std": 0.2, "real_std": 0.22,
                  "background": 0.5, "real_background": 0.6}
        return Run(seed=seed, files=ModelOutputs(), records={"intensity": record})

    data = ReportData(runs={"vae": [run(0, 0.01), run(1, 0.03)], "ddpm": [run(0, 0.002)]})
    (block,) = [s for s in fidelity_section.SECTIONS if s.anchor == "grey-levels"]
    html = block.render(data, Notes())
    assert html.count("<tr data-model=") == 2, html
    vae = html.split('data-model="vae"')[1].split("</tr>")[0]
    assert 'data-metric="wasserstein" data-value="0.02"' in vae, vae
    assert 'data-metric="real_background" data-value="0.6" data-std="0.0" data-n="2">60 ± 0 %<' in vae, vae
    assert "No intensity statistics." in block.render(ReportData(runs={}), Notes())
