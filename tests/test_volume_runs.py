"""3-D runs in the workflow (issue 26): a 3-D family names a volume dataset (and only it; both
mismatches are DAG-time config errors naming the key), the train job learns the volume dataset and
keeps its grid, sample_volumes writes (n, C, X, Y, Z) volumes, labels and orthogonal views, a 3-D
run's DAG has train and sample_volumes and no 2-D evaluation job, and `generate` writes each volume
as NIfTI with the volume dataset's affine."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline_lib.__main__ import main
from pipeline_lib.core.figures import VIEW_PLANES, middle_slices, orthogonal_views
from pipeline_lib.core.io import write_json
from pipeline_lib.imaging.slice_geometry import ras_to_display
from pipeline_lib.models.export import export_model
from pipeline_lib.models.hyperparameters import model_dataset_problems, spatial_dims
from pipeline_lib.models.sampling import sample_volumes_job

from helpers.models import TINY_3D, blob_volumes, train_volume_run

SIZE = 16
#: A 6 mm grid, shifted, as grid.json writes it (voxel -> template mm).
AFFINE = [[6.0, 0, 0, -93.0], [0, 6.0, 0, -111.0], [0, 0, 6.0, -75.0], [0, 0, 0, 1.0]]


def _config(models, datasets=None):
    datasets = {"t1": {}, "brain": {"kind": "volume"}} if datasets is None else datasets
    return {"datasets": datasets, "models": models}


@pytest.mark.parametrize("model, match", [
    ({"family": "vae", "dataset": "brain"},
     r"models\.m\.dataset: 'brain' is a volume dataset \(kind: volume\) but family vae learns 2-D slices"),
    ({"family": "ddpm3d", "dataset": "t1"},
     r"models\.m\.dataset: family ddpm3d learns volumes but the model names the slice dataset 't1'; set it "
     r"to a volume dataset \(datasets.<name> with kind: volume: brain\)"),
    ({"family": "ddpm3d"},
     r"models\.m\.dataset: family ddpm3d learns volumes but the model has no dataset key, so it takes the "
     r"slice dataset 't1'"),
])
def test_a_family_and_its_dataset_must_have_the_same_dimensions(model, match):
    problems = model_dataset_problems(_config({"m": model}))
    assert len(problems) == 1, problems
    assert re.search(match, problems[0]), problems


def test_matching_families_and_datasets_are_no_problem():
    config = _config({"a": {"family": "ddpm3d", "dataset": "brain"}, "b": {"family": "vae"},
                      "c": {"family": "ddpm", "dataset": "t1"}})
    assert model_dataset_problems(config) == []
    assert (spatial_dims("ddpm3d"), spatial_dims("ddpm"), spatial_dims("vae")) == (3, 2, 2)


def test_the_middle_slices_are_the_slice_datasets_display():
    volume = np.random.default_rng(0).random((6, 8, 10)).astype(np.float32)
    for plane, image in zip(VIEW_PLANES, middle_slices(volume)):
        displayed = ras_to_display(volume, plane)
        np.testing.assert_array_equal(image, displayed[len(displayed) // 2])


def test_orthogonal_views_are_a_row_per_volume_of_three_planes():
    volumes = blob_volumes(5, 8)[0]
    mosaic = orthogonal_views(volumes, n=4, pad=2)
    assert mosaic.shape == (4 * (8 + 2) + 2, 3 * (8 + 2) + 2)
    np.testing.assert_array_equal(mosaic[2:10, 2:10], middle_slices(volumes[0, 0])[0])
    np.testing.assert_array_equal(mosaic[12:20, 22:30], middle_slices(volumes[1, 0])[2])


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory):
    """A tiny volume dataset as volume_dataset writes it, a 3-D run trained on it by the train job,
    and its sample_volumes outputs."""
    root = tmp_path_factory.mktemp("volume-run")
    data = root / "results/volumes/brain"
    data.mkdir(parents=True)
    volumes, _ = blob_volumes(8, SIZE)
    np.save(data / "volumes.npy", volumes)
    pd.DataFrame({"row": range(8), "subject": [f"sub-{i:010x}" for i in range(8)],
                  "split": ["train"] * 6 + ["test"] * 2, "augmented": 0, "sequence": "t1"}
                 ).to_csv(data / "volumes.tsv", sep="\t", index=False)
    write_json(data / "grid.json", {"shape": [SIZE] * 3, "spacing_mm": [6.0] * 3, "affine": AFFINE,
                                    "channels": ["t1"]})
    block = {"family": "ddpm3d", **TINY_3D["ddpm3d"], "batch_size": 2, "budget": {"steps": 3}, "seed": 0,
             "checkpoint_every": 2, "validate_every": 2}
    run, summary = train_volume_run(root, "ddpm3d", block, data)
    samples = root / "results/volume_samples/ddpm3d/seed0"
    sample_volumes_job(run / "weights.pt", {"n": 3, "seed": 0}, volumes=samples / "volumes.npy",
                       labels=samples / "labels.tsv", views=samples / "views.png", threads=1, device="cpu")
    return {"root": root, "run": run, "samples": samples, "summary": summary}


def test_the_train_job_learns_the_volume_dataset_and_keeps_its_grid(volume_run):
    data = volume_run["summary"]["training_data"]
    assert (data["n_volumes"], data["n_subjects"], data["size"]) == (6, 6, [SIZE] * 3)
    assert "n_slices" not in data
    assert data["grid"]["affine"] == AFFINE
    assert volume_run["summary"]["steps"] == 3


def test_sample_volumes_writes_volumes_on_the_datasets_axes_labels_and_views(volume_run):
    samples = volume_run["samples"]
    volumes = np.load(samples / "volumes.npy")
    assert volumes.shape == (3, 1, SIZE, SIZE, SIZE)
    assert volumes.dtype == np.float32
    assert 0 <= volumes.min()
    assert volumes.max() <= 1
    assert pd.read_csv(samples / "labels.tsv", sep="\t")["sample"].tolist() == [0, 1, 2]
    views = (samples / "views.png").read_bytes()
    assert views.startswith(b"\x89PNG")
    width, height = int.from_bytes(views[16:20], "big"), int.from_bytes(views[20:24], "big")
    assert (height, width) == orthogonal_views(volumes).shape


def test_generate_writes_each_volume_as_nifti_on_the_dataset_grid(volume_run, tmp_path):
    exported = export_model(volume_run["run"], tmp_path / "exported")
    card = (exported / "README.md").read_text()
    assert "3-D brain MRI volumes" in card
    assert "16 × 16 × 16 voxels of 6 × 6 × 6 mm" in card
    for source in (volume_run["run"], exported):
        nifti, arrays = tmp_path / f"{source.name}-nifti", tmp_path / f"{source.name}-npy"
        assert main(["generate", str(source), "-n", "2", "--seed", "4", "--format", "nifti", "--out", str(nifti)]) == 0
        assert main(["generate", str(source), "-n", "2", "--seed", "4", "--format", "npy", "--out", str(arrays)]) == 0
        drawn = np.load(arrays / "images.npy")
        assert drawn.shape == (2, 1, SIZE, SIZE, SIZE)
        files = sorted(nifti.glob("volume_*.nii.gz"))
        assert [f.name for f in files] == ["volume_0000.nii.gz", "volume_0001.nii.gz"]
        for k, path in enumerate(files):
            image = nib.load(path)
            np.testing.assert_allclose(image.affine, AFFINE)
            np.testing.assert_allclose(image.header.get_sform(), AFFINE)
            np.testing.assert_array_equal(np.asarray(image.dataobj), drawn[k, 0])
        assert pd.read_csv(nifti / "labels.tsv", sep="\t")["file"].tolist() == [f.name for f in files]


def test_a_3d_run_has_train_sample_volumes_and_volumetric_metrics_and_no_2d_evaluation(tmp_path_factory):
    from helpers.workflow import copy_checkout, small_evaluation, snakemake

    work = copy_checkout(tmp_path_factory, "volume-dag")
    config = yaml.safe_load((work / "config.yaml").read_text())
    small_evaluation(config)
    config["datasets"] = {"t1": {"size": [16, 16]}, "brain": {"kind": "volume", "box": [16, 16, 16]}}
    for name in ("t1", "brain"):
        config["datasets"][name]["test_fraction"] = config.get("slicing", {}).get("test_fraction", 0.2)
    config["models"]["cube"] = {"family": "ddpm3d", "dataset": "brain", **TINY_3D["ddpm3d"], "budget": {"steps": 2}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(work, "-n", "--cores", "1", "-p", timeout=300)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert "results/models/cube/seed0/weights.pt" in text
    assert "results/volume_samples/cube/seed0/volumes.npy" in text
    assert "results/volumes/brain/volumes.npy" in text
    # its evaluation is the volumetric one, none of the 2-D rules'
    assert "results/metrics/cube/seed0.volumetric.json" in text
    for two_d in ("results/samples/cube/", "results/metrics/cube/seed0.json", "results/metrics/cube/seed0.distribution",
                  "results/metrics/cube/seed0.diversity", "results/metrics/cube/seed0.domain",
                  "results/features/inception/cube/", "results/memorization/cube/", "results/conditioning/cube/",
                  "results/utility/cube/", "results/intensity/cube/"):
        assert two_d not in text, two_d
    two_d_models = [m for m in config["models"] if m != "cube"]
    assert all(f"results/samples/{m}/seed0/samples.npy" in text for m in two_d_models)

    config["models"]["cube"]["dataset"] = "t1"
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(work, "-n", "--cores", "1", timeout=300)
    assert result.returncode != 0
    assert "models.cube.dataset: family ddpm3d learns volumes but the model names the slice dataset 't1'" in \
        result.stdout + result.stderr
