"""Reader-study kit of volumes (reader_study/volume_kit.py): 8-bit volumes stored faithfully, a kit
that reveals nothing about which volumes are real, shuffled by seed, the slice kit's designs, and
answers that the slice kit's scoring reads unchanged. The page itself: test_reader_page_browser.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.guard import failure_record, write_failed_records
from pipeline_lib.core.io import write_json, write_npy, write_tsv
from pipeline_lib.reader_study import kit as rs
from pipeline_lib.reader_study import volume_kit as vk
from pipeline_lib.reader_study.scoring import reader_scores_job

MODELS = ("hiddenldm", "hiddengan")
SHAPE = (1, 6, 5, 4)  # C, X, Y, Z: a different length on every axis catches a transposed layout


def _cohort(root: Path, n_test=12, n_train=4, n_generated=8, channels=1) -> dict:
    """Real volumes: noise; generated: smooth ramps (easy to tell apart by eye, on purpose)."""
    rng = np.random.default_rng(11)
    shape = (channels,) + SHAPE[1:]
    n = n_test + n_train
    write_npy(root / "real" / "volumes.npy", rng.random((n,) + shape).astype(np.float32))
    write_tsv(root / "real" / "volumes.tsv", pd.DataFrame({
        "row": range(n), "subject": [f"sub-{i:010x}" for i in range(n)], "split": ["test"] * n_test + ["train"] * n_train,
        "augmented": 0, "sequence": ["t1"] * n}))
    write_json(root / "real" / "grid.json", {"shape": list(shape[1:]), "spacing_mm": [1.0, 1.5, 3.0],
                                             "affine": np.eye(4).tolist()})
    samples = {}
    ramp = np.linspace(0.2, 0.6, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    for k, model in enumerate(MODELS):
        path = root / "volume_samples" / model / "seed0" / "volumes.npy"
        write_npy(path, np.stack([ramp * (1 + 0.05 * i + 0.1 * k) for i in range(n_generated)]).astype(np.float32))
        samples[model] = path
    return {"volumes": root / "real" / "volumes.npy", "table": root / "real" / "volumes.tsv",
            "grid": root / "real" / "grid.json", "samples": samples}


def _build(root: Path, cohort: dict, settings: dict, name: str = "a") -> dict:
    out = root / f"study_{name}"
    summary = vk.build_volume_kit(cohort["volumes"], cohort["table"], cohort["samples"], settings,
                                  kit_dir=out / "kit", answer_key=out / "answer_key.tsv",
                                  summary=out / "summary.json", spacing_mm=[1.0, 1.5, 3.0])
    key = pd.read_csv(out / "answer_key.tsv", sep="\t", dtype=str, keep_default_na=False)
    return {"kit": out / "kit", "key": key, "summary": summary, "out": out}


def _kit_config(kit: Path) -> dict:
    return json.loads(re.search(r"window\.READER_KIT = (\{.*\});", (kit / "kit.js").read_text(), re.S).group(1))


def test_volume_files_hold_the_8_bit_volumes_and_the_page_its_grid(tmp_path):
    cohort = _cohort(tmp_path)
    built = _build(tmp_path, cohort, {"n_real": 6, "n_per_model": 3})
    kit, key = built["kit"], built["key"]
    assert sorted(p.name for p in kit.iterdir()) == ["README.txt", "app.js", "index.html", "kit.js", "style.css",
                                                      "volume.js", "volumes"]
    assert list(key.columns) == rs.KEY_COLUMNS
    assert key["truth"].value_counts().to_dict() == {"real": 6, "synthetic": 6}
    sources = {"real": np.load(cohort["volumes"])} | {m: np.load(p) for m, p in cohort["samples"].items()}
    for row in key.itertuples():
        name, voxels = vk.read_volume_script((kit / "volumes" / row.image).read_bytes(), SHAPE)
        assert name == row.image
        expected = np.round(sources[row.source][int(row.source_index)] * 255).astype(np.uint8)
        np.testing.assert_array_equal(voxels, expected)
    config = _kit_config(kit)
    assert config["mode"] == "volume"
    assert config["volume"] == {"shape": [6, 5, 4], "channels": 1, "spacing_mm": [1.0, 1.5, 3.0],
                                "interpolation": "bilinear"}
    assert config["kit_id"] == key["kit_id"].iloc[0]
    assert built["summary"]["bytes_per_volume"] == len((kit / "volumes" / key["image"].iloc[0]).read_bytes())
    assert "(12 volumes)" in (kit / "README.txt").read_text()
    # only real test volumes enter the kit
    assert set(key.loc[key["source"] == "real", "source_index"].astype(int)) <= set(range(12))


def test_volume_kit_reveals_nothing_about_the_source(tmp_path):
    cohort = _cohort(tmp_path, n_test=40, n_generated=20)
    built = _build(tmp_path, cohort, {"n_real": 30, "n_per_model": 15})
    kit, key = built["kit"], built["key"]
    truth = dict(zip(key["image"], key["truth"]))
    files = sorted((kit / "volumes").iterdir())
    assert sorted(p.name for p in files) == sorted(truth)
    assert all(re.fullmatch(r"[0-9a-f]{16}\.js", p.name) for p in files)
    blobs = [p.read_bytes() for p in files]
    assert len({len(b) for b in blobs}) == 1  # uncompressed: a smooth volume is as long as a noisy one
    assert len({b[:len('window.READER_VOLUME("')] for b in blobs}) == 1
    assert len({p.stat().st_mtime for p in kit.rglob("*")}) == 1
    config = _kit_config(kit)
    assert config["images"] == sorted(truth)
    assert set(config) == {"format_version", "kit_id", "title", "images", "time_limit_s", "ask_confidence",
                           "mode", "volume"}
    for name in vk.VOLUME_PAGE_FILES:
        assert (kit / name).read_text() == rs.page_template(name)
    kit_js = (kit / "kit.js").read_text().lower()
    assert "synthetic" not in kit_js.replace(config["title"].lower(), "")
    assert "truth" not in kit_js
    secrets = (*MODELS, "source_index", "answer_key", "volume_samples", "seed0", "sub-00000", str(tmp_path).lower())
    for path in kit.rglob("*"):
        if path.is_file():
            data = path.read_bytes().lower()
            for secret in secrets:
                assert secret.encode() not in data, (path.name, secret)
    # the same seed and count give the same names whatever the classes
    other = _build(tmp_path, cohort, {"preset": "han", "n_per_model": 15}, name="b")
    assert sorted(other["key"]["image"]) == sorted(truth)
    assert dict(zip(other["key"]["image"], other["key"]["truth"])) != truth


def test_volume_kit_is_deterministic_and_shuffled_by_its_seed(tmp_path):
    cohort = _cohort(tmp_path)
    settings = {"n_real": 8, "n_per_model": 4}
    first = _build(tmp_path, cohort, settings, name="a")
    again = _build(tmp_path, cohort, settings, name="b")
    pd.testing.assert_frame_equal(first["key"], again["key"])
    for path in (first["kit"]).rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (again["kit"] / path.relative_to(first["kit"])).read_bytes()
    other = _build(tmp_path, cohort, {**settings, "seed": 1}, name="c")
    assert sorted(other["key"]["image"]) != sorted(first["key"]["image"])
    assert other["key"]["kit_id"].iloc[0] != first["key"]["kit_id"].iloc[0]
    draws = {(r.source, r.source_index) for r in first["key"].itertuples()}
    assert draws != {(r.source, r.source_index) for r in other["key"].itertuples()}
    # a reader's order is a seeded permutation of the names (the page's, app.js)
    names = list(first["key"]["image"])
    order = rs.reader_order(first["key"]["kit_id"].iloc[0], "R1", names)
    assert sorted(order) == sorted(names)
    assert order != sorted(names)


def test_answers_round_trip_into_the_slice_kits_scoring(tmp_path):
    cohort = _cohort(tmp_path)
    built = _build(tmp_path, cohort, {"n_real": 6, "n_per_model": 3})
    key = built["key"]
    kit_id = key["kit_id"].iloc[0]
    truth = dict(zip(key["image"], key["truth"]))
    source = dict(zip(key["image"], key["source"]))
    responses = tmp_path / "responses"
    for reader in ("A", "B"):
        order = rs.reader_order(kit_id, reader, list(key["image"]))
        # A: every answer right; B: calls every volume of hiddengan real, the rest right
        answers = [truth[i] if reader == "A" or source[i] != "hiddengan" else "real" for i in order]
        responses.mkdir(exist_ok=True)
        pd.DataFrame({
            "kit_id": kit_id, "reader_id": reader, "order_index": range(1, len(order) + 1), "image": order,
            "answer": answers, "confidence": 3, "response_ms": 900, "timed_out": 0,
            "answered_at": "2026-12-06T17:00:00Z"}).to_csv(responses / f"reader-{reader}-{kit_id}.csv", index=False)
    out = tmp_path / "scores"
    scores = reader_scores_job(built["out"] / "answer_key.tsv", sorted(responses.iterdir()),
                               scores_json=out / "scores.json", tables={"readers": out / "readers.tsv"})
    readers = {r["reader_id"]: r for r in scores["readers"]}
    assert [readers["A"][k] for k in ("TP", "FN", "FP", "TN")] == [6, 0, 0, 6]
    assert [readers["B"][k] for k in ("TP", "FN", "FP", "TN")] == [6, 0, 3, 3]


def test_the_slice_kits_designs_apply_to_volumes(tmp_path):
    cohort = _cohort(tmp_path, n_test=30, n_generated=12)
    built = _build(tmp_path, cohort, {"preset": "han", "n_per_model": 2, "reader_ids": ["A", "B"],
                                      "n_familiarisation": 4, "blocks": "per_model"})
    key, config = built["key"], _kit_config(built["kit"])
    assert set(key["reader_id"]) == {"A", "B"}
    assert set(config["readers"]) == {"A", "B"}
    assert len(config["familiarisation"]) == 4
    assert not {f["image"] for f in config["familiarisation"]} & set(key["image"])
    assert {f["image"] for f in config["familiarisation"]} <= {p.name for p in (built["kit"] / "volumes").iterdir()}
    assert set(config["image_blocks"]) == set(key["image"])
    assert built["summary"]["blocks"] == sorted(MODELS)


def test_bad_volume_inputs_are_named(tmp_path):
    cohort = _cohort(tmp_path)
    out = tmp_path / "out"
    kwargs = {"kit_dir": out / "kit", "answer_key": out / "key.tsv", "summary": out / "s.json"}
    wrong = tmp_path / "wrong.npy"
    write_npy(wrong, np.zeros((3, 1, 6, 5, 5), np.float32))
    with pytest.raises(InputError, match=r"wrong\.npy.*same grid"):
        vk.build_volume_kit(cohort["volumes"], cohort["table"], {"m": wrong}, {"n_real": 2, "n_per_model": 2}, **kwargs)
    flat = tmp_path / "flat.npy"
    write_npy(flat, np.zeros((3, 6, 5), np.float32))
    with pytest.raises(InputError, match=r"flat\.npy.*\(N, C, X, Y, Z\)"):
        vk.build_volume_kit(cohort["volumes"], cohort["table"], {"m": flat}, {}, **kwargs)
    broken = tmp_path / "nan.npy"
    write_npy(broken, np.full((3,) + SHAPE, np.nan, np.float32))
    with pytest.raises(InputError, match=r"nan\.npy: volume \d holds NaN"):
        vk.build_volume_kit(cohort["volumes"], cohort["table"], {"m": broken}, {"n_real": 2, "n_per_model": 2}, **kwargs)
    with pytest.raises(InputError, match=r"volumes\.npy: the reader study needs 9 model 'hiddenldm' images but only 8"):
        vk.build_volume_kit(cohort["volumes"], cohort["table"], {MODELS[0]: cohort["samples"][MODELS[0]]},
                            {"n_real": 2, "n_per_model": 9}, **kwargs)
    with pytest.raises(InputError, match="must not lie inside"):
        vk.build_volume_kit(cohort["volumes"], cohort["table"], cohort["samples"], {}, kit_dir=out / "kit",
                            answer_key=out / "kit" / "key.tsv", summary=out / "s.json")
    with pytest.raises(InputError, match="spacing"):
        vk.build_volume_kit(cohort["volumes"], cohort["table"], cohort["samples"], {"n_real": 2, "n_per_model": 2},
                            spacing_mm=[1, 0, 1], **kwargs)


def test_job_reads_the_grid_and_leaves_a_failed_run_out(tmp_path):
    cohort = _cohort(tmp_path)
    failed = tmp_path / "volume_samples" / "crashed" / "seed0" / "volumes.npy"
    write_failed_records([failed], failure_record("training", "killed by SIGKILL"))
    out = tmp_path / "job"
    files = [cohort["samples"][MODELS[0]], failed]
    summary = vk.volume_kit_job(cohort["volumes"], cohort["table"], cohort["grid"], files, [MODELS[0], "crashed"],
                                {"n_real": 4, "n_per_model": 4}, kit_dir=out / "kit", answer_key=out / "key.tsv",
                                summary=out / "summary.json")
    assert summary["per_source"] == {"real": 4, MODELS[0]: 4}
    assert summary["volume"]["spacing_mm"] == [1.0, 1.5, 3.0]
    assert json.loads((out / "summary.json").read_text())["volume_bytes"] == summary["volume_bytes"]
    with pytest.raises(InputError, match="2 models but 1 volume files"):
        vk.volume_kit_job(cohort["volumes"], cohort["table"], cohort["grid"], files[:1], [MODELS[0], "crashed"], {},
                          kit_dir=out / "kit", answer_key=out / "key.tsv", summary=out / "summary.json")
