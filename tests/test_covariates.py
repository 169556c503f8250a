"""Continuous covariates for the 3-D diffusion families (issue 26; Pinaya et al. 2022): the columns a
model conditions on are read and scaled over the training split (core/covariates.py), the UNet takes
them as extra channels and cross-attention context, a covariate changes the sampled volumes, the
train job stores the scaling, sample_volumes draws requests from the training volumes and writes
them to labels.tsv, and the volumetric evaluation measures how well the samples follow a requested
brain volume. Bad settings and bad values are errors naming the key, column or subject."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline_lib.core.covariates import covariate_values, draw_requests, fit_scaling, scale, unscale
from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import write_json
from pipeline_lib.core.settings import TrainerSettings
from pipeline_lib.evaluation.volumetric import brain_volumes_ml, conditioning_check, covariate_following
from pipeline_lib.models import build_model
from pipeline_lib.models.hyperparameters import model_dataset_problems
from pipeline_lib.models.sampling import draw_samples, sample_volumes_job
from pipeline_lib.models.training import load_trained_model

from helpers.models import TINY_3D, blob_volumes, train_volume_run

SIZE = 16
AFFINE = [[6.0, 0, 0, -45.0], [0, 6.0, 0, -45.0], [0, 0, 6.0, -45.0], [0, 0, 0, 1.0]]


def _rows(values, column="age", subjects=None):
    subjects = subjects or [f"sub-{i:02d}" for i in range(len(values))]
    return pd.DataFrame({"subject": subjects, column: values})


def test_values_are_read_per_column_and_a_bad_one_names_the_column_and_subject():
    rows = _rows(["61", "70.5", "82"]).assign(brain_volume_ml=[1100.0, 1200.0, 1000.0])
    np.testing.assert_array_equal(covariate_values(rows, ["age", "brain_volume_ml"], "w"),
                                  [[61, 1100], [70.5, 1200], [82, 1000]])
    with pytest.raises(InputError, match=r"w: the dataset's table has no column 'sex'"):
        covariate_values(rows, ["sex"], "w")
    with pytest.raises(InputError, match=r"covariate 'age' of subject sub-01 is 'n/a', not a number \(2 row"):
        covariate_values(_rows(["61", "n/a", ""]), ["age"], "w")


def test_scaling_maps_the_training_range_onto_0_1_and_back():
    values = np.array([[20.0, 900.0], [50.0, 1500.0], [80.0, 1200.0]])
    scaling = fit_scaling(values, ["age", "brain_volume_ml"], "w")
    assert scaling == [{"name": "age", "min": 20.0, "max": 80.0}, {"name": "brain_volume_ml", "min": 900.0, "max": 1500.0}]
    scaled = scale(values, scaling)
    np.testing.assert_allclose(scaled, [[0, 0], [0.5, 1], [1, 0.5]])
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(unscale(scaled, scaling), values, rtol=1e-6)
    with pytest.raises(InputError, match=r"covariate 'age' takes one value \(70\) over the training split"):
        fit_scaling(np.full((4, 1), 70.0), ["age"], "w")


def test_requests_are_training_rows_each_once_before_any_repeats_and_seeded():
    train = np.arange(10.0)[:, None] * [1.0, 100.0]
    first = draw_requests(train, 25, seed=3)
    assert first.shape == (25, 2)
    assert sorted(first[:10, 0]) == list(range(10))  # every row once before any row twice
    np.testing.assert_array_equal(first[:, 1], first[:, 0] * 100)  # rows stay joint
    np.testing.assert_array_equal(first, draw_requests(train, 25, seed=3))
    assert not np.array_equal(first, draw_requests(train, 25, seed=4))


def test_settings_refuse_classes_with_covariates_and_a_family_that_cannot_take_them():
    with pytest.raises(InputError, match="a model conditions on class labels or on covariates, not both"):
        TrainerSettings.from_block("m", {"family": "ldm3d", "budget": {"steps": 1}, "condition_on": "scanner",
                                         "condition_on_covariates": ["age"]})
    with pytest.raises(InputError, match="condition_on_covariates must be null or a list of distinct column names"):
        TrainerSettings.from_block("m", {"family": "ldm3d", "budget": {"steps": 1}, "condition_on_covariates": ["age", "age"]})
    config = {"datasets": {"t1": {}, "brain": {"kind": "volume"}},
              "models": {"wgan": {"family": "wgan_gp3d", "dataset": "brain", "condition_on_covariates": ["age"]},
                         "ldm": {"family": "ldm3d", "dataset": "brain", "condition_on_covariates": ["age"]}}}
    assert model_dataset_problems(config) == [
        "models.wgan.condition_on_covariates: family wgan_gp3d cannot condition on covariates; families that can: "
        "ddpm3d, ldm3d"]
    with pytest.raises(InputError, match="model family 'vae' cannot condition on covariates"):
        build_model("vae", 16, {}, n_covariates=1)


@pytest.mark.parametrize("family", ["ddpm3d", "ldm3d"])
def test_the_unet_takes_covariates_as_channels_and_cross_attention_context(family):
    model = build_model(family, SIZE, TINY_3D[family], n_covariates=2)
    unet = model.denoiser.unet
    latent = model.channels if family == "ddpm3d" else int(model.hp.latent_channels)
    assert unet.in_channels == latent + 2
    assert unet.out_channels == latent
    assert unet.with_conditioning
    # the cross-attention's keys and values read the (1, 2) context
    context_inputs = [m for m in unet.modules() if isinstance(m, torch.nn.Linear) and m.in_features == 2]
    assert len(context_inputs) >= 2


def _volume_dataset(root, n=8):
    """blob_volumes as a volume dataset whose brain_volume_ml column is measured as the dataset does."""
    data = root / "results/volumes/brain"
    data.mkdir(parents=True)
    volumes, _ = blob_volumes(n, SIZE)
    np.save(data / "volumes.npy", volumes)
    pd.DataFrame({"row": range(n), "subject": [f"sub-{i:010x}" for i in range(n)],
                  "split": ["train"] * (n - 2) + ["test"] * 2, "augmented": 0, "age": np.linspace(50, 85, n),
                  "sequence": "t1", "brain_volume_ml": brain_volumes_ml(volumes, np.array(AFFINE))}
                 ).to_csv(data / "volumes.tsv", sep="\t", index=False)
    write_json(data / "grid.json", {"shape": [SIZE] * 3, "spacing_mm": [6.0] * 3, "affine": AFFINE,
                                    "channels": ["t1"]})
    return data


@pytest.fixture(scope="module")
def covariate_run(tmp_path_factory):
    """A covariate-conditional ldm3d trained by the train job on a tiny volume dataset, sampled by
    sample_volumes_job."""
    root = tmp_path_factory.mktemp("covariate-run")
    data = _volume_dataset(root)
    block = {"family": "ldm3d", **TINY_3D["ldm3d"], "budget": {"steps": 6}, "seed": 0, "checkpoint_every": 3,
             "validate_every": 3, "condition_on_covariates": ["brain_volume_ml", "age"]}
    run, summary = train_volume_run(root, "ldm3d", block, data)
    samples = root / "results/volume_samples/ldm3d/seed0"
    sample_volumes_job(run / "weights.pt", {"n": 9, "seed": 2}, volumes=samples / "volumes.npy",
                       labels=samples / "labels.tsv", views=samples / "views.png", table=data / "volumes.tsv",
                       threads=1, device="cpu")
    return {"data": data, "run": run, "samples": samples, "summary": summary}


def test_the_train_job_scales_covariates_over_the_training_split_and_keeps_the_scaling(covariate_run):
    table = pd.read_csv(covariate_run["data"] / "volumes.tsv", sep="\t")
    train = table[table["split"] == "train"]
    assert covariate_run["summary"]["covariates"] == [
        {"name": "brain_volume_ml", "min": train["brain_volume_ml"].min(), "max": train["brain_volume_ml"].max()},
        {"name": "age", "min": 50.0, "max": 75.0}]
    model, summary = load_trained_model(covariate_run["run"] / "weights.pt", device="cpu")
    assert model.n_covariates == 2
    assert summary["covariates"] == covariate_run["summary"]["covariates"]
    validation = pd.read_csv(covariate_run["run"] / "validation.csv")
    # the held-out volumes' diffusion loss, with their covariates on the training split's scale
    assert validation["step"].tolist() == [3, 6]
    assert np.isfinite(validation["diffusion"].iloc[-1])


def test_samples_are_drawn_with_training_volumes_covariates_written_in_their_units(covariate_run):
    labels = pd.read_csv(covariate_run["samples"] / "labels.tsv", sep="\t", keep_default_na=False)
    assert list(labels.columns) == ["sample", "label", "brain_volume_ml", "age"]
    table = pd.read_csv(covariate_run["data"] / "volumes.tsv", sep="\t")
    train = table[table["split"] == "train"]
    pairs = set(zip(train["brain_volume_ml"].round(6), train["age"].round(6)))
    requested = list(zip(labels["brain_volume_ml"], labels["age"]))
    assert set(requested[:6]) == pairs  # each of the 6 training rows once, then repeats
    assert set(requested) <= pairs
    assert np.load(covariate_run["samples"] / "volumes.npy").shape == (9, 1, SIZE, SIZE, SIZE)


def test_the_covariate_changes_the_sampled_volumes(covariate_run):
    model, _ = load_trained_model(covariate_run["run"] / "weights.pt", device="cpu")
    low, high = np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32)
    as_low = draw_samples(model, 2, seed=3, labels=low)
    np.testing.assert_array_equal(as_low, draw_samples(model, 2, seed=3, labels=low))
    assert np.abs(as_low - draw_samples(model, 2, seed=3, labels=high)).max() > 1e-4
    with pytest.raises(InputError, match=r"conditions on 2 covariate\(s\): need 2 x 2 finite values"):
        model.sample(2, labels=torch.zeros(2, 3))


def test_sampling_a_covariate_model_without_its_table_is_an_error(covariate_run, tmp_path):
    with pytest.raises(InputError, match="model ldm3d conditions on covariates: sampling needs its volume dataset"):
        sample_volumes_job(covariate_run["run"] / "weights.pt", {"n": 2, "seed": 0}, volumes=tmp_path / "v.npy",
                           labels=tmp_path / "l.tsv", views=tmp_path / "v.png", threads=1, device="cpu")


def test_following_is_measured_against_a_model_that_ignores_the_request():
    rng = np.random.default_rng(0)
    requested = rng.uniform(900, 1500, 400)
    exact = covariate_following(requested, requested)
    assert (exact["pearson_r"], exact["slope"], exact["mae"]) == (pytest.approx(1.0), pytest.approx(1.0), 0.0)
    assert exact["mae_if_ignored"] > 100  # shuffling a 600 mL spread: about 200 mL apart on average
    ignoring = covariate_following(requested, rng.permutation(requested))
    assert ignoring["mae"] == pytest.approx(ignoring["mae_if_ignored"], rel=0.15)
    assert abs(ignoring["pearson_r"]) < 0.2  # r of unrelated values: about 0.05 at 400
    noisy = covariate_following(requested, requested + rng.normal(0, 20, 400))
    assert noisy["mae"] < 0.25 * noisy["mae_if_ignored"]
    assert noisy["pearson_r"] > 0.95


def test_the_conditioning_check_measures_brain_volume_on_the_samples_and_notes_the_rest():
    """Cubes of known size: 10, 12 and 14 voxels a side of 6 mm (216 uL a voxel)."""
    volumes = np.zeros((3, 1, SIZE, SIZE, SIZE), np.float32)
    for k, side in enumerate((10, 12, 14)):
        volumes[k, 0, :side, :side, :side] = 0.8
    true_ml = np.array([10, 12, 14]) ** 3 * 0.216
    labels = pd.DataFrame({"sample": range(3), "label": "", "brain_volume_ml": true_ml, "age": [60, 70, 80]})
    check = conditioning_check(volumes, labels, np.array(AFFINE), ["brain_volume_ml", "age"])
    assert check["brain_volume_ml"]["mae"] == pytest.approx(0.0, abs=1e-9)
    assert check["brain_volume_ml"]["slope"] == pytest.approx(1.0)
    assert check["age"] == {"measured": None, "note": "'age' cannot be measured on a generated volume here"}
    with pytest.raises(InputError, match="labels.tsv has no column 'brain_volume_ml'"):
        conditioning_check(volumes, labels.drop(columns="brain_volume_ml"), np.array(AFFINE), ["brain_volume_ml"])


def test_generate_and_export_draw_with_a_requested_covariate_in_its_units(covariate_run, tmp_path, capsys):
    from pipeline_lib.__main__ import main
    from pipeline_lib.models.export import export_model

    exported = export_model(covariate_run["run"], tmp_path / "exported")
    assert main(["info", str(exported)]) == 0
    info = capsys.readouterr().out
    assert re.search(r"classes +none \(conditioned on covariates\)", info)
    assert re.search(r"covariates +brain_volume_ml \([\d.]+ to [\d.]+ in training\), age \(50 to 75 in training\)", info)
    scaling = covariate_run["summary"]["covariates"]
    low = scaling[0]["min"]
    for source in (covariate_run["run"], exported):
        out = tmp_path / f"{source.name}-low"
        assert main(["generate", str(source), "-n", "2", "--seed", "1", "--format", "npy", "--out", str(out),
                     "--covariate", f"brain_volume_ml={low}", "--covariate", "age=50"]) == 0
        labels = pd.read_csv(out / "labels.tsv", sep="\t")
        assert labels["class"].tolist() == [f"brain_volume_ml={low:g}; age=50"] * 2
        model, _ = load_trained_model(covariate_run["run"] / "weights.pt", device="cpu")
        np.testing.assert_array_equal(np.load(out / "images.npy"),
                                      draw_samples(model, 2, seed=1, labels=np.zeros((2, 2), np.float32)))
    assert main(["generate", str(exported), "-n", "1", "--out", str(tmp_path / "bad"), "--covariate", "sex=1"]) == 2
    assert "conditions on brain_volume_ml, age; got sex" in capsys.readouterr().err
