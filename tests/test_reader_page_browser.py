"""The kit page in a real headless Chromium: two scripted readers (one from file://, one
from a local static server) answer every image, one reloads midway, both export; scoring the
downloaded files reproduces hand-computed confusion matrices and Cohen's kappa.

Needs Debian's chromium and the Playwright Python package (its bundled driver, pointed at
/usr/bin/chromium; no browser download; the ``browser_context`` fixture is in conftest.py).
Missing either is a test failure, not a skip.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline_lib.reader_study import kit as rs
from pipeline_lib.core.io import write_npy, write_tsv
from pipeline_lib.reader_study.scoring import reader_scores_job, response_files

TIME_LIMIT_S = 1.5


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """6 real slices + 3 samples from each of two models, 64 px, 1.5 s limit, confidence asked."""
    root = tmp_path_factory.mktemp("reader_browser")
    rng = np.random.default_rng(3)
    write_npy(root / "images.npy", rng.random((10, 16, 16)).astype(np.float32))
    write_tsv(root / "slices.tsv", pd.DataFrame({"row": range(10), "subject": ["sub-0000000001"] * 10,
                                                "slice_index": range(10), "split": ["test"] * 8 + ["train"] * 2}))
    samples = {}
    for model in ("m1", "m2"):
        write_npy(root / f"{model}.npy", (0.5 * rng.random((5, 16, 16))).astype(np.float32))
        write_tsv(root / f"{model}.tsv", pd.DataFrame({"sample": range(5), "label": [""] * 5}))
        samples[model] = (root / f"{model}.npy", root / f"{model}.tsv")
    rs.build_kit(root / "images.npy", root / "slices.tsv", samples,
                 {"n_real": 6, "n_per_model": 3, "display_size": 64, "time_limit_s": TIME_LIMIT_S},
                 kit_dir=root / "kit", answer_key=root / "answer_key.tsv", summary=root / "summary.json")
    key = pd.read_csv(root / "answer_key.tsv", sep="\t", dtype=str, keep_default_na=False)
    return {"root": root, "dir": root / "kit", "key": key, "key_path": root / "answer_key.tsv",
            "kit_id": key["kit_id"].iloc[0]}


@pytest.fixture(scope="module")
def static_server(kit):
    """``python -m http.server`` on a free loopback port, serving the kit folder; stopped afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(kit["dir"])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "kit.js", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"the static server on {url} did not start")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _rules(key: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Scripted answers, by position of each image within its source (images sorted by name)."""
    position = {row.image: i for _, group in key.sort_values("image").groupby("source")
                for i, row in enumerate(group.itertuples())}
    source = dict(zip(key["image"], key["source"]))

    def reader_a(image):  # real #0 called synthetic; m1 #0 and #1 called real
        p, s = position[image], source[image]
        return "synthetic" if (s == "real" and p == 0) else "real" if (s == "real" or (s == "m1" and p < 2)) else "synthetic"

    def reader_b(image):  # real #0 and #1 called synthetic; m1 #0 and m2 #1 called real
        p, s = position[image], source[image]
        if s == "real":
            return "synthetic" if p < 2 else "real"
        return "real" if (s, p) in (("m1", 0), ("m2", 1)) else "synthetic"

    return {"A": {name: reader_a(name) for name in key["image"]}, "B": {name: reader_b(name) for name in key["image"]}}


def _wait_for_image(page, index: int, total: int) -> str:
    page.wait_for_function(
        "([k, n]) => document.body.dataset.ready === 'yes' && "
        "document.getElementById('progress').textContent === `Image ${k} of ${n}`", arg=[index, total])
    return page.get_attribute("#image", "src").rsplit("/", 1)[-1]


def _start(page, reader: str) -> None:
    page.fill("#reader-id", reader)
    page.click("#start-button")


def _export(page, target: Path, button: str = "#download-final") -> Path:
    with page.expect_download() as info:
        page.click(button)
    download = info.value
    path = target / download.suggested_filename
    download.save_as(path)
    return path


def _watch(page, allowed: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Collect requests outside ``allowed`` prefixes and page errors."""
    foreign, errors = [], []
    page.on("request", lambda r: None if r.url.startswith(allowed) else foreign.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return foreign, errors


def test_two_scripted_readers_and_scoring(kit, browser_context, static_server, tmp_path):
    key, total = kit["key"], len(kit["key"])
    truth = dict(zip(key["image"], key["truth"]))
    answers = _rules(key)
    responses = tmp_path / "reader_responses"
    responses.mkdir()

    # Reader A: file://, keyboard, confidence 4 for real and 2 for synthetic images, reload after 5 answers.
    page = browser_context.new_page()
    foreign, errors = _watch(page, (kit["dir"].as_uri() + "/", "blob:"))
    page.goto((kit["dir"] / "index.html").as_uri())
    assert "brain MRI slices" in page.inner_text("#start")
    assert "R" in page.inner_text("#start")
    _start(page, "A")
    shown_a = []
    for index in range(1, total + 1):
        if index == 6:
            page.reload()
            assert page.input_value("#reader-id") == "A"  # remembered
            _start(page, "A")
        name = _wait_for_image(page, index, total)
        if index == 6:
            assert "5 of 12 images already answered" in page.inner_text("#hint")
        shown_a.append(name)
        page.keyboard.press("R" if answers["A"][name] == "real" else "S")
        page.keyboard.press("4" if truth[name] == "real" else "2")
    page.wait_for_selector("body[data-screen=done]")
    file_a = _export(page, responses)
    assert foreign == []
    assert errors == []
    page.close()

    # Reader B: http://127.0.0.1, buttons, confidence 5; waits out the time limit on image 4;
    # downloads a partial file after 7 answers.
    page = browser_context.new_page()
    foreign, errors = _watch(page, (static_server, "blob:"))
    page.goto(static_server + "index.html")
    _start(page, "B")
    shown_b = []
    for index in range(1, total + 1):
        name = _wait_for_image(page, index, total)
        shown_b.append(name)
        if index == 4:
            page.wait_for_selector("#time-up", state="visible", timeout=10_000)
            assert page.eval_on_selector("#image", "img => getComputedStyle(img).visibility") == "hidden"
        if index == 8:
            partial = _export(page, tmp_path, "#download-partial")
            assert len(pd.read_csv(partial)) == 7
        page.click("#answer-real" if answers["B"][name] == "real" else "#answer-synthetic")
        page.click(".conf[data-confidence='5']")
    page.wait_for_selector("body[data-screen=done]")
    file_b = _export(page, responses)
    assert foreign == []
    assert errors == []
    page.close()

    # The exports: complete, in each reader's seeded order, with the scripted answers.
    names = list(key["image"])
    for reader, path, shown in (("A", file_a, shown_a), ("B", file_b, shown_b)):
        assert path.name == f"reader-{reader}-{kit['kit_id']}.csv"
        rows = pd.read_csv(path, dtype={"confidence": "Int64"})
        assert list(rows.columns[:8]) == ["kit_id", "reader_id", "order_index", "image", "answer", "confidence",
                                          "response_ms", "timed_out"]
        assert list(rows["order_index"]) == list(range(1, total + 1))
        assert list(rows["image"]) == shown == rs.reader_order(kit["kit_id"], reader, names)
        assert dict(zip(rows["image"], rows["answer"])) == answers[reader]
        assert (rows["response_ms"] >= 0).all()
    assert shown_a != shown_b
    rows_b = pd.read_csv(file_b)
    assert rows_b.loc[3, "timed_out"] == 1
    assert rows_b.loc[3, "response_ms"] >= TIME_LIMIT_S * 1000

    # Scoring the two downloads: hand-computed tables (positive = real).
    tables = {name: tmp_path / "scores" / f"{name}.tsv" for name in ("readers", "sources", "models", "agreement", "timing")}
    scores = reader_scores_job(kit["key_path"], response_files(responses), scores_json=tmp_path / "scores" / "scores.json",
                               tables=tables)
    readers = {r["reader_id"]: r for r in scores["readers"]}
    assert [readers["A"][k] for k in ("TP", "FN", "FP", "TN")] == [5, 1, 2, 4]
    assert [readers["B"][k] for k in ("TP", "FN", "FP", "TN")] == [4, 2, 2, 4]
    assert readers["A"]["accuracy"] == pytest.approx(9 / 12)
    assert readers["B"]["accuracy"] == pytest.approx(8 / 12)
    # A/B: both real 5, both synthetic 4, A real & B synthetic 2, A synthetic & B real 1
    # po = 9/12, pe = (7/12)(6/12) + (5/12)(6/12) = 1/2, kappa = 0.5
    assert scores["agreement"]["method"] == "cohen"
    assert scores["agreement"]["kappa"] == pytest.approx(0.5)
    pct = {(r["reader_id"], r["source"]): r["pct_rated_real"] for r in scores["sources"]}
    assert pct == pytest.approx({("A", "real"): 500 / 6, ("A", "m1"): 200 / 3, ("A", "m2"): 0.0,
                                 ("B", "real"): 400 / 6, ("B", "m1"): 100 / 3, ("B", "m2"): 100 / 3})
    timing = {(r["reader_id"], r["truth"]): r for r in scores["timing"]}
    assert timing[("A", "real")]["mean_confidence"] == 4.0
    assert timing[("A", "synthetic")]["mean_confidence"] == 2.0
    assert timing[("B", "real")]["mean_confidence"] == 5.0
    assert sum(timing[("B", t)]["n_timed_out"] for t in ("real", "synthetic")) >= 1


def test_viewing_controls_zoom_window_level_and_progress(kit, browser_context):
    """The image fills the window (not its stored 64 px), zooms, takes window/level by drag or
    preset, starts every image at the stored grey levels again, and the progress bar follows."""
    total = len(kit["key"])
    page = browser_context.new_page()
    foreign, errors = _watch(page, (kit["dir"].as_uri() + "/", "blob:"))
    page.goto((kit["dir"] / "index.html").as_uri())
    _start(page, "viewer")
    _wait_for_image(page, 1, total)
    box = page.eval_on_selector("#image", "img => img.getBoundingClientRect().toJSON()")
    natural = page.eval_on_selector("#image", "img => img.naturalWidth")
    assert natural == 64
    assert box["width"] > 3 * natural  # scaled up to the 1000 x 800 viewport
    assert box["height"] <= 800
    assert box["width"] <= 1000
    assert page.get_attribute("#progress-bar", "max") == str(total)
    assert page.eval_on_selector("#progress-bar", "p => p.value") == 0

    page.click("#zoom-in")
    zoomed = page.eval_on_selector("#image", "img => img.getBoundingClientRect().width")
    assert zoomed == pytest.approx(1.25 * box["width"], abs=2)
    page.click("#zoom-fit")
    assert page.eval_on_selector("#image", "img => img.getBoundingClientRect().width") == pytest.approx(box["width"], abs=1)

    def view():
        return (float(page.get_attribute("#image", "data-window")), float(page.get_attribute("#image", "data-level")),
                float(page.get_attribute("#window-level feFuncR", "slope")))

    assert view() == (1.0, 0.5, 1.0)
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.move(*centre)
    page.mouse.down()
    page.mouse.move(centre[0] - 150, centre[1] - 30, steps=5)  # narrower window, higher level
    page.mouse.up()
    window, level, slope = view()
    assert window == pytest.approx(0.5, abs=0.01)
    assert level == pytest.approx(0.6, abs=0.01)
    assert slope == pytest.approx(1 / window, rel=0.01)
    intercept = float(page.get_attribute("#window-level feFuncB", "intercept"))
    assert intercept == pytest.approx(-(level - window / 2) / window, abs=0.01)
    page.click(".wl-preset[data-window='0.3']")
    assert view()[:2] == (0.3, 0.5)

    page.keyboard.press("R")  # keys answer as before
    page.keyboard.press("3")
    _wait_for_image(page, 2, total)
    assert view() == (1.0, 0.5, 1.0)  # reset for the new image
    assert page.eval_on_selector("#progress-bar", "p => p.value") == 1
    assert foreign == []
    assert errors == []
    page.close()


@pytest.fixture(scope="module")
def designed_kit(tmp_path_factory):
    """Per-reader sets (A, B) of 6 images, 4 familiarisation cases, blocks per model, no time limit."""
    root = tmp_path_factory.mktemp("reader_browser_design")
    rng = np.random.default_rng(5)
    write_npy(root / "images.npy", rng.random((30, 16, 16)).astype(np.float32))
    write_tsv(root / "slices.tsv", pd.DataFrame({"row": range(30), "subject": ["sub-0000000001"] * 30,
                                                "slice_index": range(30), "split": ["test"] * 30}))
    samples = {}
    for model in ("m1", "m2"):
        write_npy(root / f"{model}.npy", (0.5 * rng.random((20, 16, 16))).astype(np.float32))
        write_tsv(root / f"{model}.tsv", pd.DataFrame({"sample": range(20), "label": [""] * 20}))
        samples[model] = (root / f"{model}.npy", root / f"{model}.tsv")
    rs.build_kit(root / "images.npy", root / "slices.tsv", samples,
                 {"preset": "han", "n_per_model": 2, "display_size": 64, "ask_confidence": False,
                  "reader_ids": ["A", "B"], "n_familiarisation": 4, "blocks": "per_model"},
                 kit_dir=root / "kit", answer_key=root / "answer_key.tsv", summary=root / "summary.json")
    key = pd.read_csv(root / "answer_key.tsv", sep="\t", dtype=str, keep_default_na=False)
    return {"root": root, "dir": root / "kit", "key": key, "key_path": root / "answer_key.tsv"}


def test_familiarisation_first_then_blocks_of_the_readers_own_set(designed_kit, browser_context, tmp_path):
    """Unknown IDs are refused; the practice cases come first with their answers and are not
    recorded; then the reader's own 8 images, block 1 before block 2; scoring sees only them."""
    key = designed_kit["key"]
    mine = key[key["reader_id"] == "A"]
    block_of = dict(zip(mine["image"], mine["block"]))
    page = browser_context.new_page()
    foreign, errors = _watch(page, ("file://",))
    page.goto((designed_kit["dir"] / "index.html").as_uri())
    assert page.is_visible("#familiarisation-instructions")
    assert page.is_visible("#blocks-instructions")
    _start(page, "Z9")
    page.wait_for_function("document.getElementById('start-error').textContent.includes('not part of this kit')")
    _start(page, "A")
    shown = []
    for k in range(4):
        page.wait_for_function(f"document.getElementById('fam-progress').textContent === 'Practice case {k + 1} of 4'")
        assert page.get_attribute("body", "data-screen") == "familiarisation"
        name = page.get_attribute("#fam-image", "src").rsplit("/", 1)[-1]
        truth = page.get_attribute("#fam-answer", "data-truth")
        assert truth in ("real", "synthetic")
        assert truth.upper() in page.inner_text("#fam-answer")
        shown.append(name)
        page.click("#fam-next")
    assert not set(shown) & set(key["image"])  # practice images are never scored
    blocks_seen = []
    for k in range(1, len(mine) + 1):
        page.wait_for_function(
            "([k, n]) => document.body.dataset.ready === 'yes' && "
            "document.getElementById('progress').textContent.endsWith(`Image ${k} of ${n}`)", arg=[k, len(mine)])
        name = page.get_attribute("#image", "src").rsplit("/", 1)[-1]
        assert name in block_of
        blocks_seen.append(block_of[name])
        assert page.inner_text("#progress").startswith(f"Block {len(dict.fromkeys(blocks_seen))} of 2")
        page.keyboard.press("r")
    assert blocks_seen == sorted(blocks_seen, key=list(dict.fromkeys(blocks_seen)).index)
    assert len(set(blocks_seen)) == 2
    page.wait_for_selector("#done:not([hidden])")
    path = _export(page, tmp_path)
    out = tmp_path / "scores"
    scores = reader_scores_job(designed_kit["key_path"], [path], scores_json=out / "scores.json",
                               tables={n: out / f"{n}.tsv" for n in ("readers", "blocks")})
    row = scores["readers"][0]
    assert row["reader_id"] == "A"
    assert row["n_images"] == len(mine) == 8
    assert row["complete"]
    assert {r["block"] for r in scores["blocks_table"]} == set(mine["block"])
    assert not foreign
    assert not errors
    page.close()


# ----- volume kits (reader_study/volume_kit.py, page/volume.js) ---------------------------------

VOLUME_GRID = (12, 10, 8)  # X, Y, Z: a different length on every axis catches a transposed plane


@pytest.fixture(scope="module")
def volume_kit(tmp_path_factory):
    """4 real test volumes + 2 of each of two 3-D runs, two channels, 2 practice volumes, confidence asked."""
    from pipeline_lib.reader_study import volume_kit as vk

    root = tmp_path_factory.mktemp("reader_browser_volumes")
    rng = np.random.default_rng(9)
    shape = (2, *VOLUME_GRID)
    write_npy(root / "volumes.npy", rng.random((8, *shape)).astype(np.float32))
    write_tsv(root / "volumes.tsv", pd.DataFrame({"row": range(8), "subject": [f"sub-{i:010d}" for i in range(8)],
                                                 "split": ["test"] * 8, "augmented": 0, "sequence": "t1+t2"}))
    samples = {}
    for model in ("m1", "m2"):
        samples[model] = root / model / "volumes.npy"
        write_npy(samples[model], (0.5 * rng.random((4, *shape))).astype(np.float32))
    vk.build_volume_kit(root / "volumes.npy", root / "volumes.tsv", samples,
                        {"n_real": 4, "n_per_model": 2, "n_familiarisation": 2},
                        kit_dir=root / "kit", answer_key=root / "answer_key.tsv", summary=root / "summary.json",
                        spacing_mm=[1.0, 1.2, 2.0])
    key = pd.read_csv(root / "answer_key.tsv", sep="\t", dtype=str, keep_default_na=False)
    return {"root": root, "dir": root / "kit", "key": key, "key_path": root / "answer_key.tsv",
            "kit_id": key["kit_id"].iloc[0], "shape": shape}


def _volume_pixels(page, plane: str) -> np.ndarray:
    """The grey values the reading viewer's ``plane`` canvas holds (its red channel)."""
    height, width, values = page.evaluate(
        """(plane) => {
            const canvas = document.querySelector(`#volume-viewer .pane[data-plane=${plane}] canvas`);
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            const red = [];
            for (let i = 0; i < data.length; i += 4) { red.push(data[i]); }
            return [canvas.height, canvas.width, red];
        }""", plane)
    return np.asarray(values, dtype=np.int64).reshape(height, width)


def _expected_slice(voxels: np.ndarray, plane: str, index: int, window: float = 1.0, level: float = 0.5) -> np.ndarray:
    """The evaluation's radiological slice of the stored 8-bit volume (channels side by side) through
    window/level as volume.js applies it (Math.round: floor(x + 0.5))."""
    from pipeline_lib.evaluation.volumetric import plane_slices

    grey = np.concatenate(list(plane_slices(voxels[None].astype(np.float64), plane, [index])), axis=1)
    return np.floor(np.clip((grey / 255 - (level - window / 2)) / window, 0, 1) * 255 + 0.5).astype(np.int64)


def _slice_index(page, plane: str) -> int:
    return int(page.get_attribute(f"#volume-viewer .pane[data-plane={plane}] canvas", "data-index"))


def _wait_for_volume(page, index: int, total: int) -> str:
    page.wait_for_function(
        "([k, n]) => document.body.dataset.ready === 'yes' && "
        "document.getElementById('progress').textContent === `Volume ${k} of ${n}`", arg=[index, total])
    return page.get_attribute("#volume-viewer", "data-volume")


def test_volume_page_scrolls_three_planes_window_level_and_exports(volume_kit, browser_context, tmp_path):
    """Practice volumes first; then every plane scrolls (wheel, arrow keys, slider) and shows the
    evaluation's slice of the stored volume; a click moves the other planes to the point; window/level
    (preset and drag) changes the pixels as its formula says and resets with the next volume; the
    answers export and score like a slice kit's."""
    from pipeline_lib.reader_study.volume_kit import read_volume_script

    key, total, kit_dir = volume_kit["key"], len(volume_kit["key"]), volume_kit["dir"]
    X, Y, Z = VOLUME_GRID
    page = browser_context.new_page()
    foreign, errors = _watch(page, (kit_dir.as_uri() + "/", "blob:"))
    page.goto((kit_dir / "index.html").as_uri())
    assert "brain MRI volumes" in page.inner_text("#start")
    assert page.is_visible("#volume-instructions")
    _start(page, "V")
    for k in range(2):
        page.wait_for_function(f"document.getElementById('fam-progress').textContent === 'Practice case {k + 1} of 2'")
        page.wait_for_function("document.getElementById('practice-viewer').dataset.volume !== undefined")
        practice = page.get_attribute("#practice-viewer", "data-volume")
        assert practice not in set(key["image"])
        assert page.get_attribute("#fam-answer", "data-truth") in ("real", "synthetic")
        page.click("#fam-next")

    name = _wait_for_volume(page, 1, total)
    voxels = read_volume_script((kit_dir / "volumes" / name).read_bytes(), volume_kit["shape"])[1]
    centre = {"axial": Z // 2, "coronal": Y // 2, "sagittal": X // 2}
    for plane, index in centre.items():
        assert _slice_index(page, plane) == index
        np.testing.assert_array_equal(_volume_pixels(page, plane), _expected_slice(voxels, plane, index))
    # panes in mm proportions: axial 2 x 12 voxels of 1 mm wide, 10 voxels of 1.2 mm high
    axial = page.eval_on_selector("#volume-viewer .pane[data-plane=axial] canvas", "c => c.getBoundingClientRect().toJSON()")
    assert axial["width"] / axial["height"] == pytest.approx(24 / 12, rel=0.03)

    def changed(plane, index):
        page.wait_for_function(
            "([plane, k]) => document.querySelector(`#volume-viewer .pane[data-plane=${plane}] canvas`)"
            ".dataset.index === String(k)", arg=[plane, index])
        np.testing.assert_array_equal(_volume_pixels(page, plane), _expected_slice(voxels, plane, index))

    # mouse wheel over the axial pane
    page.mouse.move(axial["x"] + axial["width"] / 2, axial["y"] + axial["height"] / 2)
    page.mouse.wheel(0, 100)
    changed("axial", Z // 2 + 1)
    page.mouse.wheel(0, -100)
    page.mouse.wheel(0, -100)
    changed("axial", Z // 2 - 1)
    # arrow keys scroll the pane under the pointer; left/right choose another pane
    coronal = page.eval_on_selector("#volume-viewer .pane[data-plane=coronal] canvas", "c => c.getBoundingClientRect().toJSON()")
    page.mouse.move(coronal["x"] + 5, coronal["y"] + 5)
    page.keyboard.press("ArrowUp")
    changed("coronal", Y // 2 + 1)
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#volume-viewer", "data-active") == "sagittal"
    page.keyboard.press("ArrowDown")
    changed("sagittal", X // 2 - 1)
    # the sagittal slider
    page.eval_on_selector("#volume-viewer .pane[data-plane=sagittal] input",
                          "s => { s.value = '0'; s.dispatchEvent(new Event('input')); }")
    changed("sagittal", 0)
    assert _slice_index(page, "axial") == Z // 2 - 1  # the other planes stay
    # a click on the axial pane (its second channel, display row 2, column 3) moves the other two planes there
    page.mouse.click(axial["x"] + axial["width"] * (12 + 3.5) / 24, axial["y"] + axial["height"] * 2.5 / Y)
    changed("coronal", Y - 1 - 2)
    changed("sagittal", X - 1 - 3)
    assert _slice_index(page, "axial") == Z // 2 - 1
    point = page.get_attribute("#volume-viewer", "data-point")

    # window/level: a preset, then a drag (300 px = the whole range), each applied to every plane
    page.click(".wl-preset[data-window='0.3']")
    assert page.get_attribute("#volume-viewer", "data-window") == "0.300"
    for plane in centre:
        np.testing.assert_array_equal(_volume_pixels(page, plane),
                                      _expected_slice(voxels, plane, _slice_index(page, plane), 0.3, 0.5))
    assert not np.array_equal(_volume_pixels(page, "axial"), _expected_slice(voxels, "axial", _slice_index(page, "axial")))
    page.click(".wl-preset[data-window='1']")
    centre_xy = (axial["x"] + axial["width"] / 2, axial["y"] + axial["height"] / 2)
    page.mouse.move(*centre_xy)
    page.mouse.down()
    page.mouse.move(centre_xy[0] - 150, centre_xy[1] - 30, steps=5)
    page.mouse.up()
    window = float(page.get_attribute("#volume-viewer", "data-window"))
    level = float(page.get_attribute("#volume-viewer", "data-level"))
    assert (window, level) == (pytest.approx(0.5, abs=0.01), pytest.approx(0.6, abs=0.01))
    assert page.get_attribute("#volume-viewer", "data-point") == point  # a drag is not a click
    difference = _volume_pixels(page, "coronal") - _expected_slice(voxels, "coronal", Y - 3, window, level)
    assert np.abs(difference).max() <= 1  # the readout rounds window and level to 3 digits

    # answers: keys as on the slice page; the next volume starts centred at the stored grey levels
    truth = dict(zip(key["image"], key["truth"]))

    def answer(name, before):  # everything right except the first real volume
        first_real = truth[name] == "real" and "real" not in [truth[n] for n in before]
        return "synthetic" if first_real else truth[name]

    shown = [name]
    page.keyboard.press("R" if answer(name, []) == "real" else "S")
    page.keyboard.press("4")
    for index in range(2, total + 1):
        if index == 5:  # a reload goes on with the fifth volume, no practice again
            page.reload()
            _start(page, "V")
        name = _wait_for_volume(page, index, total)
        if index == 5:
            assert "4 of 8 volumes already answered" in page.inner_text("#hint")
        if index == 2:
            assert page.get_attribute("#volume-viewer", "data-window") == "1.000"
            assert [_slice_index(page, p) for p in centre] == list(centre.values())
            voxels = read_volume_script((kit_dir / "volumes" / name).read_bytes(), volume_kit["shape"])[1]
            np.testing.assert_array_equal(_volume_pixels(page, "sagittal"), _expected_slice(voxels, "sagittal", X // 2))
        page.click(f"#answer-{answer(name, shown)}")
        shown.append(name)
        page.click(".conf[data-confidence='3']")
    page.wait_for_selector("body[data-screen=done]")
    responses = tmp_path / "responses"
    responses.mkdir()
    path = _export(page, responses)
    assert foreign == []
    assert errors == []
    page.close()

    rows = pd.read_csv(path)
    assert path.name == f"reader-V-{volume_kit['kit_id']}.csv"
    assert list(rows["image"]) == shown == rs.reader_order(volume_kit["kit_id"], "V", list(key["image"]))
    out = tmp_path / "scores"
    scores = reader_scores_job(volume_kit["key_path"], response_files(responses), scores_json=out / "scores.json",
                               tables={"readers": out / "readers.tsv"})
    reader = scores["readers"][0]
    assert [reader[k] for k in ("TP", "FN", "FP", "TN")] == [3, 1, 0, 4]
    assert reader["complete"]


def test_volume_page_hides_the_volume_when_the_time_is_up(tmp_path, browser_context):
    """The slice kit's time limit applies to volumes: the viewer is hidden, the answer still asked
    for and flagged timed_out. (4 s: with 1 s a loaded machine timed out before the first volume
    was shown.)"""
    from pipeline_lib.reader_study import volume_kit as vk

    rng = np.random.default_rng(4)
    write_npy(tmp_path / "volumes.npy", rng.random((3, 1, 6, 5, 4)).astype(np.float32))
    write_tsv(tmp_path / "volumes.tsv", pd.DataFrame({"row": range(3), "subject": [f"sub-{i:010d}" for i in range(3)],
                                                     "split": "test", "augmented": 0, "sequence": "t1"}))
    write_npy(tmp_path / "m.npy", rng.random((2, 1, 6, 5, 4)).astype(np.float32))
    vk.build_volume_kit(tmp_path / "volumes.npy", tmp_path / "volumes.tsv", {"m": tmp_path / "m.npy"},
                        {"n_real": 1, "n_per_model": 1, "time_limit_s": 4.0, "ask_confidence": False},
                        kit_dir=tmp_path / "kit", answer_key=tmp_path / "key.tsv", summary=tmp_path / "summary.json")
    page = browser_context.new_page()
    foreign, errors = _watch(page, ((tmp_path / "kit").as_uri() + "/", "blob:"))
    page.goto((tmp_path / "kit" / "index.html").as_uri())
    _start(page, "T")
    _wait_for_volume(page, 1, 2)
    assert page.eval_on_selector("#volume-viewer", "v => getComputedStyle(v).visibility") == "visible"
    page.wait_for_selector("#time-up", state="visible", timeout=30_000)
    assert page.eval_on_selector("#volume-viewer", "v => getComputedStyle(v).visibility") == "hidden"
    page.keyboard.press("S")
    _wait_for_volume(page, 2, 2)
    assert page.eval_on_selector("#volume-viewer", "v => getComputedStyle(v).visibility") == "visible"
    page.keyboard.press("R")
    page.wait_for_selector("body[data-screen=done]")
    rows = pd.read_csv(_export(page, tmp_path))
    assert list(rows["answer"]) == ["synthetic", "real"]
    assert rows.loc[0, "timed_out"] == 1
    assert rows.loc[0, "response_ms"] >= 4000
    assert foreign == []
    assert errors == []
    page.close()
