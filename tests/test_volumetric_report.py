"""The report's 3-D section (report/volumetric_section.py) on records and figures written here: shown
only with 3-D runs, their orthogonal views, the volumetric table (means over seeds) and the three-plane
slice metrics beside the 2-D models' same metrics; a failed 3-D run is listed, not shown."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report import REPO, make_data, make_run, parse

from pipeline_lib.core.figures import encode_png_gray8, to_uint8
from pipeline_lib.core.guard import failure_record, write_failed_records
from pipeline_lib.core.provenance import provenance
from pipeline_lib.evaluation.volumetric import FID_25D_NOTE, PLANES, orthogonal_views
from pipeline_lib.report import document as report
from pipeline_lib.report import inputs, volumetric_section
from pipeline_lib.report.html import escape

EVIL_3D = '<i>3d & "gan"</i>'


def volumetric_record(fid: float, seed: int) -> dict:
    """A volumetric_metrics record (evaluation/volumetric.volumetric_metrics) with known values."""
    plane_values = {p: {"dataset_similarity": 0.01 * (i + 1) + seed / 1000, "isd": 0.02 * (i + 1),
                        "min_isd": 0.001 * (i + 1), "sharpness_mean": 100.0 * (i + 1), "sharpness_std": 1.0,
                        "ms_ssim_mean": 0.5 + seed / 10}
                    for i, p in enumerate(PLANES)}
    return {"kind": "volumetric", "n_samples": 4, "n_train": 9, "n_test": 3, "volume_shape": [1, 16, 16, 16],
            "slice_indices": {p: [4, 8, 11] for p in PLANES}, "planes": plane_values,
            "real_planes": {p: {**v, "dataset_similarity": 0.005} for p, v in plane_values.items()},
            "fid": {"fid_axial": fid, "fid_coronal": fid + 3, "fid_sagittal": fid + 6, "fid_2_5d": fid + 3,
                    "note": FID_25D_NOTE, "warning": "FID computed on 32 images per set, fewer than 2048"},
            "ms_ssim_3d": {"ms_ssim_3d_mean": 0.4 + seed / 10, "ms_ssim_3d_std": 0.1},
            "ms_ssim_3d_real": {"ms_ssim_3d_mean": 0.35, "ms_ssim_3d_std": 0.05},
            "memorization": {"voxel": {"fraction_likely_copies": 0.25 * seed}},
            "brain_volume": {"generated_ml": {"mean": 1200.0 + seed, "std": 5.0}, "real_ml": {"mean": 1250.0, "std": 4.0},
                             "wasserstein_ml": 50.0 - seed},
            "tissue_intensity": {"wasserstein": 0.02, "bins": 100}}


def volume_run(root: Path, model: str, seed: int, fid: float) -> inputs.ModelOutputs:
    folder = root / "volume_runs" / f"{abs(hash(model)) % 10_000}" / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "volumetric.json").write_text(json.dumps(volumetric_record(fid, seed)))
    volumes = np.random.default_rng(seed).random((2, 1, 6, 6, 6)).astype(np.float32)
    (folder / "views.png").write_bytes(encode_png_gray8(to_uint8(orthogonal_views(volumes, volumes))))
    return inputs.ModelOutputs(volumetric=folder / "volumetric.json", volumetric_views=folder / "views.png")


def volume_runs(root: Path) -> dict[str, list[inputs.Run]]:
    fids = {"ddpm3d": [40.0, 44.0], EVIL_3D: [90.0]}
    return {model: [inputs.Run.read(seed, volume_run(root, model, seed, fid), inputs.VOLUME_FILE_INPUTS)
                    for seed, fid in enumerate(values)] for model, values in fids.items()}


def build(root: Path, data: inputs.ReportData, sections=None) -> str:
    out = root / "report" / "index.html"
    report.build_report(out, data, sections=sections)
    return out.read_text()


def cell(page, table: str, model: str, metric: str) -> float:
    return float(page.cells[(table, model, metric)]["data-value"])


def test_without_3d_runs_the_page_is_the_page_without_the_section(tmp_path):
    data = make_data(tmp_path)
    text = build(tmp_path, data)
    without = [s for s in report.SECTIONS if s not in volumetric_section.SECTIONS]
    assert text == build(tmp_path / "other", data, sections=without)
    assert "volumetric" not in " ".join(parse(text).ids)


def test_3d_runs_get_views_volumetric_metrics_and_slice_metrics_beside_the_2d_models(tmp_path):
    data = make_data(tmp_path)
    plain = parse(build(tmp_path / "plain", data))
    data.volume_runs = volume_runs(tmp_path)
    text = build(tmp_path, data)
    page = parse(text)
    for anchor in ("volumetric-views", "volumetric", "volumetric-slices"):
        assert anchor in page.ids
        assert anchor in page.links
    assert len(page.ids) == len(set(page.ids))
    assert len(page.images) == len(plain.images) + 3  # one orthogonal-views figure per 3-D run
    assert "&lt;i&gt;3d &amp; &quot;gan&quot;&lt;/i&gt; (seed 0)" not in text  # one run: no seed label
    assert "ddpm3d (seed 1)" in text
    assert EVIL_3D not in text
    # the volumetric table: a real row, then each 3-D model's mean over its seeds
    assert page.rows["volumetric-metrics"] == ["original", "ddpm3d", EVIL_3D]
    assert cell(page, "volumetric-metrics", "ddpm3d", "fid_2_5d") == pytest.approx(45.0)
    assert cell(page, "volumetric-metrics", "ddpm3d", "fid_sagittal") == pytest.approx(48.0)
    assert cell(page, "volumetric-metrics", "ddpm3d", "likely_copies") == pytest.approx(0.125)
    assert cell(page, "volumetric-metrics", "ddpm3d", "brain_w1") == pytest.approx(49.5)
    assert cell(page, "volumetric-metrics", "original", "ms_ssim_3d") == pytest.approx(0.35)
    assert cell(page, "volumetric-metrics", "original", "brain_ml") == pytest.approx(1250.0)
    assert page.cells[("volumetric-metrics", "original", "fid_2_5d")]["data-value"] == "nan"
    assert "2.5-D FID" in text
    assert 'data-kind="small FID sample"' in text
    # the slice table: the 3-D models per plane, the real volumes per plane, then the 2-D models
    rows = re.findall(r'<tr (?:class="reference" )?data-model="([^"]*)"(?: data-plane="(\w+)")? data-kind="([^"]+)"',
                      re.search(r'<table id="volumetric-slice-metrics">.*?</table>', text, re.S).group(0))
    assert rows[:9] == [(escape(m), p, "3-D") for m in ("ddpm3d", EVIL_3D, "original") for p in PLANES]
    assert [model for model, _, kind in rows if kind == "2-D"] == [*map(escape, data.runs), "original"]
    # the slice metrics' cells: the last model's row of each kind wins in page.cells, so read the table
    axial = re.search(r'data-model="ddpm3d" data-plane="axial".*?</tr>', text, re.S).group(0)
    ds = float(re.search(r'data-metric="dataset_similarity" data-value="([^"]+)"', axial).group(1))
    assert ds == pytest.approx(np.mean([0.01, 0.011]))
    vae = re.search(r'data-model="vae" data-kind="2-D">.*?</tr>', text, re.S).group(0)
    isd = float(re.search(r'data-metric="isd" data-value="([^"]+)"', vae).group(1))
    assert isd == pytest.approx(np.mean([run.metrics["isd"] for run in data.runs["vae"]]))
    ms_ssim = float(re.search(r'data-metric="ms_ssim_mean" data-value="([^"]+)"', vae).group(1))
    assert ms_ssim == pytest.approx(np.mean([run.diversity["ms_ssim_mean"] for run in data.runs["vae"]]))
    real = re.search(r'data-model="original" data-kind="2-D">.*?</tr>', text, re.S).group(0)
    assert f'data-value="{data.diversity_original["ms_ssim_mean"]!r}"' in real
    axial_ms_ssim = re.search(r'data-metric="ms_ssim_mean" data-value="([^"]+)"', axial).group(1)
    assert float(axial_ms_ssim) == pytest.approx(0.55)


def test_the_report_job_reads_3d_runs_and_lists_a_failed_one(tmp_path):
    """The report rule's path: ReportInputs.volume_runs (REPORT_VOLUME_RUN_INPUTS) in, a failed 3-D run
    under "Failed model runs" and out of the 3-D tables."""
    data = make_data(tmp_path / "data")
    runs = {"vae": {0: make_run(tmp_path / "runs", "vae", 0, 100.0)}}
    ok = volume_run(tmp_path, "ddpm3d", 0, 40.0)
    failed = volume_run(tmp_path, "gan3d", 0, 90.0)
    write_failed_records(failed.paths.values(), failure_record("volumetric_metrics", "killed (out of memory)"))

    def write(name: str, content) -> Path:
        path = tmp_path / name
        if isinstance(content, pd.DataFrame):
            content.to_csv(path, sep="\t", index=False)
        else:
            path.write_text(json.dumps(content))
        return path

    np.save(tmp_path / "images.npy", np.random.default_rng(0).random((12, 8, 8)).astype(np.float32))
    dataset = inputs.DatasetOutputs(
        table=write("slices.tsv", pd.DataFrame({"subject": [f"sub-{i // 3:010d}" for i in range(12)],
                                                "split": ["train"] * 9 + ["test"] * 3, "slice_index": range(12)})),
        images=tmp_path / "images.npy", original=write("original.json", data.original),
        distribution_original=write("dist.json", data.distribution_original),
        domain_network=write("net.json", data.domain_network), domain_original=write("dom.json", data.domain_original),
        diversity_original=write("div.json", data.diversity_original))
    job_inputs = inputs.ReportInputs(
        subjects=write("subjects.tsv", pd.DataFrame({"subject": ["sub-0000000000"]})),
        ingest_qc=write("ingest.tsv", pd.DataFrame({"subject": ["sub-0000000000"], "kind": ["NIfTI file"],
                                                    "status": ["ok"], "reason": [""], "warning": [""]})),
        registration_qc=write("registration.tsv", pd.DataFrame({"subject": ["sub-0000000000"], "status": ["ok"]})),
        registered=[], datasets={"t1": dataset}, models=runs,
        volume_runs={"ddpm3d": {0: ok}, "gan3d": {0: failed}})
    out = tmp_path / "report" / "index.html"
    report.report_job(out, job_inputs, registration={}, sampling={}, synthetic_cohort=False, title="Job",
                      provenance=provenance({}, REPO), summary_tsv=tmp_path / "report" / "summary.tsv")
    text = out.read_text()
    page = parse(text)
    assert page.rows["volumetric-metrics"] == ["original", "ddpm3d"]
    assert cell(page, "volumetric-metrics", "ddpm3d", "fid_2_5d") == pytest.approx(43.0)
    failed_list = re.search(r'id="failed-runs".*?</table>', text, re.S).group(0)
    assert "gan3d" in failed_list
    assert "killed (out of memory)" in failed_list
    assert "gan3d" in (tmp_path / "report" / "summary.tsv").read_text()
    # the 3-D run has its own row in summary.tsv (a 3-D-only run's table is not empty)
    table = pd.read_csv(tmp_path / "report" / "summary.tsv", sep="\t")
    row = table[table["model"] == "ddpm3d"].iloc[0]
    assert (row["kind"], row["runs"], row["fid_2_5d_mean"], row["fid_2_5d_n"]) == ("3-D", 1, pytest.approx(43.0), 1)


def test_a_covariate_conditional_run_gets_the_conditioning_table_and_an_unmeasurable_covariate_a_note(tmp_path):
    data = make_data(tmp_path)
    data.volume_runs = volume_runs(tmp_path)
    assert "volumetric-conditioning" not in parse(build(tmp_path / "plain", data)).ids
    for seed, run in enumerate(data.volume_runs["ddpm3d"]):
        run.volumetric["conditioning"] = {
            "brain_volume_ml": {"n": 4, "pearson_r": 0.8 + seed / 10, "slope": 0.7, "mae": 30.0 + 10 * seed,
                                "mae_if_ignored": 120.0, "requested": {"min": 900.0, "max": 1500.0},
                                "measured": {"mean": 1200.0, "std": 100.0}},
            "age": {"measured": None, "note": "'age' cannot be measured on a generated volume here"}}
    text = build(tmp_path, data)
    page = parse(text)
    assert "volumetric-conditioning" in page.ids
    assert page.rows["volumetric-conditioning"] == ["ddpm3d"]  # only the measurable covariate has a row
    assert cell(page, "volumetric-conditioning", "ddpm3d", "pearson_r") == pytest.approx(0.85)
    assert cell(page, "volumetric-conditioning", "ddpm3d", "mae") == pytest.approx(35.0)
    assert cell(page, "volumetric-conditioning", "ddpm3d", "mae_if_ignored") == pytest.approx(120.0)
    assert 'data-kind="covariate not checked"' in text
    assert "&#x27;age&#x27; cannot be measured on a generated volume here" in text
