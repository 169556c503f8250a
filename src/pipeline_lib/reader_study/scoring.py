"""Scoring of a reader study: the papers' confusion tables, accuracy and inter-reader kappa.

Input: the kit's answer key (``answer_key.tsv``) and one CSV per reader as the
kit page exports it (columns ``kit_id, reader_id, order_index, image, answer,
confidence, response_ms, timed_out, answered_at``).

"Positive" is configurable. The default, ``real``, is what Ungría Hirte et al. and Kazuhiro et al.
used: in Ungría Hirte et al.'s Table 2 the real images' column holds TP/FN and the
models' columns FP/TN; in Kazuhiro et al.'s Table 1 FP is "created images rated
real" (45 % and 71 % for the two neuroradiologists in its text) and FN "real
images rated as generated". So TP = real rated real, FN = real rated
synthetic, FP = synthetic rated real, TN = synthetic rated synthetic. With
``positive_class: synthetic`` the roles swap (TP = synthetic rated synthetic);
accuracy and kappa do not change. Every table also spells the cells out
(``real_rated_real`` ...), so no reader of the output depends on the convention.

Tables:
- readers (Kazuhiro et al., Table 1): TP, FN, FP, TN and accuracy per reader, in counts and as
  rates (TP_rate ... in % of the true class, as the paper's table), with the balanced accuracy
  (TPR + TNR) / 2, which is the paper's accuracy: it applies (TP + TN) / (TP + FN + FP + TN) to
  the rates.
- sources (Ungría Hirte et al., Table 2): per reader and image source (real or a
  model), the share rated real and rated synthetic.
- models (Han et al., Table 1): per reader and model, and per label group (e.g.
  sequence) when the key has one, the 2x2 table of that model's synthetic
  images against the real images of its block (all real images when the kit
  has no blocks) and its accuracy.
- agreement: Cohen's kappa for two readers, Fleiss' kappa for three or more
  (plus Cohen's kappa of every pair), on the images every reader answered.
- timing: mean and median response time, mean confidence and time-outs per
  reader and true class.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import write_json, write_tsv
from pipeline_lib.reader_study.kit import KEY_COLUMNS, REAL, SYNTHETIC

log = logging.getLogger(__name__)

RESPONSE_COLUMNS = ["kit_id", "reader_id", "order_index", "image", "answer", "confidence",
                    "response_ms", "timed_out"]
NO_RESPONSES = "no responses"
_READER_ID = re.compile(r"^[A-Za-z0-9._-]{1,40}$")
TABLE_NAMES = ("readers", "sources", "models", "blocks", "agreement", "timing")


# ----- statistics -----------------------------------------------------------

def reader_accuracy(tp: int, fn: int, fp: int, tn: int) -> float:
    """(TP + TN) / (TP + FN + FP + TN), Kazuhiro et al.'s formula; NaN for an empty table."""
    total = tp + fn + fp + tn
    return (tp + tn) / total if total else math.nan


def rates(tp: float, fn: float, fp: float, tn: float) -> dict[str, float]:
    """The four cells as percentages of their true class, as Kazuhiro et al.'s Table 1 reports them:
    TP and FN of the positives (TP + FN = 100), FP and TN of the negatives (FP + TN = 100)."""
    pos, neg = tp + fn, fp + tn
    return {"TP_rate": 100.0 * tp / pos if pos else math.nan, "FN_rate": 100.0 * fn / pos if pos else math.nan,
            "FP_rate": 100.0 * fp / neg if neg else math.nan, "TN_rate": 100.0 * tn / neg if neg else math.nan}


def balanced_accuracy(tp: float, fn: float, fp: float, tn: float) -> float:
    """(TPR + TNR) / 2: the accuracy of the confusion table with each true class weighted equally.

    Kazuhiro et al. apply (TP + TN) / (TP + FN + FP + TN) to *rates* (each class sums to 100),
    which is exactly this; with counts of a kit that is not half synthetic (their 40-60 %) the
    plain accuracy would instead lean towards the larger class. NaN when a class is empty.
    """
    r = rates(tp, fn, fp, tn)
    return (r["TP_rate"] + r["TN_rate"]) / 200.0


def cohen_kappa_from_table(table: Sequence[Sequence[float]]) -> float:
    """Cohen's kappa of a square agreement table (rows: reader A's category, columns: B's).

    NaN when chance agreement is 1 (both readers used one and the same category
    throughout), where kappa is undefined.
    """
    counts = np.asarray(table, dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"an agreement table must be square, got shape {counts.shape}")
    total = counts.sum()
    if total == 0:
        return math.nan
    observed = np.trace(counts) / total
    expected = float((counts.sum(axis=1) / total) @ (counts.sum(axis=0) / total))
    return math.nan if math.isclose(expected, 1.0) else (observed - expected) / (1.0 - expected)


def cohen_kappa(ratings_a: Sequence, ratings_b: Sequence, categories: Sequence | None = None) -> float:
    """Cohen's kappa of two readers' ratings of the same items (in the same order)."""
    if len(ratings_a) != len(ratings_b):
        raise ValueError(f"two readers must rate the same items ({len(ratings_a)} vs {len(ratings_b)})")
    cats = list(categories) if categories is not None else sorted(set(ratings_a) | set(ratings_b))
    index = {c: i for i, c in enumerate(cats)}
    table = np.zeros((len(cats), len(cats)))
    for a, b in zip(ratings_a, ratings_b):
        table[index[a], index[b]] += 1
    return cohen_kappa_from_table(table)


def fleiss_kappa(counts: Sequence[Sequence[float]]) -> float:
    """Fleiss' kappa (1971) from an items x categories table of how many raters chose each.

    Every item must have the same number of ratings (at least two). NaN when
    chance agreement is 1.
    """
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError(f"expected an items x categories table, got shape {table.shape}")
    raters = table.sum(axis=1)
    if not np.allclose(raters, raters[0]) or raters[0] < 2:
        raise ValueError("every item needs the same number (>= 2) of ratings for Fleiss' kappa")
    n = raters[0]
    per_item = ((table * (table - 1)).sum(axis=1)) / (n * (n - 1))
    observed = per_item.mean()
    shares = table.sum(axis=0) / table.sum()
    expected = float((shares ** 2).sum())
    return math.nan if math.isclose(expected, 1.0) else (observed - expected) / (1.0 - expected)


def confusion(truth: Iterable[str], answer: Iterable[str], positive: str = REAL) -> dict[str, int]:
    """TP, FN, FP, TN with ``positive`` ('real' or 'synthetic') as the positive class."""
    if positive not in (REAL, SYNTHETIC):
        raise ValueError(f"positive must be 'real' or 'synthetic', not {positive!r}")
    truth, answer = np.asarray(list(truth)), np.asarray(list(answer))
    is_pos, said_pos = truth == positive, answer == positive
    return {"TP": int((is_pos & said_pos).sum()), "FN": int((is_pos & ~said_pos).sum()),
            "FP": int((~is_pos & said_pos).sum()), "TN": int((~is_pos & ~said_pos).sum())}


def two_by_two(truth: Iterable[str], answer: Iterable[str]) -> dict[str, int]:
    """Seed 002's cells: real/synthetic images rated real/synthetic."""
    truth, answer = np.asarray(list(truth)), np.asarray(list(answer))
    return {f"{t}_rated_{a}": int(((truth == t) & (answer == a)).sum())
            for t in (REAL, SYNTHETIC) for a in (REAL, SYNTHETIC)}


# ----- inputs ---------------------------------------------------------------

def load_answer_key(path: Path) -> pd.DataFrame:
    """The answer key written by the kit rule, checked."""
    path = Path(path)
    try:
        key = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the answer key ({error})") from None
    missing = [c for c in KEY_COLUMNS if c not in key.columns]
    if missing:
        raise InputError(f"{path}: answer key lacks column(s) {', '.join(missing)}")
    if key.empty:
        raise InputError(f"{path}: the answer key lists no images")
    bad = sorted(set(key["truth"]) - {REAL, SYNTHETIC})
    if bad:
        raise InputError(f"{path}: truth must be 'real' or 'synthetic', found {bad}")
    if key["image"].duplicated().any():
        raise InputError(f"{path}: image names repeat in the answer key")
    if key["kit_id"].nunique() != 1:
        raise InputError(f"{path}: the answer key mixes kits {sorted(set(key['kit_id']))}")
    return key


def response_files(folder: Path | str) -> list[Path]:
    """Reader response files (``*.csv``, any case; hidden files ignored) in ``folder``, sorted.

    A missing folder holds no responses.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() == ".csv" and not p.name.startswith("."))


def load_responses(files: Iterable[Path | str], key: pd.DataFrame) -> pd.DataFrame:
    """All readers' answers in one frame (one file per reader), checked against ``key``."""
    frames, owner = [], {}
    for path in map(Path, files):
        frame = _read_response_file(path, key)
        reader = frame["reader_id"].iloc[0]
        if reader in owner:
            raise InputError(f"{path}: reader {reader!r} also answered in {owner[reader]}; keep only one file "
                             f"per reader (the most complete download)")
        owner[reader] = path
        frames.append(frame.assign(file=path.name))
    if not frames:
        return pd.DataFrame(columns=RESPONSE_COLUMNS + ["file"])
    return pd.concat(frames, ignore_index=True)


def _read_response_file(path: Path, key: pd.DataFrame) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: empty file, not a reader response file") from None
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read as a reader response CSV ({error})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in RESPONSE_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: not a reader response file from the kit page: column(s) "
                         f"{', '.join(missing)} missing")
    if frame.empty:
        raise InputError(f"{path}: holds no answers")
    frame = frame[RESPONSE_COLUMNS].apply(lambda col: col.str.strip())
    readers = sorted(set(frame["reader_id"]))
    if len(readers) != 1 or not _READER_ID.match(readers[0]):
        raise InputError(f"{path}: expected one reader ID (letters, digits, '-', '_', '.'), found {readers}")
    kit_id = key["kit_id"].iloc[0]
    kits = sorted(set(frame["kit_id"]))
    if kits != [kit_id]:
        raise InputError(f"{path}: answers are for kit {', '.join(kits)} but the answer key is for kit {kit_id}")
    unknown = sorted(set(frame["image"]) - set(key["image"]))
    if unknown:
        raise InputError(f"{path}: image(s) not in the answer key: {', '.join(unknown[:5])}"
                         f"{' …' if len(unknown) > 5 else ''}")
    duplicated = sorted(set(frame.loc[frame["image"].duplicated(), "image"]))
    if duplicated:
        raise InputError(f"{path}: image(s) answered more than once: {', '.join(duplicated[:5])}")
    bad = sorted(set(frame["answer"]) - {REAL, SYNTHETIC})
    if bad:
        raise InputError(f"{path}: answers must be 'real' or 'synthetic', found {bad}")
    out = frame.copy()
    out["order_index"] = _integers(path, frame["order_index"], "order_index", minimum=1)
    out["response_ms"] = _integers(path, frame["response_ms"], "response_ms", minimum=0)
    out["timed_out"] = _integers(path, frame["timed_out"], "timed_out", minimum=0, maximum=1)
    given = frame["confidence"] != ""
    out["confidence"] = np.nan
    out.loc[given, "confidence"] = _integers(path, frame.loc[given, "confidence"], "confidence", 1, 5)
    return out


def _integers(path: Path, values: pd.Series, column: str, minimum: int, maximum: int | None = None) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | (numbers != numbers.round()) | (numbers < minimum)
    if maximum is not None:
        bad |= numbers > maximum
    if bad.any():
        first = values[bad].iloc[0]
        allowed = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise InputError(f"{path}: column {column} must hold whole numbers {allowed}; found {first!r} "
                         f"(row {int(np.flatnonzero(bad.to_numpy())[0]) + 2})")
    return numbers.astype(int)


# ----- scoring --------------------------------------------------------------

def score_responses(key: pd.DataFrame, responses: pd.DataFrame, positive_class: str = REAL) -> dict:
    """Every table of the reader study as one JSON-ready dict (see the module docstring)."""
    if positive_class not in (REAL, SYNTHETIC):
        raise InputError(f"reader_study.positive_class must be 'real' or 'synthetic', not {positive_class!r}")
    base = {
        "kit_id": key["kit_id"].iloc[0],
        "n_images": int(len(key)),
        "positive_class": positive_class,
        "definitions": _definitions(positive_class),
        "models": sorted(set(key.loc[key["truth"] == SYNTHETIC, "source"])),
    }
    if responses.empty:
        return {**base, "status": NO_RESPONSES, "readers": [], "sources": [], "models_table": [], "blocks_table": [],
                "agreement": _agreement(pd.DataFrame()), "timing": [], "files": []}
    merged = responses.merge(key[["image", "truth", "source", "block", "group"]], on="image", how="left")
    readers = sorted(set(merged["reader_id"]))
    per_reader = "reader_id" in key.columns and (key["reader_id"] != "").any()
    if per_reader:
        _check_own_images(key, responses)
    wide = merged.pivot(index="image", columns="reader_id", values="answer")
    return {
        **base,
        "status": "ok",
        "per_reader_kits": bool(per_reader),
        "files": sorted(set(merged["file"])),
        "readers": [_reader_row(merged[merged["reader_id"] == r],
                                int((key["reader_id"] == r).sum()) if per_reader else len(key), positive_class)
                    for r in readers],
        "sources": _source_rows(merged, readers, base["models"]),
        "models_table": _model_rows(merged, key, readers, base["models"]),
        "blocks_table": _block_rows(merged, readers),
        "agreement": _agreement(wide[readers]),
        "timing": _timing_rows(merged, readers),
    }


def _check_own_images(key: pd.DataFrame, responses: pd.DataFrame) -> None:
    """With per-reader kits a reader answers only the images of their own set."""
    owner = dict(zip(key["image"], key["reader_id"]))
    wrong = responses[[owner.get(i, "") not in ("", r) for i, r in zip(responses["image"], responses["reader_id"])]]
    if len(wrong):
        row = wrong.iloc[0]
        raise InputError(f"{row.get('file', 'responses')}: reader {row['reader_id']!r} answered image {row['image']} "
                         f"of reader {owner[row['image']]!r}'s set; each reader ID reads its own images")


def _cells_rates(cells: Mapping[str, int]) -> dict[str, float]:
    """The 2x2 of real/synthetic ratings as rates (positive = real) and the balanced accuracy."""
    tp, fn = cells["real_rated_real"], cells["real_rated_synthetic"]
    fp, tn = cells["synthetic_rated_real"], cells["synthetic_rated_synthetic"]
    return {**rates(tp, fn, fp, tn), "balanced_accuracy": balanced_accuracy(tp, fn, fp, tn)}


def _block_rows(merged: pd.DataFrame, readers: list[str]) -> list[dict]:
    """Per reader and block (Han et al.'s per-GAN-and-sequence tables): counts, rates, accuracy and
    balanced accuracy; ``models`` lists the block's synthetic sources. None without blocks."""
    blocks = [b for b in dict.fromkeys(merged["block"]) if b]
    rows = []
    for reader, block in itertools.product(readers, blocks):
        part = merged[(merged["reader_id"] == reader) & (merged["block"] == block)]
        if part.empty:
            continue
        cells = two_by_two(part["truth"], part["answer"])
        correct = cells["real_rated_real"] + cells["synthetic_rated_synthetic"]
        models = sorted(set(part.loc[part["truth"] == SYNTHETIC, "source"]))
        rows.append({"reader_id": reader, "block": block, "models": ",".join(models), "n": int(len(part)), **cells,
                     "accuracy": correct / len(part), **_cells_rates(cells)})
    return rows


def _definitions(positive: str) -> dict[str, str]:
    negative = SYNTHETIC if positive == REAL else REAL
    return {
        "positive": positive,
        "TP": f"{positive} image rated {positive}",
        "FN": f"{positive} image rated {negative}",
        "FP": f"{negative} image rated {positive}",
        "TN": f"{negative} image rated {negative}",
        "accuracy": "(TP + TN) / (TP + FN + FP + TN), on counts",
        "rates": "TP_rate, FN_rate: % of the positive images; FP_rate, TN_rate: % of the negative images",
        "balanced_accuracy": "(TP_rate + TN_rate) / 200: Kazuhiro et al.'s accuracy, computed on rates",
    }


def _reader_row(rows: pd.DataFrame, n_images: int, positive: str) -> dict:
    cells = confusion(rows["truth"], rows["answer"], positive)
    return {
        "reader_id": rows["reader_id"].iloc[0],
        "file": rows["file"].iloc[0],
        "n_answered": int(len(rows)),
        "n_images": n_images,
        "complete": bool(len(rows) == n_images),
        **cells,
        "accuracy": reader_accuracy(cells["TP"], cells["FN"], cells["FP"], cells["TN"]),
        **rates(cells["TP"], cells["FN"], cells["FP"], cells["TN"]),
        "balanced_accuracy": balanced_accuracy(cells["TP"], cells["FN"], cells["FP"], cells["TN"]),
        **two_by_two(rows["truth"], rows["answer"]),
    }


def _source_rows(merged: pd.DataFrame, readers: list[str], models: list[str]) -> list[dict]:
    rows = []
    for reader, source in itertools.product(readers, [REAL] + models):
        part = merged[(merged["reader_id"] == reader) & (merged["source"] == source)]
        n = len(part)
        rated_real = int((part["answer"] == REAL).sum())
        rows.append({"reader_id": reader, "source": source, "truth": REAL if source == REAL else SYNTHETIC,
                     "n": n, "rated_real": rated_real, "rated_synthetic": n - rated_real,
                     "pct_rated_real": 100.0 * rated_real / n if n else math.nan,
                     "pct_rated_synthetic": 100.0 * (n - rated_real) / n if n else math.nan})
    return rows


def _model_rows(merged: pd.DataFrame, key: pd.DataFrame, readers: list[str], models: list[str]) -> list[dict]:
    blocked = (key["block"] != "").any()
    groups = sorted(set(key["group"]) - {""})
    rows = []
    for reader, model in itertools.product(readers, models):
        mine = merged[merged["reader_id"] == reader]
        real = mine[mine["truth"] == REAL]
        if blocked:  # the real images of the model's own blocks
            real = real[real["block"].isin(set(key.loc[key["source"] == model, "block"]))]
        fake = mine[mine["source"] == model]
        for group in [""] + groups:
            part = pd.concat([real, fake]) if group == "" else pd.concat(
                [real[real["group"] == group], fake[fake["group"] == group]])
            if group and part.empty:
                continue
            cells = two_by_two(part["truth"], part["answer"])
            correct = cells["real_rated_real"] + cells["synthetic_rated_synthetic"]
            rows.append({"reader_id": reader, "model": model, "group": group, "n": int(len(part)), **cells,
                         "accuracy": correct / len(part) if len(part) else math.nan, **_cells_rates(cells)})
    return rows


def _agreement(wide: pd.DataFrame) -> dict:
    """Kappa over the images every reader answered: Cohen (2 readers) or Fleiss (3+)."""
    readers = list(wide.columns)
    if len(readers) < 2:
        return {"method": None, "readers": readers, "n_images": 0, "kappa": None, "percent_agreement": None,
                "pairwise": [], "note": "inter-reader agreement needs at least two readers"}
    common = wide.dropna()
    pairwise = [_pair(common, a, b) for a, b in itertools.combinations(readers, 2)]
    if len(readers) == 2:
        method, kappa = "cohen", pairwise[0]["kappa"]
    else:
        counts = np.stack([(common == c).sum(axis=1).to_numpy() for c in (REAL, SYNTHETIC)], axis=1)
        method, kappa = "fleiss", _none_if_nan(fleiss_kappa(counts)) if len(common) else None
    unanimous = float((common.nunique(axis=1) == 1).mean()) if len(common) else None
    note = "" if kappa is not None else (
        "no image was answered by every reader" if not len(common) else
        "kappa is undefined: chance agreement is 1 (every answer the same)")
    return {"method": method, "readers": readers, "n_images": int(len(common)), "kappa": kappa,
            "percent_agreement": None if unanimous is None else 100.0 * unanimous,
            "pairwise": pairwise, "note": note}


def _pair(common: pd.DataFrame, a: str, b: str) -> dict:
    if common.empty:
        return {"reader_a": a, "reader_b": b, "n_images": 0, "kappa": None, "percent_agreement": None}
    kappa = cohen_kappa(common[a].tolist(), common[b].tolist(), categories=[REAL, SYNTHETIC])
    return {"reader_a": a, "reader_b": b, "n_images": int(len(common)), "kappa": _none_if_nan(kappa),
            "percent_agreement": 100.0 * float((common[a] == common[b]).mean())}


def _timing_rows(merged: pd.DataFrame, readers: list[str]) -> list[dict]:
    rows = []
    for reader, truth in itertools.product(readers, (REAL, SYNTHETIC)):
        part = merged[(merged["reader_id"] == reader) & (merged["truth"] == truth)]
        confidence = part["confidence"].dropna().astype(float)
        rows.append({
            "reader_id": reader, "truth": truth, "n": int(len(part)),
            "mean_response_ms": float(part["response_ms"].mean()) if len(part) else math.nan,
            "median_response_ms": float(part["response_ms"].median()) if len(part) else math.nan,
            "mean_confidence": float(confidence.mean()) if len(confidence) else math.nan,
            "n_confidence": int(len(confidence)),
            "n_timed_out": int(part["timed_out"].sum()) if len(part) else 0,
        })
    return rows


def _none_if_nan(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


# ----- outputs --------------------------------------------------------------

def write_scores(scores: Mapping, scores_json: Path, tables: Mapping[str, Path]) -> None:
    """scores.json (NaN written as null) and one TSV per table (header only when empty)."""
    write_json(scores_json, _json_safe(scores))
    columns = {
        "readers": ["reader_id", "file", "n_answered", "n_images", "complete", "TP", "FN", "FP", "TN", "accuracy",
                    "real_rated_real", "real_rated_synthetic", "synthetic_rated_real", "synthetic_rated_synthetic",
                    "TP_rate", "FN_rate", "FP_rate", "TN_rate", "balanced_accuracy"],
        "sources": ["reader_id", "source", "truth", "n", "rated_real", "rated_synthetic", "pct_rated_real",
                    "pct_rated_synthetic"],
        "models": ["reader_id", "model", "group", "n", "real_rated_real", "real_rated_synthetic",
                   "synthetic_rated_real", "synthetic_rated_synthetic", "accuracy", "TP_rate", "FN_rate", "FP_rate",
                   "TN_rate", "balanced_accuracy"],
        "blocks": ["reader_id", "block", "models", "n", "real_rated_real", "real_rated_synthetic",
                   "synthetic_rated_real", "synthetic_rated_synthetic", "accuracy", "TP_rate", "FN_rate", "FP_rate",
                   "TN_rate", "balanced_accuracy"],
        "agreement": ["method", "reader_a", "reader_b", "n_images", "kappa", "percent_agreement"],
        "timing": ["reader_id", "truth", "n", "mean_response_ms", "median_response_ms", "mean_confidence",
                   "n_confidence", "n_timed_out"],
    }
    rows = {"readers": scores["readers"], "sources": scores["sources"], "models": scores["models_table"],
            "blocks": scores.get("blocks_table", []),
            "agreement": _agreement_rows(scores["agreement"]), "timing": scores["timing"]}
    for name, path in tables.items():
        write_tsv(path, pd.DataFrame(rows[name], columns=columns[name]))


def _agreement_rows(agreement: Mapping) -> list[dict]:
    if agreement["method"] is None:
        return []
    overall = {"method": agreement["method"], "reader_a": "all" if agreement["method"] == "fleiss" else
               agreement["readers"][0], "reader_b": "" if agreement["method"] == "fleiss" else agreement["readers"][1],
               "n_images": agreement["n_images"], "kappa": agreement["kappa"],
               "percent_agreement": agreement["percent_agreement"]}
    pairs = [{"method": "cohen", **pair} for pair in agreement["pairwise"]] if agreement["method"] == "fleiss" else []
    return [overall] + pairs


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def reader_scores_job(answer_key: Path, responses: Iterable[Path | str], *, scores_json: Path,
                      tables: Mapping[str, Path], positive_class: str = REAL) -> dict:
    """The reader_scores rule: load, check, score and write everything; returns the scores."""
    key = load_answer_key(Path(answer_key))
    answers = load_responses(sorted(map(Path, responses)), key)
    scores = _json_safe(score_responses(key, answers, positive_class))
    write_scores(scores, Path(scores_json), {name: Path(p) for name, p in tables.items()})
    if scores["status"] == NO_RESPONSES:
        log.info("reader study: no reader responses yet")
    else:
        log.info("reader study: scored %d reader(s)", len(scores["readers"]))
    return scores
