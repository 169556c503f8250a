"""The HTML report: the answer first (summary, best per column, spreads over seeds, a conclusion the
numbers support), a table of contents, sections by question, one warning per kind, 8-bit grey
images, a provenance footer; self-contained, escaped, numbers readable back."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from pipeline_lib.core.errors import InputError  # noqa: E402
from pipeline_lib.core.figures import save_grid  # noqa: E402
from pipeline_lib.core.provenance import config_digest, provenance  # noqa: E402
from pipeline_lib.core.published import PROTOCOL_GROUPS  # noqa: E402
from pipeline_lib.report import document as report  # noqa: E402
from pipeline_lib.report import inputs, qc_section, summary_section, training_section  # noqa: E402
from pipeline_lib.report.html import data_uri, format_mean_std, format_number  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

EVIL = "<b>evil & \"model\"</b>"
# model -> FID of each seed: vae clearly best, dcgan and EVIL overlap.
FIDS = {"vae": [100.0, 102.0, 98.0], "dcgan": [150.0, 170.0, 160.0], EVIL: [165.0, 140.0]}


class _Page(HTMLParser):
    """ids, links, images and the cells of every table (by table id)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.links: list[str] = []
        self.images: list[str] = []
        self.scripts = 0
        self.tables: list[str] = []
        self.rows: dict[str, list[str]] = {}
        self.cells: dict[tuple[str, str, str], dict[str, str]] = {}
        self._row: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "a" and attrs.get("href", "").startswith("#"):
            self.links.append(attrs["href"][1:])
        if tag == "table":
            self.tables.append(attrs.get("id", ""))
        if tag == "tr":
            self._row = attrs.get("data-model")
            if self._row is not None:
                self.rows.setdefault(self.tables[-1], []).append(self._row)
        if tag == "td" and "data-metric" in attrs and self.tables:
            self.cells[(self.tables[-1], self._row, attrs["data-metric"])] = attrs
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self.tables.pop()


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _png(path: Path, value: float) -> Path:
    fig, ax = plt.subplots(figsize=(1, 1), dpi=20)
    ax.imshow(np.full((4, 4), value), cmap="gray", vmin=0, vmax=1)
    fig.savefig(path, format="png")  # matplotlib writes RGBA
    plt.close(fig)
    return path


def _distribution(fid: float, warn: bool) -> dict:
    return {"fid": {"mean": fid, "std": 3.0, "repeats": 3, "subset_size": 64, "values": [fid - 3, fid, fid + 3],
                    "warning": warn},
            "fid_all": fid - 1, "kid": {"mean": fid / 1e4, "std": 0.001}, "fid_per_class": None,
            "prdc": {"precision": 1 / fid * 50, "recall": 0.3, "density": 0.4, "coverage": 0.5, "nearest_k": 5},
            "n_samples": 64, "n_real": 80, "warning": warn,
            "warning_message": "FID computed on 64 images per set, fewer than the 2048 feature dimensions" if warn else None}


def _metrics(seed: int, recon: bool) -> dict:
    rng = np.random.default_rng(seed)
    values = {"dataset_similarity": float(rng.random() / 10), "isd": float(rng.random() / 10),
              "min_isd": float(rng.random() / 100), "sharpness_mean": float(1000 + 1000 * rng.random()),
              "sharpness_std": float(500 * rng.random()), "sharpness_scale": 255.0, "n_samples": 64,
              "n_originals": 80}
    if recon:
        values |= {"recon_mse_mean": 0.004123456, "recon_mse_std": 0.002, "recon_mse_pixel_std": 0.02,
                   "recon_sharpness_mean": 349.0,
                   "recon_sharpness_std": 160.0, "original_sharpness_mean": 1495.0, "original_sharpness_std": 659.0,
                   "n_reconstructions": 80}
    return values


def _write(path: Path, record: dict) -> Path:
    path.write_text(json.dumps(record))
    return path


def make_run(root: Path, model: str, seed: int, fid: float, *, incomplete: bool = False) -> inputs.ModelOutputs:
    folder = root / f"{abs(hash(model)) % 10_000}" / f"seed{seed}"
    folder.mkdir(parents=True)
    steps = np.arange(1, 21)
    pd.DataFrame({"step": steps, "loss": 1.0 / steps}).to_csv(folder / "losses.csv", index=False)
    save_grid(np.random.default_rng(seed).random((16, 8, 8)).astype(np.float32), folder / "grid.png")
    np.save(folder / "recon.npy", np.zeros((0, 8, 8), np.float32))
    summary = {"model": model, "family": "vae" if model == "vae" else "<script>", "seed": seed,
               "hparams": {"lr": 1e-4, "latent": 128}, "steps": 7 if incomplete else 20, "target_steps": 20,
               "incomplete": incomplete, "budget": {"steps": 20, "minutes": 2}, "train_seconds": 12.3456,
               "device": "cpu"}
    memo = {"percentile": 5.0, "n_samples": 64, "n_train": 120, "n_test_reference": 40, "gallery_k": 4,
            "seed": seed, "pixel": {"threshold": 0.004, "fraction_likely_copies": 0.05 + seed / 100,
                                    "samples": {"median": 0.01}, "reference": {"median": 0.02}},
            "domain": {"threshold": 0.1, "fraction_likely_copies": 0.07}}
    utility = {"applicable": True, "task": "slice position", "chance": 1 / 3, "n_test": 40, "seeds": [0],
               "real": {"mean": 0.8, "std": 0.01, "n_train_images": 120},
               "synthetic": {"mean": 0.6, "std": 0.1, "n_train_images": 64},
               "real+synthetic": {"mean": 0.8 + fid / 10_000, "std": 0.02, "n_train_images": 184},
               "synthetic_labels": "predicted"}
    files = dict(
        summary=_write(folder / "summary.json", summary), losses=folder / "losses.csv", grid=folder / "grid.png",
        reconstructions=folder / "recon.npy", metrics=_write(folder / "metrics.json", _metrics(seed, model == "vae")),
        distribution=_write(folder / "distribution.json", _distribution(fid, warn=True)),
        domain=_write(folder / "domain.json", {"domain_fd": fid / 100, "domain_precision": 0.5, "domain_recall": 0.4,
                                               "domain_density": 0.6, "domain_coverage": 0.7, "nearest_k": 5,
                                               "n_samples": 64, "n_reference": 120, "feature_dim": 64}),
        memorization=_write(folder / "memo.json", memo), gallery=_png(folder / "gallery.png", 0.4),
        conditioning=_write(folder / "cond.json", {"conditional": False, "note": "not conditional"}),
        utility=_write(folder / "utility.json", utility),
        validation=_validation_csv(folder / "validation.csv"), snapshots=_snapshots(folder / "snapshots.npz", seed),
        diversity=_write(folder / "diversity.json", {"ms_ssim_mean": 0.3 + seed / 100, "ms_ssim_std": 0.05,
                                                     "n_pairs": 100, "n_images": 64, "ms_ssim_scales": 3,
                                                     "kernel_size": 3}))
    # Every other input the report rule names (a metric added there) is an empty record here.
    for name in set(report_run_inputs()) - set(files):
        files[name] = _write(folder / f"{name}.json", {})
    return inputs.ModelOutputs(**files)


def report_run_inputs() -> list[str]:
    """The report rule's per-run input names (REPORT_RUN_INPUTS in workflow/rules/report.smk)."""
    text = (Path(__file__).resolve().parents[1] / "workflow" / "rules" / "report.smk").read_text()
    block = re.search(r"^REPORT_RUN_INPUTS = dict\(\n(.*?)^\)", text, re.S | re.M).group(1)
    return re.findall(r"^\s+(\w+)=", block, re.M)


def test_the_fixture_runs_have_the_report_rules_inputs(tmp_path):
    """The page tests read what the report rule gives a run, nothing more: a run's files carry
    exactly the rule's per-run input names, and those the page reads by path are among them."""
    names = report_run_inputs()
    assert len(names) >= 14, names
    assert inputs.FILE_INPUTS <= set(names), names
    files = make_run(tmp_path, "vae", 0, 100.0)
    assert sorted(files.paths) == sorted(names)
    run = inputs.Run.read(0, files)
    assert set(run.records) == set(names) - inputs.FILE_INPUTS
    assert run.metrics == run.records["metrics"]
    with pytest.raises(AttributeError, match="no record 'nonexistent'"):
        run.nonexistent


def _validation_csv(path: Path) -> Path:
    pd.DataFrame({"step": [10, 20], "loss": [0.2, 0.1]}).to_csv(path, index=False)
    return path


def _snapshots(path: Path, seed: int) -> Path:
    images = np.random.default_rng(seed).random((2, 4, 8, 8)).astype(np.float32)
    np.savez(path, steps=np.array([10, 20]), kinds=np.array(["samples", "samples"]), images=images)
    return path


def make_data(root: Path, fids=FIDS, incomplete=()) -> inputs.ReportData:
    runs = {model: [inputs.Run.read(seed, make_run(root / "runs", model, seed, fid,
                                                   incomplete=(model, seed) in incomplete))
                    for seed, fid in enumerate(values)]
            for model, values in fids.items()}
    images = root / "img"
    images.mkdir(exist_ok=True)
    scores = _write(root / "scores.json", {"status": "no responses", "kit_id": "k1", "n_images": 10})
    config = {"privacy": {"pseudonym_salt": "secret-salt-123"}, "training": {"seeds": [0, 1, 2]},
              "models": {"vae": {"family": "vae", "budget": {"steps": 20}}}}
    return inputs.ReportData(
        runs=runs,
        cohort={"subjects_found": 5, "subjects_ingested": 4, "subjects_registered": 4, "subjects_failed": 1,
                "slices_train": 120, "slices_test": 30, "image_size": [64, 64]},
        ingest_qc=pd.DataFrame({"subject": ["sub-0123456789", "sub-abcdefabcd"],
                                "kind": ["NIfTI file", "DICOM <series>"], "status": ["ok", "failed"],
                                "reason": [np.nan, "truncated gzip & bad header"], "warning": ["", ""]}),
        registration_qc=pd.DataFrame({"subject": ["sub-0123456789"], "correlation_before": [0.41234567],
                                      "correlation_after": [0.9312]}),
        overlays={"sub-0123456789": _png(images / "overlay.png", 0.3)},
        original=_metrics(0, recon=False) | {"n_samples": 80},
        distribution_original=_distribution(20.0, warn=True) | {"prdc": {"precision": 0.9, "recall": 0.8,
                                                                          "density": 1.0, "coverage": 0.9,
                                                                          "nearest_k": 5}},
        domain_network={"feature_dim": 64, "n_train": 120, "test": {"n_images": 30}},
        domain_original={"domain_fd": 0.05, "domain_precision": 0.9, "domain_recall": 0.9, "domain_density": 1,
                         "domain_coverage": 0.9, "nearest_k": 5, "n_samples": 30, "n_reference": 120,
                         "feature_dim": 64, "few_images_warning": True},
        diversity_original={"ms_ssim_mean": 0.35, "ms_ssim_std": 0.04, "n_pairs": 100, "n_images": 30,
                            "ms_ssim_scales": 3, "kernel_size": 3},
        reader_scores=scores, synthetic_cohort=True, title="Test report", real_grid=_real_grid(root),
        reader_responses="reader_responses", reader_kit="results/reader_study/demo/kit",
        provenance=provenance(config, Path(__file__).resolve().parents[1]))


def _real_grid(root: Path) -> Path:
    save_grid(np.random.default_rng(7).random((16, 8, 8)).astype(np.float32), root / "real.png")
    return root / "real.png"


@pytest.fixture
def data(tmp_path) -> inputs.ReportData:
    return make_data(tmp_path)


def build(tmp_path: Path, data: inputs.ReportData) -> str:
    out = tmp_path / "report" / "index.html"
    report.build_report(out, data, summary_tsv=tmp_path / "report" / "summary.tsv")
    return out.read_text()


def test_report_is_one_self_contained_file_with_grey_8bit_images(tmp_path, data):
    text = build(tmp_path, data)
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["index.html", "summary.tsv"]
    assert not re.search(r"https?://", text)
    assert "<script" not in text.lower()
    assert "<link" not in text.lower()
    page = parse(text)
    assert page.scripts == 0
    # 1 overlay + 8 sample grids (every run) + 1 real-slices grid + 3 galleries + 3 loss plots
    # + 1 FID boxplot + 1 metrics plot + 3 validation curves and 3 snapshot strips (each model's first seed)
    assert len(page.images) == 24
    colour_types = []
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        colour_types.append(struct.unpack(">B", png[25:26])[0])
    # Grey pictures (grids, the matplotlib RGBA overlay and galleries) are stored as 8-bit grey (type 0).
    assert colour_types.count(0) >= 7
    assert 6 not in colour_types  # no RGBA left


def test_summary_comes_first_with_best_per_column_spreads_and_runs(tmp_path, data):
    text = build(tmp_path, data)
    summary = text.index('id="summary"')
    assert summary < text.index('id="toc"') < text.index('id="group-fidelity"')
    page = parse(text)
    assert page.rows["summary-table"] == ["vae", EVIL, "dcgan", "original"]  # sorted by FID
    fid = page.cells[("summary-table", "vae", "fid")]
    assert float(fid["data-value"]) == pytest.approx(100.0)
    assert float(fid["data-std"]) == pytest.approx(2.0)
    assert fid["data-n"] == "3"
    assert "best" in fid["class"]
    table = re.search(r'<table id="summary-table">.*?</table>', text, re.S).group(0)
    assert "FID ↓" in table
    assert "Precision ↑" in table
    assert "Likely copies ↓" in table
    assert "100.0 ± 2.0 ★" in table
    # dcgan (160 ± 10) and EVIL (152.5 ± 17.7) overlap each other but not vae: neither is marked ≈.
    assert "tie" not in page.cells[("summary-table", "dcgan", "fid")]["class"]
    best_row = re.search(r'<tr class="best-row">.*?</tr>', table, re.S).group(0)
    assert '<td data-metric="fid">vae</td>' in best_row
    tsv = pd.read_csv(tmp_path / "report" / "summary.tsv", sep="\t")
    assert list(tsv["model"]) == list(FIDS)
    assert list(tsv["runs"]) == [3, 3, 2]
    assert tsv.loc[0, "fid_mean"] == pytest.approx(100.0)
    assert tsv.loc[0, "fid_std"] == pytest.approx(2.0)


def test_conclusion_says_what_the_spreads_support(tmp_path):
    clear = parse_conclusion(build(tmp_path / "a", make_data(tmp_path / "a")))
    assert clear.startswith("vae has the lowest FID (100.0 ± 2.0, 3 runs), ahead of the next model")
    overlapping = {"vae": [100.0, 130.0, 70.0], "dcgan": [110.0, 112.0, 108.0]}
    text = build(tmp_path / "b", make_data(tmp_path / "b", overlapping))
    assert parse_conclusion(text).startswith("The seeds do not separate vae (100 ± 30, 3 runs) and dcgan "
                                             "(110.0 ± 2.0, 3 runs) in FID: their ranges of mean ± std over seeds "
                                             "overlap, so neither is shown to be better")
    page = parse(text)
    assert "tie" in page.cells[("summary-table", "dcgan", "fid")]["class"]  # ≈ the best
    single = build(tmp_path / "c", make_data(tmp_path / "c", {"vae": [100.0], "dcgan": [150.0]}))
    assert "with a single training run the spread over seeds is unknown" in parse_conclusion(single)


def parse_conclusion(text: str) -> str:
    return re.search(r'<p class="conclusion" id="conclusion">(.*?)</p>', text, re.S).group(1)


def test_table_of_contents_links_every_section_and_group(tmp_path, data):
    page = parse(build(tmp_path, data))
    assert len(page.ids) == len(set(page.ids)), "duplicate ids"
    assert set(page.links) <= set(page.ids)
    shown = [s for s in report.SECTIONS if s.shown(data)]
    expected = {s.anchor for s in shown} | {f"group-{s.group}" for s in shown} | {"summary", "provenance"}
    assert expected <= set(page.links)
    # The paper's group exists only with report.published set.
    assert "published" not in page.ids
    assert "group-paper" not in page.ids


def test_one_warning_per_kind(tmp_path, data):
    text = build(tmp_path, data)
    assert text.count("Small-sample warning") == 0
    warnings = re.search(r'<div class="warnings" id="warnings">.*?</div>', text, re.S).group(0)
    assert warnings.count('data-kind="small-sample FID"') == 1
    assert "Applies to: dcgan, original, vae" in warnings.replace("&lt;b&gt;evil &amp; &quot;model&quot;&lt;/b&gt;, ", "")
    assert text.count("fewer images per set") == 1


def test_incomplete_runs_are_marked(tmp_path):
    text = build(tmp_path, make_data(tmp_path, incomplete={("dcgan", 1)}))
    page = parse(text)
    assert '<tr data-model="dcgan" class="incomplete">' in text
    assert "3 (1 incomplete ⚠)" in text
    assert 'data-kind="incomplete training"' in text
    assert "dcgan (seed 1)" in text
    training = re.search(r'<table id="training-runs">.*?</table>', text, re.S).group(0)
    assert training.count('data-status="incomplete"') == 1
    assert "7 of 20" in training
    assert "stopped by the time cap" in parse_conclusion(text)
    assert page.rows["training-runs"].count("vae") == 3


def test_provenance_footer_without_secrets(tmp_path, data):
    text = build(tmp_path, data)
    footer = re.search(r'<footer id="provenance">.*?</footer>', text, re.S).group(0)
    assert text.index('id="provenance"') > text.index('id="group-qc"')
    for label in ("Written", "Code (git commit)", "Configuration digest (SHA-256)", "Packages", "Machine"):
        assert f"<th>{label}</th>" in footer
    assert "torch " in footer
    assert "snakemake " in footer
    assert "cores available" in footer
    assert re.search(r"UTC", footer)
    assert re.search(r"[0-9a-f]{40}|not a git checkout", footer)
    assert "secret-salt-123" not in text
    assert "&lt;redacted&gt;" in footer
    assert config_digest({"privacy": {"pseudonym_salt": "secret-salt-123"}, "training": {"seeds": [0, 1, 2]},
                          "models": {"vae": {"family": "vae", "budget": {"steps": 20}}}}) in footer


def test_provenance_never_shows_the_input_folder():
    """A hospital export's folder may be named after the patient; only private/source knows it."""
    config = {"input": {"source": "/data/DOE^JANE_19600101", "layout": "auto"}, "privacy": {"pseudonym_salt": "s"}}
    record = provenance(config, Path(__file__).resolve().parents[1])
    assert "DOE" not in json.dumps(record)
    assert record["config"]["input"] == {"source": "<redacted>", "layout": "auto"}
    assert provenance({"input": {"source": "demo"}}, Path(".."))["config"]["input"]["source"] == "demo"


def test_table1_rows_are_means_over_seeds(tmp_path, data):
    page = parse(build(tmp_path, data))
    assert page.rows["table1"] == ["Original", *FIDS]
    values = [_metrics(seed, True)["isd"] for seed in range(3)]
    cell = page.cells[("table1", "vae", "isd")]
    assert float(cell["data-value"]) == pytest.approx(np.mean(values))
    assert float(cell["data-std"]) == pytest.approx(np.std(values, ddof=1))
    assert cell["data-n"] == "3"
    original = page.cells[("table1", "Original", "sharpness_mean")]
    assert float(original["data-std"]) == data.original["sharpness_std"]  # one set: its spread over images
    assert page.rows["reconstruction"] == ["vae"]


def test_overlays_and_grids_enlarge_on_click(tmp_path, data):
    text = build(tmp_path, data)
    registration = re.search(r'<table id="registration-qc">.*?</table>', text, re.S).group(0)
    assert re.search(r'<label class="zoom"[^>]*><input type="checkbox"[^>]*><img class="thumb" alt="overlay '
                     r'sub-0123456789"', registration)
    assert "label.zoom input:checked + img" in text  # the CSS that shows it full size
    # the overlay, every run's sample grid, the real slices' grid and the metrics plot
    assert text.count('<label class="zoom"') == 1 + sum(map(len, FIDS.values())) + 1 + 1


def test_text_from_inputs_is_escaped(tmp_path, data):
    text = build(tmp_path, data)
    assert "<b>evil" not in text
    assert "&lt;b&gt;evil &amp; &quot;model&quot;&lt;/b&gt;" in text
    assert "DICOM &lt;series&gt;" in text
    assert "truncated gzip &amp; bad header" in text
    assert "<script>" not in text
    assert "&lt;script&gt;" in text


def test_number_formatting_is_one_rule():
    assert format_mean_std(380.58792, 8.4741) == "380.6 ± 8.5"
    assert format_mean_std(0.47004, 0.0073518) == "0.4700 ± 0.0074"
    assert format_mean_std(1234.5, 123.0) == "1230 ± 120"
    assert format_mean_std(0.5, None) == "0.5"
    assert format_mean_std(None, 1) == "n/a"
    assert format_number(float("inf")) == "n/a"
    assert format_number(1495.3) == "1495"


def test_loss_plot_log_scale_only_when_positive(tmp_path, monkeypatch):
    steps = np.arange(1, 11)
    positive = tmp_path / "pos.csv"
    pd.DataFrame({"step": steps, "a": 10.0 ** -steps.astype(float)}).to_csv(positive, index=False)
    mixed = tmp_path / "mixed.csv"
    pd.DataFrame({"step": steps, "a": np.linspace(-1, 1, 10)}).to_csv(mixed, index=False)
    scales = []
    real_close = plt.close

    def spy(fig=None):
        if fig is not None and hasattr(fig, "axes"):
            scales.append(fig.axes[0].get_yscale())
        return real_close(fig)

    monkeypatch.setattr(plt, "close", spy)
    assert training_section.plot_losses(positive).startswith(b"\x89PNG")
    assert training_section.plot_losses({0: positive, 1: mixed}).startswith(b"\x89PNG")
    assert scales == ["log", "linear"]


def test_bad_inputs_name_the_file(tmp_path, data):
    no_step = tmp_path / "nostep.csv"
    no_step.write_text("iteration,loss\n1,0.5\n")
    run = data.runs["vae"][0]
    data.runs["vae"][0] = dataclasses.replace(run, files=inputs.ModelOutputs(**{**run.files.paths, "losses": no_step}))
    with pytest.raises(InputError, match="nostep.csv.*step"):
        build(tmp_path, data)
    not_png = tmp_path / "grid.png"
    not_png.write_text("GIF89a")
    data.runs["vae"][0] = dataclasses.replace(run, files=inputs.ModelOutputs(**{**run.files.paths, "grid": not_png}))
    with pytest.raises(InputError, match="grid.png.*not a PNG"):
        build(tmp_path, data)
    assert not (tmp_path / "report" / "index.html").exists()
def test_registration_qc_lists_flagged_subjects_worst_first_with_reasons(tmp_path, data):
    frame = pd.DataFrame({
        "subject": ["sub-000000000a", "sub-000000000b", "sub-000000000c", "sub-000000000d"],
        "status": ["ok", "flagged", "ok", "failed"],
        "mask_dice": [0.95, 0.61, 0.91, np.nan],
        "scale_x": [1.0, 0.78, 1.02, np.nan],
        "reason": ["", "brain mask overlap 0.61 < 0.85; scales 0.78/0.81/0.74 outside 0.8–1.25", "",
                   "brain extraction (deepbet) found 12 ml of brain"],
    })
    overlays = {s: _png(tmp_path / f"{s}.png", 0.5) for s in ["sub-000000000a", "sub-000000000b", "sub-000000000c"]}
    data.registration_qc, data.overlays, data.registration_caption = frame, overlays, "Worst first. <gate>"
    text = build(tmp_path, data)
    table = re.search(r'<table id="registration-qc">.*?</table>', text, re.S).group(0)
    order = re.findall(r"<td>(sub-[0-9a-f]{10})</td>", table)
    assert order == ["sub-000000000d", "sub-000000000b", "sub-000000000c", "sub-000000000a"]
    flagged_row = re.search(r'<tr class="flagged">.*?</tr>', table, re.S).group(0)
    assert "sub-000000000b" in flagged_row
    assert "scales 0.78/0.81/0.74 outside 0.8–1.25" in flagged_row
    assert 'data-value="0.61"' in flagged_row
    # clicking the overlay enlarges it (a CSS checkbox toggle, no script)
    assert re.search(r'<label class="zoom"[^>]*><input type="checkbox"[^>]*><img class="thumb" '
                     r'alt="overlay sub-000000000b"', flagged_row)
    assert "<caption>Worst first. &lt;gate&gt;</caption>" in table
    assert "<script" not in text.lower()


def _overlay_like_registration(path: Path, seed: int) -> Path:
    """A PNG drawn as imaging.registration.save_overlay draws one (three noisy grey panels with a
    yellow and a red contour, 7.5 x 3.1 in at 80 dpi): about the size of a real overlay."""
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 3.1), dpi=80)
    for ax in axes:
        ax.imshow(rng.random((64, 64)), cmap="gray", interpolation="nearest")
        ax.contour(rng.random((16, 16)), levels=[0.5], colors=["#ffd000"], linewidths=0.8)
        ax.contour(rng.random((16, 16)), levels=[0.5], colors=["#ff3030"], linewidths=0.8)
        ax.axis("off")
    fig.suptitle("sub-0000000000  Affine  Dice 0.91\nyellow: subject's brain mask, red: template's", fontsize=7)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _registration_qc(n: int) -> pd.DataFrame:
    """A QC table of ``n`` subjects as qc_tables writes it: 5 % flagged, 1 % failed, the rest ok;
    numbers with registration's precision (6 decimals, brain volume 1)."""
    rng = np.random.default_rng(n)
    status = np.where(np.arange(n) % 100 == 7, "failed", np.where(np.arange(n) % 20 == 3, "flagged", "ok"))
    frame = pd.DataFrame({"subject": [f"sub-{i:010x}" for i in range(n)], "status": status})
    for column in inputs._REGISTRATION_NUMBERS:
        frame[column] = rng.uniform(0.5, 1.5, n).round(6)
    frame["brain_ml"] = rng.uniform(1000, 1600, n).round(1)
    frame.loc[frame["status"] == "failed", inputs._REGISTRATION_NUMBERS] = np.nan
    frame["reason"] = np.where(status == "flagged", "brain mask overlap 0.61 < 0.85; scales 0.78/0.81/0.74 outside 0.8–1.25",
                               np.where(status == "failed", "ANTs Affine registration produced an empty or non-finite "
                                                            "image", ""))
    frame["input_warning"] = np.where(status == "flagged", "input looks like a head with skull and scalp (3659 ml of "
                                      "foreground, more than a brain's 2200 ml) but brain extraction is off", "")
    return frame


def test_a_2000_subject_report_embeds_only_the_worst_flagged_overlays_and_stays_under_2_mb(tmp_path, data):
    n = 2000
    frame = _registration_qc(n)
    pngs = [_overlay_like_registration(tmp_path / f"overlay{i}.png", i) for i in range(3)]
    overlay_bytes = int(np.mean([p.stat().st_size for p in pngs]))
    assert overlay_bytes > 20_000  # a real overlay is 20-60 kB: inlining all 1,980 would be > 50 MB
    overlays = {s: pngs[i % 3] for i, s in enumerate(frame["subject"]) if frame["status"][i] != "failed"}
    data.registration_qc, data.overlays = frame, overlays
    text = build(tmp_path, data)
    size = len(text.encode())
    assert size <= 2_000_000, f"report of {n} subjects is {size} bytes"
    table = re.search(r'<table id="registration-qc">.*?</table>', text, re.S).group(0)
    rows = re.findall(r"<tr( class=\"\w+\")?>(.*?)</tr>", table, re.S)[1:]  # after the heading row
    assert len(rows) == n
    subject_of = [re.search(r"<td>(sub-[0-9a-f]{10})</td>", r).group(1) for _, r in rows]
    embedded = [s for s, (_, r) in zip(subject_of, rows) if "<img" in r]
    linked = {s: m.group(1) for s, (_, r) in zip(subject_of, rows)
              if (m := re.search(r'<a class="overlay-link" href="([^"]+)">', r))}
    flagged = [s for s, st in zip(frame["subject"], frame["status"]) if st == "flagged"]
    ok = [s for s, st in zip(frame["subject"], frame["status"]) if st == "ok"]
    assert embedded
    assert set(embedded) <= set(flagged)
    # worst first: the embedded ones are the first flagged rows of the table
    table_flagged = [s for s, (css, _) in zip(subject_of, rows) if css == ' class="flagged"']
    assert embedded == table_flagged[:len(embedded)]
    assert set(linked) == set(ok) | (set(flagged) - set(embedded))
    assert all(href == f"../register/{s}/overlay.png" for s, href in linked.items())
    assert f"{n} subjects: {len(embedded)} overlays of flagged subjects are shown here" in text
    # a cohort up to the threshold keeps every overlay inline, as before
    small = frame.iloc[:qc_section.EMBED_EVERY_OVERLAY_UP_TO]
    data.registration_qc = small
    data.overlays = {s: p for s, p in overlays.items() if s in set(small["subject"])}
    text = build(tmp_path, data)
    assert 'class="overlay-link"' not in text
    assert "overlay-note" not in text
    assert text.count('alt="overlay sub-') == len(data.overlays)


# -- report.published: the paper's tables beside this run's -------------------------------------------


def _published_cells(text: str, table: str, kind: str) -> dict[tuple[str, str], str]:
    """(row key, column) -> data-value (or the text) of one side of a published pair."""
    block = re.search(rf'<table class="published-table" data-kind="{kind}" data-table="{re.escape(table)}">'
                      r"(.*?)</table>", text, re.S).group(1)
    cells = {}
    for key, row in re.findall(r'<tr data-key="([^"]*)">(.*?)</tr>', block, re.S):
        for attrs, body in re.findall(r"<td ([^>]*)>(.*?)</td>", row, re.S):
            column = re.search(r'data-column="([^"]*)"', attrs).group(1)
            value = re.search(r'data-value="([^"]*)"', attrs)
            cells[(html.unescape(key), html.unescape(column))] = value.group(1) if value else body
    return cells


def test_published_study_is_shown_beside_this_run_in_the_papers_layout(tmp_path):
    from pipeline_lib.core.published import load_published, published_path

    data = make_data(tmp_path)
    data.published = load_published(published_path("ungria_hirte_2020"))
    text = build(tmp_path, data)
    page = parse(text)
    assert len(page.ids) == len(set(page.ids))
    assert set(page.links) <= set(page.ids)
    # Right after the summary, before the first question's group, and in the contents.
    assert text.index('id="summary"') < text.index('id="group-paper"') < text.index('id="group-fidelity"')
    assert "published" in page.links
    assert "group-paper" in page.links
    pair = re.search(r'<div class="published-beside">(.*?)</div>', text, re.S).group(1)
    assert pair.index('data-kind="published"') < pair.index('data-kind="ours"')
    assert "published, on the authors&#x27; data" in text
    published = _published_cells(text, "ungria_hirte_2020.generation", "published")
    ours = _published_cells(text, "ungria_hirte_2020.generation", "ours")
    # Same rows and columns on both sides.
    assert set(published) == set(ours)
    assert float(published[("Vanilla VAE", "Data Similarity")]) == pytest.approx(0.0552)
    # The vae model (family vae) is the Vanilla VAE row: the mean over its three seeds.
    expected = np.mean([_metrics(seed, True)["dataset_similarity"] for seed in range(3)])
    assert float(ours[("Vanilla VAE", "Data Similarity")]) == pytest.approx(expected)
    assert float(ours[("Original", "ISD")]) == pytest.approx(data.original["isd"])
    assert ours[("DFC VAE", "ISD")] == "—"  # no dfc_vae model in this run
    # Table 2 (readers) has no answers yet; the caption says so.
    assert "no readings yet" in text
    # Still one self-contained file.
    assert "<script" not in text.lower()
    assert not re.search(r"https?://", text)


def test_published_reader_tables_use_this_runs_readers(tmp_path):
    from pipeline_lib.core.published import load_published, published_path

    from pipeline_lib.reader_study.scoring import _json_safe, score_responses

    data = make_data(tmp_path)
    # 20 real and 30 synthetic images; reader R1 rates 14 real and 9 synthetic images real.
    n = 50
    key = pd.DataFrame({"image": [f"{i:02d}.png" for i in range(n)], "kit_id": "k",
                        "truth": ["real"] * 20 + ["synthetic"] * 30, "source": ["real"] * 20 + ["vae"] * 30,
                        "block": "", "group": "", "source_index": [str(i) for i in range(n)]})
    answers = ["real"] * 14 + ["synthetic"] * 6 + ["real"] * 9 + ["synthetic"] * 21
    responses = pd.DataFrame({"kit_id": "k", "reader_id": "R1", "order_index": range(1, n + 1), "image": key["image"],
                              "answer": answers, "confidence": np.nan, "response_ms": 900, "timed_out": 0,
                              "file": "R1.csv"})
    data.reader_scores = _write(tmp_path / "scores_ok.json", _json_safe(score_responses(key, responses)))
    data.published = load_published(published_path("kazuhiro_2018"))
    text = build(tmp_path, data)
    ours = _published_cells(text, "kazuhiro_2018.readers", "ours")
    assert float(ours[("R1", "Accuracy")]) == pytest.approx(0.70)
    assert float(ours[("R1", "TN")]) == pytest.approx(70.0)
    assert ours[("NR1", "TP")] == "—"
    published = _published_cells(text, "kazuhiro_2018.readers", "published")
    assert float(published[("NNR1", "Accuracy")]) == pytest.approx(0.83)
    assert ("R1", "TP") not in published


def _two_reader_scores(path: Path, answers: dict[str, list[str]]) -> Path:
    """reader_study.scoring's scores of 20 real and 30 vae images read by the readers of ``answers``."""
    from pipeline_lib.reader_study.scoring import _json_safe, score_responses

    n = 50
    key = pd.DataFrame({"image": [f"{i:02d}.png" for i in range(n)], "kit_id": "k",
                        "truth": ["real"] * 20 + ["synthetic"] * 30, "source": ["real"] * 20 + ["vae"] * 30,
                        "block": "", "group": "", "source_index": [str(i) for i in range(n)]})
    responses = pd.concat([pd.DataFrame({"kit_id": "k", "reader_id": reader, "order_index": range(1, n + 1),
                                         "image": key["image"], "answer": given, "confidence": np.nan,
                                         "response_ms": 900, "timed_out": 0, "file": f"{reader}.csv"})
                           for reader, given in answers.items()])
    return _write(path, _json_safe(score_responses(key, responses)))


def test_published_kappa_is_shown_beside_the_papers(tmp_path):
    """Ungría Hirte et al.'s two readers agreed with Cohen's kappa 0.84; this run's readers' kappa
    stands beside it."""
    from pipeline_lib.core.published import load_published, published_path

    data = make_data(tmp_path)
    data.published = load_published(published_path("ungria_hirte_2020"))
    r1 = ["real"] * 14 + ["synthetic"] * 6 + ["real"] * 9 + ["synthetic"] * 21
    r2 = ["real"] * 16 + ["synthetic"] * 4 + ["real"] * 5 + ["synthetic"] * 25
    data.reader_scores = _two_reader_scores(tmp_path / "scores2.json", {"R1": r1, "R2": r2})
    text = build(tmp_path, data)
    published = _published_cells(text, "ungria_hirte_2020.agreement", "published")
    assert float(published[("Cohen's kappa", "Value")]) == pytest.approx(0.84)
    # Cohen's kappa by its definition: observed agreement against the agreement the readers' marginals expect.
    agree = np.mean([a == b for a, b in zip(r1, r2)])
    p1, p2 = r1.count("real") / 50, r2.count("real") / 50
    chance = p1 * p2 + (1 - p1) * (1 - p2)
    ours = _published_cells(text, "ungria_hirte_2020.agreement", "ours")
    assert float(ours[("Cohen's kappa", "Value")]) == pytest.approx((agree - chance) / (1 - chance))
    assert "Readers R1, R2, on the 50 images every one of them answered." in text
    # Three readers: Fleiss' kappa in a row of its own, the paper's Cohen row left empty.
    data.reader_scores = _two_reader_scores(tmp_path / "scores3.json", {"R1": r1, "R2": r2, "R3": r1})
    ours = _published_cells(build(tmp_path, data), "ungria_hirte_2020.agreement", "ours")
    assert ours[("Cohen's kappa", "Value")] == "—"
    assert ("Fleiss' kappa (3 readers)", "Value") in ours


def test_published_turing_test_without_readings_says_so(tmp_path):
    from pipeline_lib.core.published import load_published, published_path

    data = make_data(tmp_path)
    data.published = load_published(published_path("han_2018"))
    text = build(tmp_path, data)
    ours = _published_cells(text, "han_2018.turing_test", "ours")
    # The dcgan model's family is not dcgan in this fixture (it is "<script>"): no rows of ours.
    assert all(v == "—" for v in ours.values())
    assert "no readings yet" in text


# -- what the summary marks: ★ only where the column separates the models --------------------------


def test_mark_column_stars_only_a_best_the_seeds_separate():
    from pipeline_lib.evaluation.seeds import mark_column, spread

    clear = {"a": spread([10, 11, 12]), "b": spread([20, 21, 22]), "c": spread([30, 35, 40])}
    assert mark_column(clear, lower_is_better=True).best == "a"
    assert mark_column(clear, lower_is_better=False).best == "c"
    # b's range reaches a's: no star, both level (≈), c is not.
    close = {"a": spread([10, 11, 12]), "b": spread([11.5, 13, 14.5]), "c": spread([30, 35, 40])}
    marks = mark_column(close, lower_is_better=True)
    assert marks.best is None
    assert marks.level == ("a", "b")
    assert marks.reason == "ranges overlap"
    # A later model with a wide range overlapping the leader also stops the star.
    wide = {"a": spread([10, 11, 12]), "b": spread([20, 21, 22]), "c": spread([0, 25, 50])}
    assert mark_column(wide, lower_is_better=True).best is None
    # Identical values everywhere (0 ± 0): nothing separates.
    flat = {"a": spread([0, 0, 0]), "b": spread([0, 0, 0])}
    assert mark_column(flat, lower_is_better=False).best is None
    # One run each: the spread is unknown, so neither ★ nor ≈.
    single = {"a": spread([10]), "b": spread([20])}
    assert mark_column(single, lower_is_better=True) == mark_column(single, True).__class__(
        None, (), "one run: spread unknown")
    assert mark_column({"a": spread([1, 2])}, True).best is None  # nothing to compare with


def test_mark_column_counts_values_past_a_shared_floor_or_ceiling_as_it():
    from pipeline_lib.evaluation.seeds import mark_column, shared_bound, spread

    # Likely copies: a model that does not copy scores about 5 %; 0 % is no better than that.
    copies = {"dcgan": spread([0.0, 0.0, 0.0]), "vae": spread([0.04, 0.06, 0.05])}
    marks = mark_column(copies, lower_is_better=True, bound=0.05, bound_name="no-copy level")
    assert marks.best is None
    assert set(marks.level) == {"dcgan", "vae"}
    assert marks.reason == "at the no-copy level"
    without_bound = mark_column(copies, lower_is_better=True)
    assert without_bound.best == "dcgan"  # what the bound prevents
    # A model that copies is still told apart; the one at the floor is not starred for being there.
    copying = {"dcgan": spread([0.0, 0.0, 0.0]), "vae": spread([0.30, 0.35, 0.40])}
    marks = mark_column(copying, lower_is_better=True, bound=0.05)
    assert marks.best is None
    assert marks.level == ()
    above = {"a": spread([0.10, 0.11, 0.12]), "b": spread([0.30, 0.35, 0.40])}
    assert mark_column(above, lower_is_better=True, bound=0.05).best == "a"
    # Utility gain with a real-only accuracy of 1.0: the ceiling is 0, so 0 ± 0 earns no star.
    gains = {"a": spread([0.0, 0.0, 0.0]), "b": spread([-0.2, -0.25, -0.3])}
    assert mark_column(gains, lower_is_better=False).best == "a"
    assert mark_column(gains, lower_is_better=False, bound=0.0).best is None
    assert shared_bound([0.05, 0.05, None]) == 0.05
    assert shared_bound([0.05, 0.1]) is None
    assert shared_bound([None]) is None


def _set_record(data: inputs.ReportData, model: str, kind: str, values: list[dict]) -> None:
    data.runs[model] = [run.with_record(kind, record) for run, record in zip(data.runs[model], values)]


def test_summary_stars_no_floor_or_ceiling_and_says_why(tmp_path, data):
    # dcgan copies nothing, the others about the no-copy level (5 %); the real-only classifier is perfect.
    _set_record(data, "dcgan", "memorization", [{**r.memorization, "pixel": {"fraction_likely_copies": 0.0}}
                                                for r in data.runs["dcgan"]])
    for model in data.runs:
        _set_record(data, model, "utility", [{**r.utility, "real": {"mean": 1.0, "std": 0.0},
                                              "real+synthetic": {"mean": 1.0 - 0.1 * (model != "vae"), "std": 0.0}}
                                             for r in data.runs[model]])
    text = build(tmp_path, data)
    page = parse(text)
    for model in ("vae", "dcgan", EVIL):
        assert "best" not in page.cells[("summary-table", model, "likely_copies")]["class"]
        assert "best" not in page.cells[("summary-table", model, "utility_gain")]["class"]
    assert "tie" in page.cells[("summary-table", "dcgan", "likely_copies")]["class"]
    best_row = re.search(r'<tr class="best-row">.*?</tr>', text, re.S).group(0)
    assert ('<td data-metric="likely_copies" data-reason="at the no-copy level">'
            "none: at the no-copy level</td>") in best_row
    assert '<td data-metric="utility_gain" data-reason="at the ceiling">none: at the ceiling</td>' in best_row
    assert '<td data-metric="fid">vae</td>' in best_row  # FID still separates
    caption = re.search(r'<table id="summary-table"><caption>(.*?)</caption>', text, re.S).group(1)
    assert "not a significance test" in caption
    assert "a model that does not copy scores about 5 %" in caption
    assert "Runs per model: 2, 3" in caption
    assert "The real-only classifier is already perfect for vae, dcgan, " in text  # the utility section says why


def test_summary_plots_every_run_of_every_key_metric(tmp_path, data, monkeypatch):
    from pipeline_lib.report import metrics_plot

    drawn = []
    real_plot = metrics_plot.plot_metric_spreads
    monkeypatch.setattr(summary_section, "plot_metric_spreads", lambda panels, models: drawn.append((panels, models))
                        or real_plot(panels, models))
    text = build(tmp_path, data)
    (panels, models), = drawn
    assert models == ["vae", EVIL, "dcgan"]  # the table's order
    fid = next(p for p in panels if p.heading == "FID ↓")
    assert fid.values["vae"] == FIDS["vae"]
    assert fid.reference == 20.0
    assert fid.marked == "vae"
    copies = next(p for p in panels if p.heading.startswith("Likely copies"))
    assert copies.heading == "Likely copies (%) ↓"
    assert copies.bound == pytest.approx(5.0)
    assert copies.values["vae"] == pytest.approx([5.0, 6.0, 7.0])
    figure = re.search(r'<figure class="metrics-plot">.*?</figure>', text, re.S).group(0)
    assert text.index('id="summary-table"') < text.index('class="metrics-plot"') < text.index('id="toc"')
    assert 'alt="key metrics per model"' in figure


def test_samples_show_every_seed_folded_beside_real_slices(tmp_path, data):
    text = build(tmp_path, data)
    samples = re.search(r'<section id="samples">.*?</section>', text, re.S).group(0)
    assert samples.index('data-model="real slices"') < samples.index('data-model="vae"')
    vae = re.search(r'<figure data-model="vae" data-seed="0">.*?</details></figure>', samples, re.S).group(0)
    assert '<details class="other-seeds"><summary>Seeds 1, 2</summary>' in vae
    assert 'alt="sample grid vae seed 1"' in vae
    assert 'alt="sample grid vae seed 2"' in vae
    evil = samples[samples.index("sample grid &lt;b&gt;evil"):]
    assert "<summary>Seed 1</summary>" in evil


def test_real_slices_grid_reads_only_test_slices(tmp_path):
    images = np.random.default_rng(3).random((10, 8, 8)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    pd.DataFrame({"subject": [f"sub-{i:010d}" for i in range(10)], "split": ["train"] * 6 + ["test"] * 4,
                  "slice_index": range(10)}).to_csv(tmp_path / "slices.tsv", sep="\t", index=False)
    png = inputs.real_slices_grid(tmp_path / "images.npy", tmp_path / "slices.tsv", 0, tmp_path / "real.png")
    import cv2

    save_grid(images[6:], tmp_path / "expected.png")  # all 4 test slices, as a sample grid is drawn
    assert (cv2.imread(str(png), cv2.IMREAD_UNCHANGED) == cv2.imread(str(tmp_path / "expected.png"),
                                                                     cv2.IMREAD_UNCHANGED)).all()


def test_loss_legend_lies_outside_the_curves(tmp_path, monkeypatch):
    csv = tmp_path / "losses.csv"
    steps = np.arange(1, 21)
    pd.DataFrame({"step": steps, "generator": 1.0 / steps, "discriminator": 2.0 / steps}).to_csv(csv, index=False)
    boxes = []
    real_close = plt.close

    def spy(fig=None):
        if fig is not None and hasattr(fig, "axes"):
            renderer = fig.canvas.get_renderer()
            ax = fig.axes[0]
            boxes.append((ax.get_window_extent(renderer), ax.get_legend().get_window_extent(renderer)))
        return real_close(fig)

    monkeypatch.setattr(plt, "close", spy)
    training_section.plot_losses({0: csv, 1: csv})
    (axes, legend), = boxes
    assert legend.x0 >= axes.x1  # right of the axes, never over a curve


def test_reader_section_names_the_kit_and_the_answers_folder(tmp_path, data):
    text = build(tmp_path, data)
    kit = re.search(r'<p id="reader-kit">(.*?)</p>', text, re.S).group(1)
    assert "no reader responses yet" in kit
    assert "<code>results/reader_study/demo/kit/</code>" in kit
    assert "into the folder <code>reader_responses/</code> (reader_study.responses_dir)" in kit


def test_report_job_draws_real_slices_and_names_the_reader_folders(tmp_path):
    """The report rule's path: files in, the real slices' grid drawn from the dataset's test split."""
    runs = {model: {seed: make_run(tmp_path / "runs", model, seed, fid) for seed, fid in enumerate(fids)}
            for model, fids in {"vae": [100.0, 104.0], "dcgan": [150.0, 160.0]}.items()}
    data = make_data(tmp_path / "data")

    def tsv(name: str, frame: pd.DataFrame) -> Path:
        frame.to_csv(tmp_path / name, sep="\t", index=False)
        return tmp_path / name

    images = np.random.default_rng(0).random((12, 8, 8)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    dataset = inputs.DatasetOutputs(
        table=tsv("slices.tsv", pd.DataFrame({"subject": [f"sub-{i // 3:010d}" for i in range(12)],
                                              "split": ["train"] * 9 + ["test"] * 3, "slice_index": range(12)})),
        images=tmp_path / "images.npy", original=_write(tmp_path / "original.json", data.original),
        distribution_original=_write(tmp_path / "dist.json", data.distribution_original),
        domain_network=_write(tmp_path / "net.json", data.domain_network),
        domain_original=_write(tmp_path / "dom.json", data.domain_original),
        diversity_original=_write(tmp_path / "div.json", data.diversity_original),
        reader_scores=_write(tmp_path / "scores.json", {"status": "no responses", "kit_id": "k1", "n_images": 10}))
    job_inputs = inputs.ReportInputs(
        subjects=tsv("subjects.tsv", pd.DataFrame({"subject": ["sub-0000000000"]})),
        ingest_qc=tsv("ingest.tsv", pd.DataFrame({"subject": ["sub-0000000000"], "kind": ["NIfTI file"],
                                                  "status": ["ok"], "reason": [""], "warning": [""]})),
        registration_qc=tsv("registration.tsv", pd.DataFrame({"subject": ["sub-0000000000"], "status": ["ok"]})),
        registered=[], datasets={"t1": dataset}, models=runs,
        reader_responses={"t1": "answers/t1"}, reader_kits={"t1": "results/reader_study/t1/kit"})
    out = tmp_path / "report" / "index.html"
    report.report_job(out, job_inputs, registration={}, sampling={}, synthetic_cohort=False, title="Job",
                      provenance=provenance({"registration": {"grid": [240, 240, 155]}}, REPO),
                      published="han_2018", protocol_notes={"voxel_size": "Why the voxels differ."})
    text = out.read_text()
    # report.published brings the paper's protocol; this run's values come from the job's configuration.
    grid = re.search(r'<tr data-item="grid" data-status="([^"]+)">', text).group(1)
    assert grid == "same"
    assert "Why the voxels differ." in text
    real = re.search(r'<figure data-model="real slices">.*?src="(data:image/png;base64,[^"]*)"', text, re.S).group(1)
    save_grid(images[9:], tmp_path / "expected.png")
    assert real == data_uri(tmp_path / "expected.png")
    assert "<code>answers/t1/</code>" in text
    assert "<code>results/reader_study/t1/kit/</code>" in text


# -- report.published: the paper's protocol beside this run's configuration ------------------------------


@pytest.mark.parametrize("study", ["ungria_hirte_2020", "han_2018", "ballesteros_ramirez_2025", "kazuhiro_2018"])
def test_protocol_table_is_rendered_from_the_preset_and_the_published_file(tmp_path, study):
    from pipeline_lib.core.published import load_protocol, load_published, published_path

    config = yaml.safe_load((REPO / "presets" / f"{study}.yaml").read_text())
    data = make_data(tmp_path)
    data.published = load_published(published_path(study))
    data.protocol = load_protocol(published_path(study))
    data.protocol_notes = config["report"]["protocol_notes"]
    data.provenance = provenance(config, REPO)
    text = build(tmp_path, data)
    page = parse(text)
    assert "protocol" in page.ids
    assert "protocol" in page.links
    assert len(page.ids) == len(set(page.ids))
    table = re.search(r'<table class="protocol-table">.*?</table>', text, re.S).group(0)
    rows = dict(re.findall(r'<tr data-item="([^"]+)" data-status="([^"]+)">', table))
    assert list(rows) == [i.id for i in sorted(data.protocol, key=lambda i: PROTOCOL_GROUPS.index(i.group))]
    assert set(rows.values()) <= {"same", "differs", "see note", "not stated"}
    assert "same" in rows.values()
    assert table.count("not stated") >= sum(i.paper is None for i in data.protocol)
    for item, reason in data.protocol_notes.items():
        assert html.escape(" ".join(reason.split()), quote=True) in table, item
    # Without report.published there is no protocol table.
    data.published, data.protocol = None, ()
    assert 'class="protocol-table"' not in build(tmp_path, data)
