"""Reader-study kit: the three seed compositions, deterministic PNGs, and a kit that
reveals nothing about which images are real."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline_lib.reader_study import kit as rs
from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import write_npy, write_tsv

MODELS = ("secretgan", "vaemodel")


def _pools(n_real=30, n_model=20, real_groups=("T1", "T2"), model_groups=None):
    real = pd.DataFrame({"index": np.arange(n_real) * 3,
                         "group": [real_groups[i % len(real_groups)] for i in range(n_real)]})
    groups = model_groups or [""]
    synthetic = {m: pd.DataFrame({"index": np.arange(n_model), "group": [groups[i % len(groups)] for i in range(n_model)]})
                 for m in MODELS}
    return real, synthetic


def _cohort(root: Path, n_real_test=60, n_samples=40, size=32) -> dict:
    """Real slices: textured noise; samples: smooth blobs. Easy to tell apart by eye, on purpose."""
    rng = np.random.default_rng(7)
    n_rows = n_real_test + 20
    images = rng.random((n_rows, size, size)).astype(np.float32)
    write_npy(root / "slices" / "images.npy", images)
    write_tsv(root / "slices" / "slices.tsv", pd.DataFrame({
        "row": np.arange(n_rows), "subject": [f"sub-{i // 10:010x}" for i in range(n_rows)],
        "slice_index": np.arange(n_rows) % 10, "split": ["test"] * n_real_test + ["train"] * 20,
        "sequence": ["T1" if i % 2 else "T2" for i in range(n_rows)]}))
    samples = {}
    yy, xx = np.mgrid[0:size, 0:size] / size
    for k, model in enumerate(MODELS):
        stack = np.stack([0.3 + 0.2 * np.sin(3 * xx + i) * np.cos(2 * yy + k) for i in range(n_samples)]).astype(np.float32)
        folder = root / "samples" / model
        write_npy(folder / "samples.npy", stack)
        write_tsv(folder / "labels.tsv", pd.DataFrame({"sample": np.arange(n_samples),
                                                      "label": ["T1", "T2"] * (n_samples // 2)}))
        samples[model] = (folder / "samples.npy", folder / "labels.tsv")
    return {"images": root / "slices" / "images.npy", "table": root / "slices" / "slices.tsv", "samples": samples}


def _build(root: Path, cohort: dict, settings: dict, name: str = "a") -> dict:
    out = root / f"study_{name}"
    summary = rs.build_kit(cohort["images"], cohort["table"], cohort["samples"], settings,
                           kit_dir=out / "kit", answer_key=out / "answer_key.tsv", summary=out / "summary.json")
    key = pd.read_csv(out / "answer_key.tsv", sep="\t", dtype=str, keep_default_na=False)
    return {"kit": out / "kit", "key": key, "summary": summary, "out": out}


# ----- settings and composition ---------------------------------------------

def test_ungria_hirte_fixed_counts():
    real, synthetic = _pools()
    kit = rs.compose_kit(real, synthetic, {"preset": "ungria_hirte", "n_real": 12, "n_per_model": 7})
    assert kit.groupby("source").size().to_dict() == {"real": 12, "secretgan": 7, "vaemodel": 7}
    assert set(kit.loc[kit.source == "real", "truth"]) == {"real"}
    assert set(kit.loc[kit.source != "real", "truth"]) == {"synthetic"}
    assert not kit.duplicated(["source", "source_index"]).any()
    assert (kit["block"] == "").all()
    # shuffled: the composition order does not survive
    assert list(kit["source"]) != sorted(kit["source"], key=["real", *MODELS].index)


def test_han_balanced_blocks_do_not_reuse_real_images():
    real, synthetic = _pools(n_real=30)
    kit = rs.compose_kit(real, synthetic, {"preset": "han", "n_per_model": 10})
    for model in MODELS:
        block = kit[kit["block"] == model]
        assert block["truth"].value_counts().to_dict() == {"real": 10, "synthetic": 10}
        assert set(block.loc[block.truth == "synthetic", "source"]) == {model}
    assert not kit[kit.truth == "real"]["source_index"].duplicated().any()


def test_han_stratifies_by_group_for_labelled_models():
    real, synthetic = _pools(n_real=40, model_groups=["T1", "T2"])
    kit = rs.compose_kit(real, synthetic, {"preset": "han", "n_per_model": 6, "group_by": "sequence"})
    counts = kit.groupby(["block", "truth", "group"]).size()
    for model in MODELS:
        for group in ("T1", "T2"):
            assert counts[(model, "real", group)] == counts[(model, "synthetic", group)] == 3


@pytest.mark.parametrize("seed", range(6))
def test_kazuhiro_fraction_in_range(seed):
    real, synthetic = _pools(n_real=60, n_model=40)
    kit = rs.compose_kit(real, synthetic, {"preset": "kazuhiro", "n_total": 50, "seed": seed})
    assert len(kit) == 50
    assert 20 <= (kit.truth == "synthetic").sum() <= 30
    per_model = kit[kit.truth == "synthetic"].groupby("source").size()
    assert per_model.max() - per_model.min() <= 1


def test_kazuhiro_fraction_varies_with_seed_and_composition_is_deterministic():
    real, synthetic = _pools(n_real=60, n_model=40)
    settings = {"preset": "kazuhiro", "n_total": 50}
    fractions = {int((rs.compose_kit(real, synthetic, {**settings, "seed": s}).truth == "synthetic").sum())
                 for s in range(10)}
    assert len(fractions) > 1
    first = rs.compose_kit(real, synthetic, {**settings, "seed": 3})
    pd.testing.assert_frame_equal(first, rs.compose_kit(real, synthetic, {**settings, "seed": 3}))


def test_too_few_images_names_the_file():
    real, synthetic = _pools(n_real=5)
    with pytest.raises(InputError, match=r"results/slices/images.npy: .* needs 8 real test images .* only 5"):
        rs.compose_kit(real, synthetic, {"n_real": 8, "n_per_model": 2},
                       sources={"real": "results/slices/images.npy"})
    with pytest.raises(InputError, match="called 'real'"):
        rs.compose_kit(real, {"real": synthetic["secretgan"]}, {"n_real": 2})


# ----- PNG --------------------------------------------------------------------

def test_png_roundtrip_and_chunk_layout():
    pixels = (np.arange(12 * 20) % 256).astype(np.uint8).reshape(12, 20)
    data = rs.kit_png(pixels)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == np.uint8
    assert decoded.shape == (12, 20)
    np.testing.assert_array_equal(decoded, pixels)
    assert [kind for kind, _ in rs.png_chunks(data)] == ["IHDR", "IDAT", "IEND"]
    # the size depends on the dimensions only
    assert len(rs.kit_png(np.zeros_like(pixels))) == len(data)


def test_display_pixels_nearest_upsampling_repeats_pixels():
    image = np.array([[0.0, 1.0], [0.5, 0.25]], dtype=np.float32)
    out = rs.display_pixels(image, 4, 4, "nearest")
    np.testing.assert_array_equal(out, np.kron(np.array([[0, 255], [128, 64]]), np.ones((2, 2))).astype(np.uint8))
    assert rs.display_pixels(np.full((3, 3), 2.0, np.float32), 6, 6).max() == 255


def test_reader_order_is_a_seeded_permutation():
    names = [f"{i:016x}.png" for i in range(30)]
    first = rs.reader_order("kit1", "R1", names)
    assert sorted(first) == sorted(names)
    assert first == rs.reader_order("kit1", "R1", list(reversed(names)))
    assert first != rs.reader_order("kit1", "R2", names)
    assert first != rs.reader_order("kit2", "R1", names)


# ----- the kit ---------------------------------------------------------------

def test_kit_files_key_outside_and_faithful_pixels(tmp_path):
    cohort = _cohort(tmp_path)
    built = _build(tmp_path, cohort, {"n_real": 10, "n_per_model": 5, "display_size": 64,
                                      "interpolation": "nearest", "time_limit_s": 10})
    kit, key = built["kit"], built["key"]
    assert sorted(p.name for p in kit.iterdir()) == ["README.txt", "app.js", "images", "index.html", "kit.js",
                                                      "style.css"]
    assert not any(p.name.endswith(".tsv") for p in kit.rglob("*"))
    assert "reader_study.responses_dir, 'reader_responses/' unless configured" in (kit / "README.txt").read_text()
    assert list(key.columns) == rs.KEY_COLUMNS
    assert len(key) == 20
    assert key["truth"].value_counts().to_dict() == {"real": 10, "synthetic": 10}
    assert built["summary"]["per_source"] == {"real": 10, "secretgan": 5, "vaemodel": 5}
    sources = {"real": np.load(cohort["images"])} | {m: np.load(cohort["samples"][m][0]) for m in MODELS}
    for row in key.itertuples():
        png = cv2.imread(str(kit / "images" / row.image), cv2.IMREAD_UNCHANGED)
        expected = np.kron(np.round(sources[row.source][int(row.source_index)] * 255), np.ones((2, 2)))
        np.testing.assert_array_equal(png, expected.astype(np.uint8))
    config = _kit_config(kit)
    assert config["time_limit_s"] == 10
    assert config["image_height"] == config["image_width"] == 64
    assert config["kit_id"] == key["kit_id"].iloc[0]
    with pytest.raises(InputError, match="must not lie inside"):
        rs.build_kit(cohort["images"], cohort["table"], cohort["samples"], {},
                     kit_dir=tmp_path / "k", answer_key=tmp_path / "k" / "key.tsv", summary=tmp_path / "s.json")


def _kit_config(kit: Path) -> dict:
    text = (kit / "kit.js").read_text()
    return json.loads(re.search(r"window\.READER_KIT = (\{.*\});", text, re.S).group(1))


def test_kit_reveals_nothing_about_the_class(tmp_path):
    cohort = _cohort(tmp_path)
    built = _build(tmp_path, cohort, {"n_real": 60, "n_per_model": 30, "display_size": 48})
    kit, key = built["kit"], built["key"]
    truth = dict(zip(key["image"], key["truth"]))
    pngs = sorted((kit / "images").iterdir())
    assert sorted(p.name for p in pngs) == sorted(truth)
    # names: 16 hex digits, nothing else
    assert all(re.fullmatch(r"[0-9a-f]{16}\.png", p.name) for p in pngs)
    # bytes: same length, same chunk sequence, same header, same modification time for every image
    blobs = {p.name: p.read_bytes() for p in pngs}
    assert len({len(b) for b in blobs.values()}) == 1
    assert len({tuple(rs.png_chunks(b)) for b in blobs.values()}) == 1
    assert {kind for b in blobs.values() for kind, _ in rs.png_chunks(b)} == {"IHDR", "IDAT", "IEND"}
    assert len({b[:33] for b in blobs.values()}) == 1  # signature + IHDR
    assert len({p.stat().st_mtime for p in kit.rglob("*")}) == 1
    # name order (also the order of the page's image list) does not predict the class
    config = _kit_config(kit)
    assert config["images"] == sorted(truth)
    is_real = np.array([truth[name] == "real" for name in config["images"]])
    assert 0.35 < _auc(np.arange(len(is_real)), is_real) < 0.65
    first_digit = np.array([int(name[0], 16) for name in config["images"]])
    assert 0.35 < _auc(first_digit, is_real) < 0.65
    # the same seed and image count give the same names whatever the classes: names carry no class
    other = _build(tmp_path, cohort, {"preset": "han", "n_per_model": 30, "display_size": 48}, name="b")
    assert sorted(other["key"]["image"]) == sorted(truth)
    assert dict(zip(other["key"]["image"], other["key"]["truth"])) != truth
    # page files are the shipped templates; kit.js holds names and reading rules only
    for name in rs.PAGE_FILES:
        assert (kit / name).read_text() == rs.page_template(name)
    assert set(config) == {"format_version", "kit_id", "title", "images", "image_height", "image_width",
                           "time_limit_s", "ask_confidence"}
    kit_js = (kit / "kit.js").read_text().lower()
    assert "synthetic" not in kit_js.replace(config["title"].lower(), "")
    assert "truth" not in kit_js
    for path in kit.rglob("*"):
        if path.is_file():
            data = path.read_bytes().lower()
            for secret in (*MODELS, "source_index", "answer_key"):
                assert secret.encode() not in data, (path, secret)


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = score[positive], score[~positive]
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def test_kit_is_deterministic(tmp_path):
    cohort = _cohort(tmp_path)
    settings = {"preset": "kazuhiro", "n_total": 30, "display_size": 40, "seed": 5}
    first, second = _build(tmp_path, cohort, settings, "x"), _build(tmp_path, cohort, settings, "y")
    pd.testing.assert_frame_equal(first["key"], second["key"])
    for path in first["kit"].rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (second["kit"] / path.relative_to(first["kit"])).read_bytes()


def test_bad_inputs_are_named(tmp_path):
    cohort = _cohort(tmp_path, n_real_test=20, n_samples=10)
    small = {"n_real": 4, "n_per_model": 2, "display_size": 32}
    wrong_size = tmp_path / "wrong.npy"
    np.save(wrong_size, np.zeros((10, 16, 16), np.float32))
    broken = dict(cohort["samples"], secretgan=(wrong_size, cohort["samples"]["secretgan"][1]))
    with pytest.raises(InputError, match="wrong.npy: images are"):
        rs.build_kit(cohort["images"], cohort["table"], broken, small, kit_dir=tmp_path / "k1",
                     answer_key=tmp_path / "k1.tsv", summary=tmp_path / "k1.json")
    short_labels = tmp_path / "labels.tsv"
    short_labels.write_text("sample\tlabel\n0\t\n")
    broken = dict(cohort["samples"], secretgan=(cohort["samples"]["secretgan"][0], short_labels))
    with pytest.raises(InputError, match="labels.tsv: expected a 'label' column"):
        rs.build_kit(cohort["images"], cohort["table"], broken, small, kit_dir=tmp_path / "k2",
                     answer_key=tmp_path / "k2.tsv", summary=tmp_path / "k2.json")
    with pytest.raises(InputError, match="slices.tsv: reader_study.group_by names column 'contrast'"):
        rs.build_kit(cohort["images"], cohort["table"], cohort["samples"], {**small, "group_by": "contrast"},
                     kit_dir=tmp_path / "k3", answer_key=tmp_path / "k3.tsv", summary=tmp_path / "k3.json")
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((10, 32, 32), np.nan, np.float32))
    broken = dict(cohort["samples"], secretgan=(nan, cohort["samples"]["secretgan"][1]))
    with pytest.raises(InputError, match="nan.npy: image .* NaN"):
        rs.build_kit(cohort["images"], cohort["table"], broken, small, kit_dir=tmp_path / "k4",
                     answer_key=tmp_path / "k4.tsv", summary=tmp_path / "k4.json")
    assert not (tmp_path / "k4").exists()
    assert not list(tmp_path.glob(".k4.*"))


def test_kit_id_changes_when_an_image_changes():
    """A rebuilt kit with other pixels (a retrained model) must not accept old answers."""
    from pipeline_lib.reader_study.kit import kit_identifier

    names = ["a.png", "b.png"]
    same = kit_identifier(names, {"a.png": b"1", "b.png": b"2"})
    assert same == kit_identifier(names, {"a.png": b"1", "b.png": b"2"})
    assert same != kit_identifier(names, {"a.png": b"1", "b.png": b"3"})


# ----- seeds' designs wired into the kit (reader_ids, familiarisation, blocks) ---------------


def _kit_js(kit: Path) -> dict:
    text = (kit / "kit.js").read_text()
    return json.loads(text[text.index("{"): text.rindex("}") + 1])


def test_two_reader_ids_get_different_sets_within_40_to_60_percent_and_never_the_familiarisation(tmp_path):
    cohort = _cohort(tmp_path, n_real_test=60, n_samples=40)
    settings = {"preset": "kazuhiro", "n_total": 30, "synthetic_fraction": [0.4, 0.6], "seed": 3,
                "reader_ids": ["NR1", "NNR1"], "n_familiarisation": 6}
    built = _build(tmp_path, cohort, settings)
    key, page, summary = built["key"], _kit_js(built["kit"]), built["summary"]
    assert set(key["reader_id"]) == {"NR1", "NNR1"}
    sets = {}
    for reader in ("NR1", "NNR1"):
        mine = key[key["reader_id"] == reader]
        assert len(mine) == 30
        assert sorted(page["readers"][reader]) == sorted(mine["image"])
        assert 0.4 <= (mine["truth"] == "synthetic").mean() <= 0.6
        assert summary["readers"][reader]["n_images"] == 30
        sets[reader] = set(zip(mine["source"], mine["source_index"]))
    assert sets["NR1"] != sets["NNR1"]
    # The familiarisation set: shown with answers, on the page only, never scored.
    training = page["familiarisation"]
    assert len(training) == 6
    assert {t["truth"] for t in training} == {"real", "synthetic"}
    assert not {t["image"] for t in training} & set(key["image"])
    assert all((built["kit"] / "images" / t["image"]).is_file() for t in training)
    # ... and none of its underlying images is in a reader's scored set.
    # The design is deterministic: rebuild it to learn the familiarisation set's sources.
    from pipeline_lib.reader_study.design import compose_design
    real = rs.real_pool(cohort["table"], None)
    synthetic = {m: rs.synthetic_pool(*cohort["samples"][m], None) for m in MODELS}
    design = compose_design(real, synthetic, settings)
    familiar = set(zip(design["familiarisation"]["source"], design["familiarisation"]["source_index"].astype(str)))
    assert len(familiar) == 6
    assert not familiar & (sets["NR1"] | sets["NNR1"])
    # Same settings, same kit; a reader's set depends on the seed and the ID only.
    again = _build(tmp_path, cohort, settings, name="b")
    assert again["key"].equals(key)


def test_default_settings_keep_the_single_kit(tmp_path):
    cohort = _cohort(tmp_path)
    built = _build(tmp_path, cohort, {"preset": "ungria_hirte", "n_real": 10, "n_per_model": 5})
    assert list(built["key"].columns) == rs.KEY_COLUMNS
    page = _kit_js(built["kit"])
    assert not {"readers", "familiarisation", "image_blocks"} & set(page)


def test_blocks_per_model_with_concat_real_groups_come_in_turn(tmp_path):
    cohort = _cohort(tmp_path, n_real_test=60, n_samples=40)
    settings = {"preset": "han", "n_per_model": 8, "group_by": "sequence", "blocks": "per_model",
                "block_real_groups": ["T1", "T2"]}
    built = _build(tmp_path, cohort, settings)
    key, page = built["key"], _kit_js(built["kit"])
    assert built["summary"]["blocks"] == ["secretgan/concat", "vaemodel/concat"]
    for block in built["summary"]["blocks"]:
        part = key[key["block"] == block]
        assert (part["truth"] == "synthetic").sum() == 8
        real = part[part["truth"] == "real"]
        assert real["group"].value_counts().to_dict() == {"T1": 4, "T2": 4}  # equal shares
    order = rs.reader_order(page["kit_id"], "R1", page["images"], page["image_blocks"])
    blocks = [page["image_blocks"][name] for name in order]
    assert blocks == sorted(blocks)
    assert set(blocks) == {0, 1}
    # Block names never reach the kit folder.
    assert "secretgan" not in (built["kit"] / "kit.js").read_text()


def test_per_reader_scoring_counts_each_readers_own_set_and_blocks(tmp_path):
    from pipeline_lib.reader_study.scoring import score_responses

    cohort = _cohort(tmp_path, n_real_test=60, n_samples=40)
    settings = {"preset": "kazuhiro", "n_total": 20, "seed": 5, "reader_ids": ["A", "B"], "n_familiarisation": 4}
    key = _build(tmp_path, cohort, settings)["key"]
    mine = key[key["reader_id"] == "A"]
    responses = pd.DataFrame({"kit_id": mine["kit_id"], "reader_id": "A", "order_index": range(1, len(mine) + 1),
                              "image": mine["image"], "answer": "real", "confidence": np.nan, "response_ms": 500,
                              "timed_out": 0, "file": "a.csv"})
    row = score_responses(key, responses)["readers"][0]
    assert row["n_images"] == 20
    assert row["complete"]
    assert row["TP_rate"] == 100.0
    assert row["balanced_accuracy"] == 0.5
    other = key[key["reader_id"] == "B"]["image"].iloc[0]
    with pytest.raises(InputError, match="reader 'A' answered image .* of reader 'B'"):
        score_responses(key, responses.assign(image=[other] + list(mine["image"].iloc[1:])))
