"""Privacy by design, end to end: names planted everywhere in the input never reach an output.

The input tree is a hospital export as they come: the export folder, folders and files named after the
patient (``QUOLLBERG^PHILOMENA_19580317/MRN0042731 T1/...``), DICOM series with a
patient name, birth date or ID in every attribute of the DICOM PS3.15 Basic
Application Level Confidentiality Profile that pydicom can write
(``tests/data/ps3_15_basic_profile.tsv``) plus a private tag, NIfTI files with them
in descrip, aux_file, intent_name, db_name and an extension, a truncated file, and
odd entries (a symbolic link loop, a dangling link, a named pipe, a text file), all
named after patients. The whole workflow runs on it; then every file under
``results/``, ``logs/`` and ``.snakemake/`` (decompressing .gz, .npz, .pt and .zip
members, decoding Snakemake's base64 metadata file names) and every file name there
is searched for every planted string: none may occur. ``private/`` must hold them
(it maps pseudonyms to paths), which shows the search would find them.

The same run builds two slice datasets (seed 001's axial protocol at 32 px and 8 central sagittal
slices at 16 px, tests/data/config.datasets.yaml, one tiny VAE each), so the dataset tests below
share it: one workflow run in the suite instead of two, and the leak search covers both chains.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import os
import re
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.sequence import Sequence

from pipeline_lib.cohorts.demo_cohort import make_demo_cohort
from helpers.workflow import copy_checkout, dry_run_jobs, snakemake, summary_table

pytestmark = pytest.mark.integration

PROFILE = Path(__file__).parent / "data" / "ps3_15_basic_profile.tsv"
DATASETS_CONFIG = Path(__file__).parent / "data" / "config.datasets.yaml"
IDENTITIES = [
    {"family": "QUOLLBERG", "given": "PHILOMENA", "birth": "19580317", "id": "MRN0042731"},
    {"family": "ZYNKOWSKA", "given": "EUSTACIA", "birth": "19430921", "id": "MRN0093318"},
    {"family": "VARRENDAHL", "given": "BRONWYN", "birth": "19710605", "id": "MRN0051174"},
    {"family": "OXLEIGHTON", "given": "TANCREDI", "birth": "19861130", "id": "MRN0067702"},
    {"family": "HURLSTONE", "given": "GWENDOLYN", "birth": "19390414", "id": "MRN0080025"},
]


def planted_strings() -> list[str]:
    return sorted({identity[key] for identity in IDENTITIES for key in ("family", "given", "birth", "id")})


# ------------------------------------------------------------------ planting


def _text(identity: dict, limit: int) -> str:
    """The longest planted text that fits ``limit`` characters (always at least the ID)."""
    for candidate in (f"{identity['family']}^{identity['given']} {identity['birth']} {identity['id']}",
                      f"{identity['family']} {identity['id']}", identity["id"]):
        if len(candidate) <= limit:
            return candidate
    return identity["id"][:limit]


def _value(vr: str, identity: dict, index: int):
    """A value of ``vr`` that carries the identity wherever the VR allows text or digits."""
    digits = identity["birth"] + identity["id"][3:]
    if vr == "PN":
        return f"{identity['family']}^{identity['given']}"
    if vr in ("LO", "LT", "ST", "UT", "UC"):
        return _text(identity, 64)
    if vr == "SH":
        return identity["id"]
    if vr in ("CS", "AE"):
        return identity["family"][:16]
    if vr == "UR":
        return f"http://example.org/{identity['family']}/{identity['id']}"
    if vr == "DA":
        return identity["birth"]
    if vr == "DT":
        return identity["birth"] + "101010"
    if vr == "TM":
        return "101010"
    if vr == "UI":
        return f"2.25.{digits}{index:04d}"
    if vr in ("DS", "IS"):
        return identity["birth"]
    if vr in ("US", "SS"):
        return 1958
    if vr == "AS":
        return "058Y"
    if vr in ("OB", "UN", "OW"):
        return _text(identity, 64).encode("ascii").ljust(66, b" ")
    if vr == "SQ":
        item = Dataset()
        item.PatientName = f"{identity['family']}^{identity['given']}"
        item.CodeMeaning = _text(identity, 64)
        return Sequence([item])
    raise ValueError(vr)


def plant_profile(dataset: pydicom.Dataset, identity: dict) -> int:
    """Write every profile attribute into ``dataset``; return how many were written.

    The UIDs that tie a series together (study, series, frame of reference) get one
    value per series, the instance UID one per file: the series must stay convertible.
    """
    profile = pd.read_csv(PROFILE, sep="\t", comment="#", dtype=str)
    per_file = {"SOPInstanceUID", "MediaStorageSOPInstanceUID"}
    written = 0
    for index, row in enumerate(profile.itertuples(index=False)):
        tag = int(row.tag[1:5], 16) << 16 | int(row.tag[6:10], 16)
        group = tag >> 16
        if group in (0x0000, 0x0004):
            continue  # command and directory-record attributes do not exist in an image file
        vr = dictionary_VR(tag).split(" ")[0]
        salt = int(dataset.InstanceNumber) if row.keyword in per_file else 0
        value = _value(vr, identity, index * 1000 + salt)
        if group == 0x0002:
            dataset.file_meta[tag] = pydicom.DataElement(tag, vr, value)
        else:
            dataset[tag] = pydicom.DataElement(tag, vr, value)
        written += 1
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID
    block = dataset.private_block(0x0029, "HOSPITAL PACS", create=True)
    block.add_new(0x10, "LO", _text(identity, 64))
    return written


def build_phi_tree(root: Path, scratch: Path) -> dict:
    """The hospital export described in the module docstring; returns counts for sanity checks."""
    # 2 DICOM series and a NIfTI file, then the demo's wrong-geometry phantom (not used here: the
    # search is for leaks, not registration) and its corrupt file
    table = make_demo_cohort(scratch, n_subjects=3, seed=1)
    phantoms = table.iloc[:-2]
    counts = {"profile_attributes": 0, "dicom_files": 0, "subjects": len(phantoms)}
    # the table's last row is the demo's truncated file, placed below under the last identity
    for identity, row in zip(IDENTITIES, phantoms.itertuples(index=False)):
        person = f"{identity['family']}^{identity['given']}_{identity['birth']}"
        folder = root / person
        folder.mkdir(parents=True)
        source = scratch / row.path
        if source.is_dir():
            series = folder / f"{identity['id']} T1 {identity['given']}"
            series.mkdir()
            for k, path in enumerate(sorted(source.glob("*.dcm"))):
                dataset = pydicom.dcmread(path)
                counts["profile_attributes"] = plant_profile(dataset, identity)
                dataset.save_as(series / f"{person}_{identity['id']}_{k + 1:04d}.dcm", enforce_file_format=True)
                counts["dicom_files"] += 1
        else:
            image = nib.load(source)
            image = nib.Nifti1Image(image.get_fdata(dtype="float32"), image.affine)
            image.header["descrip"] = _text(identity, 79).encode()
            image.header["aux_file"] = identity["id"].encode()
            image.header["intent_name"] = identity["family"][:15].encode()
            image.header["db_name"] = identity["birth"].encode()
            image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", _text(identity, 64).encode()))
            nib.save(image, folder / f"{person}_{identity['id']}_T1w.nii.gz")
    corrupt = IDENTITIES[-1]
    person = f"{corrupt['family']}^{corrupt['given']}_{corrupt['birth']}"
    (root / person).mkdir()
    shutil.copy(scratch / table.iloc[-1]["path"], root / person / f"{person}_{corrupt['id']}.nii.gz")
    # odd entries, named after patients too
    odd = root / f"{IDENTITIES[0]['family']} misc"
    odd.mkdir()
    os.symlink(f"{IDENTITIES[1]['id']}-b", odd / f"{IDENTITIES[1]['id']}-a")
    os.symlink(f"{IDENTITIES[1]['id']}-a", odd / f"{IDENTITIES[1]['id']}-b")
    os.symlink(f"/nonexistent/{IDENTITIES[2]['family']}.nii.gz", odd / f"{IDENTITIES[2]['family']}.nii.gz")
    os.mkfifo(odd / f"{IDENTITIES[3]['given']}.nii.gz")
    (odd / f"notes {IDENTITIES[3]['family']}.txt").write_text(f"{IDENTITIES[3]['family']} {IDENTITIES[3]['birth']}")
    return counts


# ------------------------------------------------------------------ searching


def _expanded(name: str, data: bytes, depth: int = 0) -> list[tuple[str, bytes]]:
    """``data`` and, for gzip and zip containers (.gz, .npz, .pt, .zip), what they hold."""
    found = [(name, data)]
    if depth > 3:
        return found
    if data[:2] == b"\x1f\x8b":
        try:
            found += _expanded(name + "|gunzip", gzip.decompress(data), depth + 1)
        except (OSError, EOFError):
            pass
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                found += [(f"{name}|{member}", member.encode())]
                found += _expanded(f"{name}|{member}", archive.read(member), depth + 1)
    return found


def _decoded_name(path: Path) -> str:
    """Snakemake names its metadata records by the urlsafe base64 of the output path."""
    try:
        return base64.urlsafe_b64decode(path.name + "=" * (-len(path.name) % 4)).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""


def leaks(work: Path, roots=("results", "logs", ".snakemake")) -> tuple[list[str], int]:
    """(where each planted string occurs, files searched) under ``roots`` of ``work``."""
    secrets = [s.lower().encode() for s in planted_strings()]
    found, searched = [], 0
    for root in roots:
        for path in sorted((work / root).rglob("*")):
            names = [os.fsencode(str(path.relative_to(work))), _decoded_name(path).encode()]
            texts = [(f"name of {path}", n) for n in names]
            if path.is_file() and not path.is_symlink():
                texts += _expanded(str(path.relative_to(work)), path.read_bytes())
                searched += 1
            for where, text in texts:
                lowered = text.lower()
                found += [f"{secret.decode()} in {where}" for secret in secrets if secret in lowered]
    return found, searched


# ------------------------------------------------------------------ the run


@pytest.fixture(scope="module")
def phi_run(tmp_path_factory) -> Path:
    work = copy_checkout(tmp_path_factory, "privacy")
    # the export's own folder named after a patient too (the config's input.source must not leak)
    export = work.parent / f"{IDENTITIES[0]['family']} hospital export"
    counts = build_phi_tree(export, work.parent / "scratch")
    assert counts["profile_attributes"] >= 600
    assert counts["dicom_files"] >= 2
    assert counts["subjects"] == 3
    config = yaml.safe_load(DATASETS_CONFIG.read_text())
    config["input"] = {"source": str(export)}
    # rigid registration, no brain extraction (the datasets config's choice): what is searched is every
    # output, not their quality
    config["registration"]["transform"] = "Rigid"
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(work, "--cores", "2", "all")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return work


def test_no_planted_name_date_or_id_anywhere_after_a_full_run(phi_run):
    found, searched = leaks(phi_run)
    assert found == []
    assert searched > 50
    # the search does find them where they belong: the data steward's private tables
    private, _ = leaks(phi_run, roots=("private",))
    assert any("linkage.tsv" in where for where in private)
    assert any("qc/ingest.tsv" in where for where in private)


def test_every_input_and_odd_entry_is_a_qc_row_without_a_path(phi_run):
    qc = pd.read_csv(phi_run / "results/qc/ingest.tsv", sep="\t", keep_default_na=False)
    assert list(qc.columns) == ["subject", "stage", "status", "kind", "reason", "warning"]
    by_status = qc.groupby("status")["kind"].apply(sorted).to_dict()
    assert len(by_status["ok"]) == 3
    assert by_status["failed"] == ["NIfTI file"]
    assert all(kind == "NIfTI file" or re.fullmatch(r"DICOM series \(\d+ files\)", kind) for kind in by_status["ok"])
    assert any(kind.startswith("DICOM") for kind in by_status["ok"])
    assert sorted(by_status["ignored"]) == ["named pipe (FIFO)", "other file", "symbolic link", "symbolic link",
                                            "symbolic link"]
    assert qc["reason"][qc["status"] != "ok"].str.len().gt(10).all()
    private = pd.read_csv(phi_run / "private/qc/ingest.tsv", sep="\t", keep_default_na=False)
    assert private["path"].str.contains("hospital export").all()


# ------------------------------------------------------------------ the same run, two slice datasets


def test_two_datasets_in_one_run_with_a_report_grouped_by_dataset(phi_run):
    slices = phi_run / "results/slices"
    axial, sagittal = np.load(slices / "axial32/images.npy"), np.load(slices / "sagittal16/images.npy")
    assert axial.shape[1:] == (32, 32)
    assert sagittal.shape[1:] == (16, 16)
    a = pd.read_csv(slices / "axial32/slices.tsv", sep="\t", dtype=str)
    s = pd.read_csv(slices / "sagittal16/slices.tsv", sep="\t", dtype=str)
    assert set(a["axis"]) == {"axial"}
    assert set(s["axis"]) == {"sagittal"}
    assert s["subject"].nunique() == 3
    assert s.groupby("subject").size().eq(8).all()
    # the same subjects are test in both datasets
    assert dict(zip(a["subject"], a["split"])) == dict(zip(s["subject"], s["split"]))
    for name in ("axial32", "sagittal16"):
        for suffix in ("json", "distribution.json", "domain.json", "diversity.json"):
            assert (phi_run / f"results/metrics/original/{name}.{suffix}").is_file()
        assert (phi_run / f"results/reader_study/{name}/answer_key.tsv").is_file()
    key = pd.read_csv(phi_run / "results/reader_study/sagittal16/answer_key.tsv", sep="\t", dtype=str)
    assert set(key["source"]) == {"real", "vae16"}  # the kit mixes the dataset's own model and real slices
    summary = pd.read_csv(phi_run / "results/report/summary.tsv", sep="\t")
    assert dict(zip(summary["model"], summary["dataset"])) == {"vae32": "axial32", "vae16": "sagittal16"}
    html = (phi_run / "results/report/index.html").read_text()
    summary_html = html.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert summary_html.count('class="dataset-block" data-dataset="axial32"') == 1
    assert summary_html.count('class="dataset-block" data-dataset="sagittal16"') == 1
    block = summary_html.split('data-dataset="sagittal16"', 1)[1]
    assert 'data-model="vae16"' in block
    assert 'data-model="vae32"' not in block
    # ingest QC is the cohort's, shown once
    assert html.count('id="ingest-qc"') == 1


def _stale_outputs(work: Path) -> set[tuple[str, str]]:
    return {(row["rule"], row["output_file"]) for row in summary_table(work) if row["plan"] != "no update"}


def test_changing_one_datasets_setting_reruns_only_that_datasets_chain(phi_run):
    config_file = phi_run / "config.yaml"
    original = config_file.read_text()
    config = yaml.safe_load(original)
    config["datasets"]["sagittal16"]["selection"]["n"] = 6
    config_file.write_text(yaml.safe_dump(config))
    try:
        stale = _stale_outputs(phi_run)
        files = {path for _, path in stale}
        assert any("slices/sagittal16/" in f for f in files)
        assert not any(re.search(r"axial32|vae32", f) for f in files), sorted(files)
        jobs = dry_run_jobs(phi_run)
        assert jobs["slice_dataset"] == 1
        assert jobs["train"] == 1
        assert jobs["report"] == 1
        assert jobs["real_features"] == 2
        assert jobs["reader_kit"] == 1
    finally:
        config_file.write_text(original)
    assert dry_run_jobs(phi_run) == {}
