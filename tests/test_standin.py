"""The stand-in cohorts of the four presets (cohorts/standin.py): each is discovered by its preset's
input settings with the right subjects, sequences, masks and labels, and is deterministic."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline_lib.cohorts import standin
from pipeline_lib.imaging.discovery import discover_inputs, write_staging
from pipeline_lib.imaging.ingest import ingest_subject

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "samples.schema.yaml"
SALT = "standin-test-salt"


def _preset(study: str) -> dict:
    return yaml.safe_load((REPO / "presets" / f"{study}.yaml").read_text())


def _discover(study: str, source: Path):
    preset = _preset(study)
    return discover_inputs(source, SALT, SCHEMA, layout=preset["input"],
                           reference_sequence=preset.get("registration", {}).get("reference_sequence"))


def _by_key(found) -> dict[str, dict]:
    key_of = dict(zip(found.linkage["subject"], found.linkage["source_key"]))
    return {key_of[row["subject"]]: row for row in found.subjects.to_dict("records")}


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, Path]:
    """Each study's stand-in, small (4 mm phantoms) so the module stays quick."""
    root = tmp_path_factory.mktemp("standin")
    sizes = {"ungria_hirte_2020": 2, "han_2018": 5, "ballesteros_ramirez_2025": 8, "kazuhiro_2018": 3}
    return {study: standin.make_standin(study, root / study, n, resolution_mm=4) for study, n in sizes.items()}


def test_brats_standin_cases_have_four_sequences_a_segmentation_and_grades(cohorts):
    found = _discover("han_2018", cohorts["han_2018"])
    subjects = _by_key(found)
    assert sorted(subjects) == [f"BraTS20_Training_{i:03d}" for i in range(1, 6)]
    for row in subjects.values():
        assert row["sequence"] == "t1"
        assert row["sequences"] == "t1,t1ce,t2,flair"
        assert row["mask"] == "seg"
    assert [subjects[k]["grade"] for k in sorted(subjects)] == ["HGG"] * 4 + ["LGG"]
    assert found.ignored.empty
    case = cohorts["han_2018"] / "HGG" / "BraTS20_Training_001"
    seg = np.asarray(nib.load(str(case / "BraTS20_Training_001_seg.nii.gz")).dataobj)
    assert set(np.unique(seg)) == {0, 1, 2, 4}  # necrosis, edema, enhancing rim (BraTS 2020 labels)
    volumes = {s: np.asarray(nib.load(str(case / f"BraTS20_Training_001_{s}.nii.gz")).dataobj, dtype=float)
               for s in ("t1", "t1ce", "t2", "flair")}
    assert (volumes["t1"][seg == 0] >= 0).all()
    assert volumes["t1"][0, 0, 0] == 0  # skull-stripped
    rim, edema = seg == 4, seg == 2
    assert volumes["t1ce"][rim].mean() > 1.5 * volumes["t1"][rim].mean()  # the rim enhances
    assert volumes["flair"][edema].mean() > volumes["t1"][edema].mean()  # edema bright on FLAIR
    brain = volumes["t1"] > 0
    for a, b in (("t1", "t2"), ("t1", "flair"), ("t2", "flair")):  # distinct contrasts inside the brain
        assert np.corrcoef(volumes[a][brain], volumes[b][brain])[0, 1] < 0.9


def test_ixi_sald_standin_gives_the_papers_four_scanners_through_its_sheet(cohorts, tmp_path):
    sheet = cohorts["ballesteros_ramirez_2025"]
    assert sheet.name == "samples.tsv"
    subjects = _by_key(_discover("ballesteros_ramirez_2025", sheet))
    scanners = pd.Series({key: row["scanner"] for key, row in subjects.items()})
    assert set(scanners) == {"Gyroscan Intera", "Intera", "Unspecified", "Magnetom TrioTim"}
    assert all(key.startswith("IXI") for key in scanners[scanners != "Magnetom TrioTim"].index)
    # the IXI files are found by the IXI layout with their site's scanner, SALD by the BIDS layout
    root = sheet.parent
    ixi = _by_key(discover_inputs(root / "IXI", SALT, SCHEMA, layout={"layout": "ixi"}, reference_sequence="t1"))
    assert {row["site"] for row in ixi.values()} == {"Guys", "HH", "IOP"}
    assert {row["manufacturer"] for row in ixi.values()} == {"Philips", "GE"}
    sald = _by_key(discover_inputs(root / "SALD", SALT, SCHEMA,
                                   layout={"layout": "bids", "labels": {"scanner": "Magnetom TrioTim"}}))
    assert set(sald) == {k for k in subjects if k.startswith("sub-")}
    first = sald[sorted(sald)[0]]
    assert first["manufacturer"] == "Siemens"
    assert first["field_strength"] == "3"
    assert first["sex"] in ("F", "M")
    # the sheet helper for real downloads writes the same subjects and labels
    rebuilt = standin.ixi_sald_sheet(root / "IXI", root / "SALD", tmp_path / "sheet.tsv")
    original = pd.read_csv(sheet, sep="\t")
    assert dict(zip(rebuilt["subject"], rebuilt["scanner"])) == dict(zip(original["subject"], original["scanner"]))


def test_dwi_standin_is_a_pacs_export_whose_b1000_images_the_preset_selects(cohorts, tmp_path):
    found = _discover("ungria_hirte_2020", cohorts["ungria_hirte_2020"])
    subjects = _by_key(found)
    assert len(subjects) == 2
    for row in subjects.values():
        assert row["sequence"] == "dwi"
        assert row["sequences"] == "dwi"
        assert row["format"] == "dicom"
        assert row["manufacturer"] == "GE MEDICAL SYSTEMS"
    assert {row["field_strength"] for row in subjects.values()} == {"1.5", "3"}
    reasons = " | ".join(found.ignored["reason"])
    assert "matches no input.series rule" in reasons  # the localizers
    assert "other b-values than 1000" in reasons  # the b0 images of the DWI series
    write_staging(found, tmp_path / "staging")
    row = next(iter(subjects.values()))
    out = tmp_path / "ingest"
    status = ingest_subject(tmp_path / "staging" / row["subject"] / "input", "dicom", out, row["subject"],
                            kind=row["kind"])
    assert status["status"] == "ok", status
    volume = np.asarray(nib.load(str(out / "volume.nii.gz")).dataobj, dtype=float)
    phantom_slices = (standin._Anatomy(4).head.shape[2] + 1) // standin.DWI_SLICE_STEP
    assert volume.shape[2] == phantom_slices
    # b1000: CSF and the dim skull are darker than the brain; the volume is the b1000, not b0 (brighter)
    assert volume.max() < 3 * np.percentile(volume[volume > 0], 99)


def test_kazuhiro_standin_heads_have_groups_and_skull(cohorts):
    subjects = _by_key(_discover("kazuhiro_2018", cohorts["kazuhiro_2018"]))
    assert [subjects[k]["group"] for k in sorted(subjects)] == ["healthy", "cva", "healthy"]
    head = np.asarray(nib.load(str(cohorts["kazuhiro_2018"].parent / "t1w-001.nii.gz")).dataobj, dtype=float)
    brain_only = standin._Anatomy(4).brain_mask
    outside = head[~brain_only]
    assert np.percentile(outside, 95) > 0.2 * np.percentile(head[brain_only], 95)  # scalp and skull signal


def test_standins_are_deterministic(tmp_path):
    a = standin.make_standin("kazuhiro_2018", tmp_path / "a", 2, resolution_mm=4)
    b = standin.make_standin("kazuhiro_2018", tmp_path / "b", 2, resolution_mm=4)
    for name in ("t1w-001.nii.gz", "t1w-002.nii.gz", "samples.tsv"):
        assert (a.parent / name).read_bytes() == (b.parent / name).read_bytes()
