"""Reader-study scoring: kappa and accuracy against published worked examples, the papers'
tables from hand-made answers, and clear errors for broken response files."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.reader_study.scoring import (
    cohen_kappa, cohen_kappa_from_table, confusion, fleiss_kappa, load_answer_key, load_responses,
    reader_accuracy, reader_scores_job, response_files, score_responses, two_by_two)
from pipeline_lib.report.reader_section import render_reader_results_html

KIT = "0123456789ab"
EVIL = '<b>gan&"x"</b>'


# ----- worked examples ------------------------------------------------------

@pytest.mark.parametrize("table, expected", [
    # Wikipedia "Cohen's kappa", simple example: po = 0.7, pe = 0.5
    ([[20, 5], [10, 15]], 0.4),
    # Wikipedia, "same agreement, different kappa": both 60 % agreement
    ([[45, 15], [25, 15]], 0.1304),
    ([[25, 35], [5, 35]], 0.2593),
])
def test_cohen_kappa_worked_examples(table, expected):
    assert cohen_kappa_from_table(table) == pytest.approx(expected, abs=5e-5)
    (a, b), (c, d) = table
    first = ["yes"] * (a + b) + ["no"] * (c + d)
    second = ["yes"] * a + ["no"] * b + ["yes"] * c + ["no"] * d
    assert cohen_kappa(first, second, categories=["yes", "no"]) == pytest.approx(expected, abs=5e-5)


def test_cohen_kappa_perfect_chance_and_undefined():
    assert cohen_kappa(list("rrss"), list("rrss")) == pytest.approx(1.0)
    assert cohen_kappa(list("rsrs"), list("rssr")) == pytest.approx(0.0)
    assert math.isnan(cohen_kappa(list("rrrr"), list("rrrr")))  # one category only: undefined
    with pytest.raises(ValueError):
        cohen_kappa(list("rr"), list("rrr"))


def test_fleiss_kappa_wikipedia_example():
    # Wikipedia "Fleiss' kappa" worked example: 10 items, 14 raters, 5 categories, kappa = 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=5e-5)


def test_fleiss_kappa_with_two_raters_is_scotts_pi():
    # Wikipedia's 20/5/10/15 table as per-item counts. Scott's pi pools both readers' marginals:
    # "yes" = (25 + 30) / 100, pe = 0.55^2 + 0.45^2 = 0.505, pi = (0.7 - 0.505) / (1 - 0.505)
    items = [[2, 0]] * 20 + [[1, 1]] * 15 + [[0, 2]] * 15
    assert fleiss_kappa(items) == pytest.approx((0.7 - 0.505) / (1 - 0.505))
    with pytest.raises(ValueError):
        fleiss_kappa([[2, 0], [1, 0]])


@pytest.mark.parametrize("reader, tp, fn, fp, tn, published", [
    # Kazuhiro et al., Table 1 (accuracy printed to two decimals)
    ("NR1", 56, 44, 45, 55, 0.55), ("NR2", 30, 70, 71, 29, 0.30), ("NNR1", 90, 10, 24, 76, 0.83),
    ("NNR2", 83, 17, 40, 60, 0.72), ("NNR3", 73, 27, 44, 56, 0.64),
])
def test_accuracy_reproduces_seed_004_table_1(reader, tp, fn, fp, tn, published):
    assert reader_accuracy(tp, fn, fp, tn) == pytest.approx(published, abs=0.0051)


@pytest.mark.parametrize("real_real, real_synt, synt_real, synt_synt, published", [
    # Han et al., Table 1: T1, T1c and FLAIR with DCGAN 128x128
    (26, 24, 6, 44, 70), (24, 26, 3, 47, 71), (12, 38, 8, 42, 54),
])
def test_two_by_two_accuracy_reproduces_seed_002_table_1(real_real, real_synt, synt_real, synt_synt, published):
    truth = ["real"] * (real_real + real_synt) + ["synthetic"] * (synt_real + synt_synt)
    answer = (["real"] * real_real + ["synthetic"] * real_synt + ["real"] * synt_real
              + ["synthetic"] * synt_synt)
    cells = two_by_two(truth, answer)
    assert (cells["real_rated_real"], cells["real_rated_synthetic"], cells["synthetic_rated_real"],
            cells["synthetic_rated_synthetic"]) == (real_real, real_synt, synt_real, synt_synt)
    tp_fn_fp_tn = confusion(truth, answer, "real")
    assert 100 * reader_accuracy(**{k.lower(): v for k, v in tp_fn_fp_tn.items()}) == pytest.approx(published)


def test_positive_class_swaps_roles_not_accuracy():
    truth = ["real"] * 3 + ["synthetic"] * 5
    answer = ["real", "real", "synthetic", "real", "synthetic", "synthetic", "synthetic", "real"]
    real_pos = confusion(truth, answer, "real")
    assert real_pos == {"TP": 2, "FN": 1, "FP": 2, "TN": 3}
    synthetic_pos = confusion(truth, answer, "synthetic")
    assert synthetic_pos == {"TP": 3, "FN": 2, "FP": 1, "TN": 2}
    assert reader_accuracy(*real_pos.values()) == reader_accuracy(*synthetic_pos.values()) == pytest.approx(5 / 8)


# ----- scoring of hand-made responses ----------------------------------------

def _key(tmp_path: Path, blocks: bool = False, groups: bool = False, model_b: str = "gan") -> Path:
    rows = []
    for i in range(4):
        rows.append((f"r{i}.png", "real", "real", ("vae" if i < 2 else model_b) if blocks else "",
                     ("T1" if i % 2 == 0 else "T2") if groups else "", i))
    for model in ("vae", model_b):
        for i in range(2):
            rows.append((f"{model[:3]}{i}.png", "synthetic", model, model if blocks else "",
                         ("T1" if i == 0 else "T2") if groups else "", i))
    frame = pd.DataFrame(rows, columns=["image", "truth", "source", "block", "group", "source_index"])
    frame.insert(1, "kit_id", KIT)
    path = tmp_path / "answer_key.tsv"
    frame.to_csv(path, sep="\t", index=False)
    return path


def _responses(folder: Path, reader: str, answers: dict[str, str], confidence: int | str = 3,
               name: str | None = None, **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"kit_id": KIT, "reader_id": reader, "order_index": i + 1, "image": image, "answer": answer,
             "confidence": confidence, "response_ms": 1000 * (i + 1), "timed_out": 0,
             "answered_at": "2026-01-01T00:00:00Z", **overrides} for i, (image, answer) in enumerate(answers.items())]
    path = folder / (name or f"reader-{reader}-{KIT}.csv")
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# Reader A: r0 wrong, vae0 fooled; reader B: r0, r1 wrong, gan1 fooled.
ANSWERS_A = {"r0.png": "synthetic", "r1.png": "real", "r2.png": "real", "r3.png": "real",
             "vae0.png": "real", "vae1.png": "synthetic", "gan0.png": "synthetic", "gan1.png": "synthetic"}
ANSWERS_B = {"r0.png": "synthetic", "r1.png": "synthetic", "r2.png": "real", "r3.png": "real",
             "vae0.png": "synthetic", "vae1.png": "synthetic", "gan0.png": "synthetic", "gan1.png": "real"}


def test_two_readers_seed_tables_and_cohen_kappa(tmp_path):
    key = load_answer_key(_key(tmp_path))
    files = [_responses(tmp_path / "resp", "A", ANSWERS_A), _responses(tmp_path / "resp", "B", ANSWERS_B)]
    scores = score_responses(key, load_responses(files, key))
    readers = {r["reader_id"]: r for r in scores["readers"]}
    assert {k: readers["A"][k] for k in ("TP", "FN", "FP", "TN")} == {"TP": 3, "FN": 1, "FP": 1, "TN": 3}
    assert {k: readers["B"][k] for k in ("TP", "FN", "FP", "TN")} == {"TP": 2, "FN": 2, "FP": 1, "TN": 3}
    assert readers["A"]["accuracy"] == pytest.approx(6 / 8)
    assert readers["B"]["accuracy"] == pytest.approx(5 / 8)
    sources = {(r["reader_id"], r["source"]): r["pct_rated_real"] for r in scores["sources"]}
    assert sources == {("A", "real"): 75.0, ("A", "gan"): 0.0, ("A", "vae"): 50.0,
                       ("B", "real"): 50.0, ("B", "gan"): 50.0, ("B", "vae"): 0.0}
    # Han et al. layout without blocks: each model against all four real images
    models = {(r["reader_id"], r["model"]): r for r in scores["models_table"]}
    assert (models[("B", "gan")]["real_rated_real"], models[("B", "gan")]["real_rated_synthetic"],
            models[("B", "gan")]["synthetic_rated_real"], models[("B", "gan")]["synthetic_rated_synthetic"]) == (2, 2, 1, 1)
    assert models[("B", "gan")]["accuracy"] == pytest.approx(3 / 6)
    # agreement on 8 images: both real r2 r3; both synthetic r0 vae1 gan0; A real/B synthetic r1 vae0;
    # A synthetic/B real gan1 -> po = 5/8, pe = (4/8)(3/8) + (4/8)(5/8) = 0.5, kappa = 0.25
    agreement = scores["agreement"]
    assert agreement["method"] == "cohen"
    assert agreement["n_images"] == 8
    assert agreement["kappa"] == pytest.approx(0.25)
    assert agreement["percent_agreement"] == pytest.approx(62.5)
    timing = {(r["reader_id"], r["truth"]): r for r in scores["timing"]}
    assert timing[("A", "real")]["mean_response_ms"] == pytest.approx(2500.0)
    assert timing[("A", "synthetic")]["mean_confidence"] == pytest.approx(3.0)


def test_positive_synthetic_option(tmp_path):
    key = load_answer_key(_key(tmp_path))
    responses = load_responses([_responses(tmp_path / "resp", "A", ANSWERS_A)], key)
    row = score_responses(key, responses, positive_class="synthetic")["readers"][0]
    assert {k: row[k] for k in ("TP", "FN", "FP", "TN")} == {"TP": 3, "FN": 1, "FP": 1, "TN": 3}
    assert row["real_rated_synthetic"] == 1
    assert row["synthetic_rated_real"] == 1
    with pytest.raises(InputError, match="positive_class"):
        score_responses(key, responses, positive_class="fake")


def test_blocks_and_groups_give_per_model_and_per_sequence_tables(tmp_path):
    key = load_answer_key(_key(tmp_path, blocks=True, groups=True))
    responses = load_responses([_responses(tmp_path / "resp", "A", ANSWERS_A)], key)
    rows = {(r["model"], r["group"]): r for r in score_responses(key, responses)["models_table"]}
    # vae block: real r0 (T1, wrong), r1 (T2, right); vae0 (T1, fooled), vae1 (T2, right)
    assert rows[("vae", "")]["n"] == 4
    assert rows[("vae", "")]["accuracy"] == pytest.approx(0.5)
    assert rows[("vae", "T1")]["real_rated_synthetic"] == 1
    assert rows[("vae", "T1")]["synthetic_rated_real"] == 1
    assert rows[("vae", "T2")]["accuracy"] == pytest.approx(1.0)
    assert rows[("gan", "")]["real_rated_real"] == 2
    assert rows[("gan", "")]["synthetic_rated_synthetic"] == 2


def test_three_readers_use_fleiss_kappa_and_pairwise_cohen(tmp_path):
    key = load_answer_key(_key(tmp_path))
    folder = tmp_path / "resp"
    answers_c = dict(ANSWERS_A, **{"gan1.png": "real"})
    files = [_responses(folder, r, a) for r, a in (("A", ANSWERS_A), ("B", ANSWERS_B), ("C", answers_c))]
    agreement = score_responses(key, load_responses(files, key))["agreement"]
    counts = []
    for image in key["image"]:
        said = [ANSWERS_A[image], ANSWERS_B[image], answers_c[image]]
        counts.append([said.count("real"), said.count("synthetic")])
    assert agreement["method"] == "fleiss"
    assert agreement["kappa"] == pytest.approx(fleiss_kappa(counts))
    assert [(p["reader_a"], p["reader_b"]) for p in agreement["pairwise"]] == [("A", "B"), ("A", "C"), ("B", "C")]
    assert agreement["pairwise"][0]["kappa"] == pytest.approx(0.25)


def test_partial_reader_is_scored_on_answered_images_and_agreement_on_common_ones(tmp_path):
    key = load_answer_key(_key(tmp_path))
    partial = dict(list(ANSWERS_B.items())[:5])
    files = [_responses(tmp_path / "r", "A", ANSWERS_A), _responses(tmp_path / "r", "B", partial)]
    scores = score_responses(key, load_responses(files, key))
    b = [r for r in scores["readers"] if r["reader_id"] == "B"][0]
    assert b["n_answered"] == 5
    assert b["complete"] is False
    assert scores["agreement"]["n_images"] == 5


# ----- response files: discovery and errors ---------------------------------

def test_response_files_lists_csv_only(tmp_path):
    assert response_files(tmp_path / "missing") == []
    (tmp_path / "b.CSV").write_text("x")
    (tmp_path / "a.csv").write_text("x")
    (tmp_path / ".hidden.csv").write_text("x")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in response_files(tmp_path)] == ["a.csv", "b.CSV"]


@pytest.mark.parametrize("make, message", [
    (lambda f: f.write_text(""), "empty file"),
    (lambda f: f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00garbage\xff\xfe"), "cannot read|not a reader response"),
    (lambda f: f.write_text("a,b\n1,2\n"), "column"),
    (lambda f: f.write_text("kit_id,reader_id,order_index,image,answer,confidence,response_ms,timed_out\n"),
     "no answers"),
])
def test_garbled_response_file_is_named(tmp_path, make, message):
    key = load_answer_key(_key(tmp_path))
    bad = tmp_path / "resp" / "reader-X.csv"
    bad.parent.mkdir()
    make(bad)
    with pytest.raises(InputError, match=message) as error:
        load_responses([bad], key)
    assert str(bad) in str(error.value)


@pytest.mark.parametrize("change, message", [
    ({"kit_id": "ffffffffffff"}, "kit"),
    ({"answer": "fake"}, "real' or 'synthetic"),
    ({"confidence": 7}, "confidence"),
    ({"response_ms": "soon"}, "response_ms"),
    ({"timed_out": 2}, "timed_out"),
    ({"reader_id": "a b"}, "reader ID"),
])
def test_invalid_values_are_named(tmp_path, change, message):
    key = load_answer_key(_key(tmp_path))
    path = _responses(tmp_path / "resp", "A", ANSWERS_A, **change)
    with pytest.raises(InputError, match=message) as error:
        load_responses([path], key)
    assert str(path) in str(error.value)


def test_unknown_and_repeated_images_and_duplicate_readers(tmp_path):
    key = load_answer_key(_key(tmp_path))
    unknown = _responses(tmp_path / "u", "A", {"nope.png": "real"})
    with pytest.raises(InputError, match="not in the answer key: nope.png"):
        load_responses([unknown], key)
    repeated = tmp_path / "repeat.csv"
    frame = pd.read_csv(_responses(tmp_path / "x", "A", ANSWERS_A))
    pd.concat([frame, frame.iloc[:1]]).to_csv(repeated, index=False)
    with pytest.raises(InputError, match="more than once"):
        load_responses([repeated], key)
    first = _responses(tmp_path / "d", "A", ANSWERS_A, name="first.csv")
    second = _responses(tmp_path / "d", "A", ANSWERS_A, name="second.csv")
    with pytest.raises(InputError, match="also answered in") as error:
        load_responses([first, second], key)
    assert "first.csv" in str(error.value)
    assert "second.csv" in str(error.value)


def test_broken_answer_key_is_named(tmp_path):
    path = tmp_path / "key.tsv"
    path.write_text("image\ttruth\nx.png\tmaybe\n")
    with pytest.raises(InputError, match="lacks column") as error:
        load_answer_key(path)
    assert str(path) in str(error.value)


# ----- the rule's job and the report fragment -------------------------------

class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables, self.scripts, self.values = [], 0, {}
        self._table = None
        self._cell_value = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
            self.tables.append(self._table)
            self.values[self._table] = []
        if tag == "script":
            self.scripts += 1
        if tag == "td" and "data-value" in attrs:
            self.values[self._table].append(float(attrs["data-value"]))


def _tables(tmp_path: Path) -> dict[str, Path]:
    return {name: tmp_path / "out" / "tables" / f"{name}.tsv"
            for name in ("readers", "sources", "models", "agreement", "timing")}


def test_job_with_no_responses_says_so(tmp_path):
    scores_json = tmp_path / "out" / "scores.json"
    scores = reader_scores_job(_key(tmp_path), [], scores_json=scores_json, tables=_tables(tmp_path))
    assert scores["status"] == "no responses"
    assert json.loads(scores_json.read_text())["status"] == "no responses"
    for path in _tables(tmp_path).values():
        assert path.exists()
        assert pd.read_csv(path, sep="\t").empty
    text = render_reader_results_html(scores_json.parent)
    assert "no reader responses yet" in text
    assert "<table" not in text


def test_job_writes_tables_and_escaped_html(tmp_path):
    key_path = _key(tmp_path, model_b=EVIL)
    answers_b = {k.replace("gan", EVIL[:3]): v for k, v in ANSWERS_B.items()}
    answers_a = {k.replace("gan", EVIL[:3]): v for k, v in ANSWERS_A.items()}
    files = [_responses(tmp_path / "resp", "A", answers_a), _responses(tmp_path / "resp", "B", answers_b)]
    scores_json = tmp_path / "out" / "scores.json"
    tables = _tables(tmp_path)
    reader_scores_job(key_path, files, scores_json=scores_json, tables=tables)
    readers = pd.read_csv(tables["readers"], sep="\t")
    assert list(readers["reader_id"]) == ["A", "B"]
    assert list(readers["TP"]) == [3, 2]
    agreement = pd.read_csv(tables["agreement"], sep="\t")
    assert agreement.loc[0, "method"] == "cohen"
    assert agreement.loc[0, "kappa"] == pytest.approx(0.25)
    stored = json.loads(scores_json.read_text())
    assert stored["agreement"]["kappa"] == pytest.approx(0.25)
    text = render_reader_results_html([tables["readers"], scores_json])
    assert EVIL not in text
    assert "&lt;b&gt;gan&amp;&quot;x&quot;&lt;/b&gt;" in text
    assert "no reader responses yet" not in text
    parser = _Tables()
    parser.feed(text)
    assert parser.scripts == 0
    assert parser.tables == ["reader-confusion", "reader-sources", "reader-models", "reader-agreement", "reader-timing"]
    assert parser.values["reader-agreement"][1] == pytest.approx(0.25)
    assert parser.values["reader-confusion"][:6] == [8.0, 3.0, 1.0, 1.0, 3.0, 0.75]


def test_render_rejects_missing_scores(tmp_path):
    with pytest.raises(InputError, match="scores.json"):
        render_reader_results_html([tmp_path / "readers.tsv"])
    with pytest.raises(InputError, match="cannot read"):
        render_reader_results_html(tmp_path)
