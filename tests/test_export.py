"""A trained model used outside the workflow: export it as a folder, load that folder elsewhere and
generate images with `python -m pipeline_lib`; the same seed gives the same images, equal to the
sampler's own draws from the original weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.figures import to_uint8
from pipeline_lib.models import export
from pipeline_lib.models.sampling import draw_samples
from pipeline_lib.models.training import load_trained_model, train_model

from helpers.threads import single_torch_thread

SIZE = 16


def _images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    cy = rng.uniform(0.3, 0.7, (n, 1, 1))
    return np.exp(-(((yy - cy) / 0.2) ** 2 + ((xx - 0.5) / 0.2) ** 2)).astype(np.float32)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline_lib", *args], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def workflow_run(tmp_path_factory):
    """A conditional model trained as the workflow's train job would, laid out as results/."""
    results = tmp_path_factory.mktemp("export") / "results"
    run = results / "models" / "cond" / "seed3"
    images = _images(24, 0)
    labels = np.arange(24) % 2
    block = {"family": "cvae", "condition_on": "scanner", "hidden_sizes": [32], "latent_dim": 4, "batch_size": 8,
             "budget": {"steps": 10}, "seed": 3}
    train_model("cond", block, images, labels, run / "weights.pt", run / "losses.csv", results / "ck",
                n_classes=2, class_names=["scanner-A", "scanner-B"],
                data_summary={"split": "train", "n_slices": 24, "n_subjects": 4,
                              "slices_per_class": {"scanner-A": 12, "scanner-B": 12}})
    (results / "metrics" / "cond").mkdir(parents=True)
    (results / "metrics" / "cond" / "seed3.distribution.json").write_text(json.dumps(
        {"fid": {"mean": 123.5}, "kid": {"mean": 0.01}, "prdc": {"precision": 0.5, "recall": 0.25}}))
    return run


def test_export_load_elsewhere_and_generate_the_same_images(workflow_run, tmp_path):
    reference_model, _ = load_trained_model(workflow_run / "weights.pt", device="cpu")
    # With the CLI's one thread: CPU kernels may split a convolution's sums by thread (seen on an
    # AVX-512 AMD machine: 19 of 1,536 values off by up to 6e-8 between 2 threads and 1).
    with single_torch_thread():
        expected = draw_samples(reference_model, 6, seed=5, labels=np.repeat([0, 1], 3))

    exported = tmp_path / "exported"
    result = cli("export", str(workflow_run), "--out", str(exported))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "metrics.json", "model.json", "weights.pt"]
    # Elsewhere, without the results folder: the exported folder alone must suffice.
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(exported, moved)
    shutil.rmtree(exported)

    description = json.loads((moved / "model.json").read_text())
    assert description["family"] == "cvae"
    assert description["image_size"] == SIZE
    assert description["class_names"] == ["scanner-A", "scanner-B"]
    assert description["seed"] == 3
    assert description["training_data"]["n_subjects"] == 4
    assert description["incomplete"] is False
    assert torch.load(moved / "weights.pt", weights_only=True)  # plain tensors, no pickled code
    card = (moved / "README.md").read_text()
    assert "cvae" in card
    assert "24 slices" in card
    assert "123.5" in card
    assert "generate" in card

    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        result = cli("generate", str(moved), "-n", "6", "--seed", "5", "--format", "npy", "--out", str(out))
        assert result.returncode == 0, result.stderr
    a, b = np.load(first / "images.npy"), np.load(second / "images.npy")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, expected)  # the sampler's draws from the original weights
    labels = pd.read_csv(first / "labels.tsv", sep="\t")
    assert list(labels["class"]) == ["scanner-A"] * 3 + ["scanner-B"] * 3


def test_formats_classes_and_seeds_in_process(workflow_run, tmp_path):
    model, description = export.load_model(workflow_run, device="cpu")
    images, classes = export.generate(model, description, 4, seed=1, classes=["scanner-B"])
    assert classes == ["scanner-B"] * 4
    assert images.shape == (4, SIZE, SIZE)
    np.testing.assert_array_equal(images, draw_samples(model, 4, seed=1, labels=np.ones(4, dtype=int)))
    assert not np.array_equal(images, export.generate(model, description, 4, seed=2, classes=["scanner-B"])[0])

    pngs = export.write_images(images, classes, tmp_path / "png", "png")
    assert [p.name for p in pngs] == [f"image_{i:04d}.png" for i in range(4)]
    decoded = cv2.imdecode(np.frombuffer(pngs[2].read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == np.uint8
    assert decoded.ndim == 2  # 8-bit grey
    np.testing.assert_array_equal(decoded, to_uint8(images[2]))

    (volume,) = export.write_images(images, classes, tmp_path / "nii", "nifti")
    data = nib.load(volume).get_fdata()
    assert data.shape == (SIZE, SIZE, 4)
    # Slice k is image k, columns along x, rows from the top down along -y.
    np.testing.assert_allclose(data[:, ::-1, 2].T, images[2], atol=1e-6)

    with pytest.raises(InputError, match="unknown class.*scanner-C.*knows scanner-A, scanner-B"):
        export.generate(model, description, 2, seed=0, classes=["scanner-C"])
    assert len(export.generate(model, description, 1, seed=0, per_class=3)[1]) == 6


def test_errors_name_the_problem(workflow_run, tmp_path):
    out = tmp_path / "model"
    export.export_model(workflow_run, out)
    with pytest.raises(InputError, match="already exists"):
        export.export_model(workflow_run, out)
    export.export_model(workflow_run, out, overwrite=True)
    with (out / "weights.pt").open("ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(InputError, match="SHA-256 differs"):
        export.load_model(out)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="already exists"):
        export.export_model(workflow_run, tmp_path / "plain")
    with pytest.raises(InputError, match="not a model folder"):
        export.export_model(workflow_run, tmp_path / "plain", overwrite=True)
    result = cli("generate", str(tmp_path / "missing"), "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert "missing: no such model folder" in result.stderr


def test_generate_never_mixes_runs(workflow_run, tmp_path):
    out = tmp_path / "samples"
    result = cli("generate", str(workflow_run), "--per-class", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    first = sorted(p.name for p in out.iterdir())
    assert first == ["image_0000.png", "image_0001.png", "image_0002.png", "image_0003.png", "labels.tsv"]

    result = cli("generate", str(workflow_run), "-n", "1", "--out", str(out))
    assert result.returncode == 2
    assert f"{out}: folder is not empty (5 entries)" in result.stderr
    assert "--overwrite" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == first  # untouched

    # --overwrite replaces the earlier output whole: one run's files, the labels table listing them all
    model, description = export.load_model(workflow_run, device="cpu")
    images, classes = export.generate(model, description, 1, seed=0, per_class=1)
    export.write_generated(images, classes, out, "png", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["image_0000.png", "image_0001.png", "labels.tsv"]
    assert len(pd.read_csv(out / "labels.tsv", sep="\t")) == 2

    # a folder holding anything else is never replaced, with or without --overwrite
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match=r"holds files generate did not write \(notes.txt\)"):
        export.write_generated(images, classes, mine, "npy", overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    export.write_generated(images, classes, tmp_path / "empty", "npy")
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["images.npy", "labels.tsv"]


def test_info_reads_as_text_and_json_on_request(workflow_run):
    text = cli("info", str(workflow_run))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split(None, 1) == ["model", "cond (family cvae, seed 3)"]
    assert any(line.split(None, 1) == ["classes", "scanner-A, scanner-B (label column scanner)"] for line in lines)
    assert any(line.startswith("training") and "complete, 10 of 10 steps" in line for line in lines)
    assert not text.stdout.lstrip().startswith("{")
    raw = cli("info", str(workflow_run), "--json")
    assert raw.returncode == 0, raw.stderr
    assert json.loads(raw.stdout)["class_names"] == ["scanner-A", "scanner-B"]
