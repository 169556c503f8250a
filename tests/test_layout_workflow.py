"""A BraTS-shaped cohort through the whole workflow: discovery with input.layout brats, every
sequence ingested, the transform estimated on t1 and applied to the other sequences and the
segmentation, the four sequences stacked as the channels of one slice dataset
(datasets.<name>.channels) beside a t1-only one, a small VAE on the stacked images through every
metric to the report, and no case name anywhere under results/, logs/ or .snakemake/.

The cases' contrasts are known functions of one volume (t1ce = 1.2 x t1): the registered t1ce
must be 1.2 x the registered t1, and after each volume's own normalisation the stacked t1ce
channel must equal the t1 channel."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import ndimage

from pipeline_lib.imaging import registration as reg
from helpers.workflow import copy_checkout, small_evaluation, snakemake

pytestmark = pytest.mark.integration
CASES = [("HGG", "BraTS19_2013_10_1"), ("HGG", "BraTS19_CBICA_AAB_1"), ("LGG", "BraTS19_TMC_09043_1"),
         ("LGG", "BraTS19_2013_28_1")]
STACKED = ["t1", "t1ce", "t2", "flair"]


def _brats_tree(root: Path) -> None:
    """Each case: the MNI template (4 mm) shifted a little, in four contrasts, plus a segmentation."""
    fixed = reg.template_image(reg.template_path(None), 4)
    data = fixed.numpy()
    affine = np.diag([*fixed.spacing, 1.0])
    affine[:3, 3] = [-fixed.origin[0], -fixed.origin[1], fixed.origin[2]]
    for index, (grade, case) in enumerate(CASES):
        moved = ndimage.shift(data, (index + 1, -index, 1), order=1)
        contrasts = {"t1": moved, "t1ce": moved * 1.2, "t2": np.where(moved > 0, 3000 - moved, 0),
                     "flair": np.sqrt(np.clip(moved, 0, None))}
        seg = (moved > np.percentile(moved[moved > 0], 97)).astype(np.float32) * 4
        folder = root / "MICCAI_BraTS_2019_Data_Training" / grade / case
        folder.mkdir(parents=True)
        for name, volume in {**contrasts, "seg": seg}.items():
            nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), str(folder / f"{case}_{name}.nii.gz"))


def test_brats_cohort_registers_every_sequence_through_the_t1_transform(tmp_path_factory):
    work = copy_checkout(tmp_path_factory, "layout")
    source = work.parent / "BraTS2019"
    _brats_tree(source)
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["input"] = {"source": str(source), "layout": "brats"}
    config["preprocessing"] = {"brain_extraction": "none"}
    config["registration"] = {**config["registration"], "transform": "Rigid", "grid": [24, 28, 16],
                              "reference_sequence": "t1", "min_mask_dice": 0.5, "min_correlation": 0.3}
    config.pop("slicing")
    geometry = {"selection": {"mode": "central", "n": 6}, "size": [16, 16], "test_fraction": 0.25}
    config["datasets"] = {"t1": {**geometry, "filters": {"sequence": "t1"}}, "stacked": {**geometry, "channels": STACKED}}
    config["models"] = {"vae_stacked": {"family": "vae", "dataset": "stacked", "width": 8, "latent_dim": 8,
                                        "batch_size": 8, "budget": {"steps": 6}, "checkpoint_every": 3}}
    small_evaluation(config)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(work, "--cores", "2", "all", "results/slices/t1/images.npy", timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    subjects = pd.read_csv(work / "results/inputs/subjects.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert sorted(subjects["grade"]) == ["HGG", "HGG", "LGG", "LGG"]
    assert set(subjects["sequences"]) == {"t1,t1ce,t2,flair"}
    assert set(subjects["mask"]) == {"seg"}
    table = pd.read_csv(work / "results/qc/registration.tsv", sep="\t")
    assert list(table["status"]) == ["ok"] * len(CASES)
    # QC per sequence: columns of the registration table
    assert {"t1ce_signal", "t2_correlation", "flair_correlation"} <= set(table.columns)
    assert (table["t1ce_correlation"] > 0.99).all()
    for subject in subjects["subject"]:
        out = work / "results/register" / subject
        manifest = json.loads((out / "sequences.json").read_text())
        assert manifest["order"] == ["t1", "t1ce", "t2", "flair"]
        assert manifest["masks"] == {"seg": "mask-seg.nii.gz"}
        t1 = np.asarray(nib.load(str(out / "registered.nii.gz")).dataobj)
        t1ce = np.asarray(nib.load(str(out / "registered-t1ce.nii.gz")).dataobj)
        np.testing.assert_allclose(t1ce, t1 * 1.2, rtol=1e-4, atol=1e-2)
    check_stacked_run(work)

    leaks = []
    for folder in ("results", "logs", ".snakemake"):
        for path in (work / folder).rglob("*"):
            names = [case for _, case in CASES] + ["MICCAI", "BraTS2019"]
            if any(name in str(path.relative_to(work)) for name in names):
                leaks.append(str(path.relative_to(work)))
            elif path.is_file() and not path.name.endswith((".gz", ".png")):
                text = path.read_bytes().decode("utf-8", "ignore")
                leaks += [f"{path.relative_to(work)}: {n}" for n in names if n in text]
    assert leaks == []
    assert any(os.path.islink(p) for p in (work / "private/staging").rglob("t2"))


def _finite_numbers(value, where: str) -> int:
    """How many numbers ``value`` holds; every one must be finite (None stands for not applicable)."""
    if isinstance(value, dict):
        return sum(_finite_numbers(v, f"{where}.{k}") for k, v in value.items())
    if isinstance(value, list):
        return sum(_finite_numbers(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, float):
        assert math.isfinite(value), where
        return 1
    return 0


def check_stacked_run(work: Path) -> None:
    """The stacked dataset, from the slices to the report."""
    images = np.load(work / "results/slices/stacked/images.npy")
    table = pd.read_csv(work / "results/slices/stacked/slices.tsv", sep="\t", dtype=str)
    assert images.shape[1:] == (len(STACKED), 16, 16)
    assert len(table) == len(images) == 6 * len(CASES)
    assert set(table["sequence"]) == {"+".join(STACKED)}
    # channel k is sequence k's own slice: the t1 channel equals the t1-only dataset exactly
    t1 = np.load(work / "results/slices/t1/images.npy")
    t1_table = pd.read_csv(work / "results/slices/t1/slices.tsv", sep="\t", dtype=str)
    assert list(t1_table["subject"]) == list(table["subject"])
    assert np.array_equal(images[:, 0], t1)
    # t1ce = 1.2 x t1 before each volume's own normalisation: the same image after it
    np.testing.assert_allclose(images[:, 1], images[:, 0], atol=2e-3)
    assert not np.allclose(images[:, 2], images[:, 0], atol=0.05)  # t2 is an inverted contrast
    samples = np.load(work / "results/samples/vae_stacked/seed0/samples.npy")
    assert samples.shape[1:] == images.shape[1:]
    assert np.isfinite(samples).all()
    run_metrics = sorted((work / "results/metrics/vae_stacked").glob("seed0*.json"))
    assert {p.name for p in run_metrics} >= {"seed0.json", "seed0.distribution.json", "seed0.domain.json",
                                              "seed0.diversity.json"}
    for path in run_metrics + [work / "results/metrics/original/stacked.json"]:
        assert _finite_numbers(json.loads(path.read_text()), path.name) > 0, path
    summary = json.loads((work / "results/models/vae_stacked/seed0/summary.json").read_text())
    assert summary["channels"] == len(STACKED)
    assert summary["training_data"]["channel_names"] == STACKED
    assert "Channels (stacked sequences)" in (work / "results/report/index.html").read_text()
