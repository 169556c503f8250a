"""The HTML report: self-contained, escaped, with Table-1 numbers readable back."""

from __future__ import annotations

import base64
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from pipeline_lib.report import document as report  # noqa: E402
from pipeline_lib.core.errors import InputError  # noqa: E402

MODELS = ["vae", "dcgan", "<b>evil & \"model\"</b>"]


class _Cells(HTMLParser):
    """Collects Table-1 cells (data-model of the row, data-metric, data-value, data-std)."""

    def __init__(self) -> None:
        super().__init__()
        self.table_id: str | None = None
        self.row_model: str | None = None
        self.cells: dict[tuple[str, str], dict[str, str]] = {}
        self.rows: dict[str, list[str]] = {}
        self.images: list[str] = []
        self.scripts = 0
        self.in_table = False
        self._tables: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._tables.append(attrs.get("id", ""))
        if tag == "tr" and "data-model" in attrs:
            self.row_model = attrs["data-model"]
            self.rows.setdefault(self._tables[-1], []).append(self.row_model)
        if tag == "td" and "data-metric" in attrs and self._tables and self._tables[-1] == "table1":
            self.cells[(self.row_model, attrs["data-metric"])] = attrs
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._tables.pop()


def _png(path: Path, value: float) -> Path:
    fig, ax = plt.subplots(figsize=(1, 1), dpi=20)
    ax.imshow(np.full((4, 4), value), cmap="gray", vmin=0, vmax=1)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _metrics(seed: int, recon: bool) -> dict:
    rng = np.random.default_rng(seed)
    values = {
        "dataset_similarity": float(rng.random() / 10),
        "isd": float(rng.random() / 10),
        "min_isd": float(rng.random() / 100),
        "sharpness_mean": float(1000 + 1000 * rng.random()),
        "sharpness_std": float(500 * rng.random()),
        "sharpness_scale": 255.0,
        "n_samples": 64,
        "n_originals": 80,
    }
    if recon:
        values |= {
            "recon_mse_mean": 0.004123456,
            "recon_mse_std": 0.02,
            "recon_sharpness_mean": 349.0,
            "recon_sharpness_std": 160.0,
            "original_sharpness_mean": 1495.0,
            "original_sharpness_std": 659.0,
            "n_reconstructions": 80,
        }
    return values


@pytest.fixture
def inputs(tmp_path) -> dict:
    images = tmp_path / "img"
    images.mkdir()
    losses = {}
    for i, model in enumerate(MODELS):
        csv = tmp_path / f"losses{i}.csv"
        steps = np.arange(1, 21)
        frame = pd.DataFrame({"step": steps, "loss_g": 1.0 / steps, "loss_d": np.linspace(2, 0.5, 20)})
        if i == 1:
            frame["loss_d"] = -frame["loss_d"]  # a WGAN critic loss: negative, so linear y
        frame.to_csv(csv, index=False)
        losses[model] = csv
    return dict(
        cohort={
            "subjects_found": 5,
            "subjects_ingested": 4,
            "subjects_registered": 4,
            "subjects_failed": 1,
            "slices_train": 120,
            "slices_test": 30,
            "image_size": [64, 64],
        },
        ingest_qc=pd.DataFrame(
            {
                "subject": ["sub-0123456789", "sub-abcdefabcd"],
                "status": ["ok", "failed"],
                "file": ["in/a.nii.gz", "in/<broken>.nii"],
                "reason": [np.nan, "truncated gzip & bad header"],
            }
        ),
        registration_qc=pd.DataFrame(
            {
                "subject": ["sub-0123456789"],
                "correlation_before": [0.41234567],
                "correlation_after": [0.9312],
            }
        ),
        overlays={"sub-0123456789": _png(images / "overlay.png", 0.3)},
        metrics={
            MODELS[0]: _metrics(1, recon=True),
            MODELS[1]: _metrics(2, recon=False),
            MODELS[2]: _metrics(3, recon=False) | {"min_isd": float("nan")},
        },
        original_metrics=_metrics(0, recon=False) | {"n_samples": 80},
        sample_grids={m: _png(images / f"grid{i}.png", 0.5) for i, m in enumerate(MODELS)},
        reconstruction_grids={MODELS[0]: _png(images / "recon.png", 0.7)},
        losses=losses,
        model_info={
            MODELS[0]: {"family": "vae", "hyperparameters": {"lr": 1e-4, "latent": 128}, "steps": 200,
                        "device": "cpu", "wall_time_s": 12.3456},
            MODELS[1]: {"family": "dcgan", "hyperparameters": {"lr": 2e-4}, "steps": 300, "device": "cuda",
                        "wall_time_s": 45.0},
            MODELS[2]: {"family": "<script>", "steps": 1},
        },
        synthetic_cohort=True,
    )


def _build(tmp_path: Path, inputs: dict, **overrides) -> str:
    out = tmp_path / "report" / "index.html"
    report.build_report(out, **(inputs | overrides))
    return out.read_text()


def test_report_is_one_self_contained_file(tmp_path, inputs):
    text = _build(tmp_path, inputs)
    out_dir = tmp_path / "report"
    assert [p.name for p in out_dir.iterdir()] == ["index.html"]  # no temp files or side files
    assert not re.search(r"https?://", text)
    assert "<script" not in text.lower()
    assert "<link" not in text.lower()
    parser = _Cells()
    parser.feed(text)
    assert parser.scripts == 0
    # 1 overlay + 3 sample grids + 1 reconstruction grid + 3 loss plots, all inline PNG
    assert len(parser.images) == 8
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")


def test_table1_rows_and_values_parse_back(tmp_path, inputs):
    text = _build(tmp_path, inputs)
    parser = _Cells()
    parser.feed(text)
    assert parser.rows["table1"] == ["Original", *MODELS]
    expected = {"Original": inputs["original_metrics"], **inputs["metrics"]}
    for model, values in expected.items():
        for key in ["dataset_similarity", "isd", "min_isd", "sharpness_mean"]:
            cell = parser.cells[(model, key)]
            got = float(cell["data-value"])
            if math.isnan(values[key]):
                assert math.isnan(got)
            else:
                assert got == values[key]  # repr(float) round-trips exactly
        assert float(parser.cells[(model, "sharpness_mean")]["data-std"]) == values["sharpness_std"]
    # Every model appears in the model-info table too; only the VAE in the reconstruction table.
    assert parser.rows["models"] == MODELS
    assert parser.rows["reconstruction"] == [MODELS[0]]


def test_numbers_shown_with_four_significant_digits_and_nan_as_na(tmp_path, inputs):
    text = _build(tmp_path, inputs)
    value = inputs["original_metrics"]["dataset_similarity"]
    assert f">{value:.4g}<" in text
    assert "0.004123 ± 0.02" in text
    assert "0.4123" in text and "0.41234567" not in text.replace('data-value="0.41234567"', "")
    nan_cell = re.search(r'<td class="num na"[^>]*data-metric="min_isd"[^>]*>([^<]*)</td>', text)
    assert nan_cell is not None and nan_cell.group(1) == "n/a"
    assert report.format_number(float("inf")) == "n/a"
    assert report.format_number(1495.3) == "1495"
    assert report.format_number(None) == "n/a"


def test_caption_states_counts_and_scale(tmp_path, inputs):
    text = _build(tmp_path, inputs)
    caption = re.search(r'<table id="table1"><caption>(.*?)</caption>', text, re.S).group(1)
    assert "Original: 80 images" in caption
    assert "vae: 64 samples vs 80 originals" in caption
    assert "255" in caption and "8-bit" in caption


def test_banner_only_for_synthetic_cohort(tmp_path, inputs):
    with_banner = _build(tmp_path, inputs)
    assert 'id="synthetic-banner"' in with_banner
    banner = re.search(r'<div class="banner" id="synthetic-banner">(.*?)</div>', with_banner, re.S).group(1)
    assert "synthetic" in banner and "MNI152" in banner
    assert "supports no claim about model quality" in banner
    assert with_banner.index("synthetic-banner") < with_banner.index('id="table1"')
    without = _build(tmp_path, inputs, synthetic_cohort=False)
    assert 'id="synthetic-banner"' not in without
    assert "MNI152" not in without


def test_text_from_inputs_is_escaped(tmp_path, inputs):
    text = _build(tmp_path, inputs)
    assert "<b>evil" not in text
    assert "&lt;b&gt;evil &amp; &quot;model&quot;&lt;/b&gt;" in text
    assert "in/&lt;broken&gt;.nii" in text
    assert "truncated gzip &amp; bad header" in text
    assert "<script>" not in text and "&lt;script&gt;" in text


def test_qc_tables_and_cohort(tmp_path, inputs):
    text = _build(tmp_path, inputs)
    ingest = re.search(r'<table id="ingest-qc">.*?</table>', text, re.S).group(0)
    assert ingest.count("<tr") == 3
    assert '<tr class="failed">' in ingest and "sub-abcdefabcd" in ingest
    assert "nan" not in ingest.replace('data-value="nan"', "")  # empty reason shows as empty
    registration = re.search(r'<table id="registration-qc">.*?</table>', text, re.S).group(0)
    assert 'alt="overlay sub-0123456789"' in registration
    assert "0.9312" in registration
    cohort = re.search(r'<table id="cohort">.*?</table>', text, re.S).group(0)
    for label, value in [("Subjects found", "5"), ("Subjects failed", "1"), ("Slices (test)", "30"),
                         ("Image size (pixels)", "64 × 64")]:
        assert f"<th>{label}</th><td>{value}</td>" in cohort
    assert "lr=0.0001, latent=128" in text


def test_loss_plot_log_scale_only_when_positive(tmp_path, monkeypatch):
    steps = np.arange(1, 11)
    positive = tmp_path / "pos.csv"
    pd.DataFrame({"step": steps, "a": 10.0 ** -steps.astype(float)}).to_csv(positive, index=False)
    mixed = tmp_path / "mixed.csv"
    pd.DataFrame({"step": steps, "a": np.linspace(-1, 1, 10)}).to_csv(mixed, index=False)
    assert report.plot_losses(positive).startswith(b"\x89PNG")
    assert report.plot_losses(mixed).startswith(b"\x89PNG")

    # Check the axis decision itself by looking at the figure as it is closed.
    scales = []
    real_close = plt.close

    def spy(fig=None):
        if fig is not None and hasattr(fig, "axes"):
            scales.append(fig.axes[0].get_yscale())
        return real_close(fig)

    monkeypatch.setattr(plt, "close", spy)
    report.plot_losses(positive)
    report.plot_losses(mixed)
    assert scales == ["log", "linear"]


def test_bad_inputs_name_the_file(tmp_path, inputs):
    no_step = tmp_path / "nostep.csv"
    no_step.write_text("iteration,loss\n1,0.5\n")
    with pytest.raises(InputError, match="nostep.csv.*step"):
        _build(tmp_path, inputs, losses={"vae": no_step})
    not_png = tmp_path / "grid.png"
    not_png.write_text("GIF89a")
    with pytest.raises(InputError, match="grid.png.*not a PNG"):
        _build(tmp_path, inputs, sample_grids={"vae": not_png})
    with pytest.raises(InputError, match="missing.png"):
        _build(tmp_path, inputs, overlays={"sub-0123456789": tmp_path / "missing.png"})
    assert not (tmp_path / "report" / "index.html").exists()


def test_registration_qc_lists_flagged_subjects_worst_first_with_reasons(tmp_path, inputs):
    frame = pd.DataFrame({
        "subject": ["sub-000000000a", "sub-000000000b", "sub-000000000c", "sub-000000000d"],
        "status": ["ok", "flagged", "ok", "failed"],
        "mask_dice": [0.95, 0.61, 0.91, np.nan],
        "scale_x": [1.0, 0.78, 1.02, np.nan],
        "reason": ["", "brain mask overlap 0.61 < 0.85; scales 0.78/0.81/0.74 outside 0.8–1.25", "",
                   "brain extraction (deepbet) found 12 ml of brain"],
    })
    overlays = {s: _png(tmp_path / f"{s}.png", 0.5) for s in ["sub-000000000a", "sub-000000000b", "sub-000000000c"]}
    text = _build(tmp_path, inputs, registration_qc=frame, overlays=overlays,
                  registration_caption="Worst first. <gate>")
    table = re.search(r'<table id="registration-qc">.*?</table>', text, re.S).group(0)
    order = re.findall(r"<td>(sub-[0-9a-f]{10})</td>", table)
    assert order == ["sub-000000000d", "sub-000000000b", "sub-000000000c", "sub-000000000a"]
    flagged_row = re.search(r'<tr class="flagged">.*?</tr>', table, re.S).group(0)
    assert "sub-000000000b" in flagged_row and "scales 0.78/0.81/0.74 outside 0.8–1.25" in flagged_row
    assert 'data-value="0.61"' in flagged_row
    # the overlay is a link to itself: clicking enlarges it (CSS :target, no script)
    assert 'href="#overlay-sub-000000000b"' in flagged_row and 'id="overlay-sub-000000000b"' in flagged_row
    assert "<caption>Worst first. &lt;gate&gt;</caption>" in table
    assert "<script" not in text.lower()
