"""A BraTS-shaped cohort through the workflow up to the registration QC table: discovery with
input.layout brats, every sequence ingested, the transform estimated on t1 and applied to the
other sequences and the segmentation, and no case name anywhere under results/, logs/ or .snakemake/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import ndimage

from pipeline_lib.imaging import registration as reg
from test_workflow import copy_checkout, snakemake

pytestmark = pytest.mark.integration
CASES = [("HGG", "BraTS19_2013_10_1"), ("LGG", "BraTS19_TMC_09043_1")]


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
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(work, "--cores", "2", "results/qc/registration.tsv", "results/qc/ingest.tsv", timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    subjects = pd.read_csv(work / "results/inputs/subjects.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert sorted(subjects["grade"]) == ["HGG", "LGG"]
    assert set(subjects["sequences"]) == {"t1,t1ce,t2,flair"} and set(subjects["mask"]) == {"seg"}
    table = pd.read_csv(work / "results/qc/registration.tsv", sep="\t")
    assert list(table["status"]) == ["ok", "ok"]
    # QC per sequence: columns of the registration table
    assert {"t1ce_signal", "t2_correlation", "flair_correlation"} <= set(table.columns)
    assert (table["t1ce_correlation"] > 0.99).all()
    for subject in subjects["subject"]:
        out = work / "results/register" / subject
        manifest = json.loads((out / "sequences.json").read_text())
        assert manifest["order"] == ["t1", "t1ce", "t2", "flair"] and manifest["masks"] == {"seg": "mask-seg.nii.gz"}
        t1 = np.asarray(nib.load(str(out / "registered.nii.gz")).dataobj)
        t1ce = np.asarray(nib.load(str(out / "registered-t1ce.nii.gz")).dataobj)
        np.testing.assert_allclose(t1ce, t1 * 1.2, rtol=1e-4, atol=1e-2)

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
