"""Do a conditional model's samples carry the class they were generated for?

A classifier trained on the real TRAIN slices, with the model's ``condition_on``
column as target, predicts the class of each sample of a conditional model. Its
accuracy per requested class is compared with chance (1 / number of classes) and
with the classifier's own accuracy on the real TEST slices, the ceiling a
perfectly conditioned generator could reach.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import write_json
from pipeline_lib.core.settings import ConditioningSettings, read_settings
from pipeline_lib.core.slices import take_images
from pipeline_lib.evaluation.domain_features import (ClassifierSettings, class_names, encode_labels, fit_slice_cnn, predict)

log = logging.getLogger(__name__)


def classifier_accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``images`` whose predicted class equals ``labels`` (−1 entries are left out)."""
    labels = np.asarray(labels)
    known = labels >= 0
    if not known.any():
        return float("nan")
    pred = predict(model, take_images(images, np.flatnonzero(known)))["label"]
    return float(np.mean(pred == labels[known]))


def conditioning_accuracy(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray,
                          samples: np.ndarray, sample_labels: np.ndarray, names: list[str], *,
                          settings: ClassifierSettings = ClassifierSettings(), seed: int = 0) -> dict[str, Any]:
    """Accuracy of a real-trained classifier on samples labelled with the class they were generated for.

    Labels are class indices into ``names``. Returns overall and per-class
    accuracy, chance (1 / number of classes) and the ceiling (accuracy on the
    real test slices).
    """
    if len(names) < 2:
        raise InputError(f"conditioning accuracy needs at least 2 classes, got {names}")
    if len(samples) != len(sample_labels):
        raise InputError(f"{len(samples)} samples but {len(sample_labels)} sample labels")
    model = fit_slice_cnn(train, labels=train_labels, n_classes=len(names), settings=settings, seed=seed)
    pred = predict(model, samples)["label"] if len(samples) else np.zeros(0, dtype=np.int64)
    per_class = []
    for index, name in enumerate(names):
        mask = sample_labels == index
        per_class.append({"class": name, "n_samples": int(mask.sum()),
                          "accuracy": float(np.mean(pred[mask] == index)) if mask.any() else None})
    test_known = int(np.sum(np.asarray(test_labels) >= 0))
    return {
        "conditional": True,
        "accuracy": float(np.mean(pred == sample_labels)) if len(samples) else None,
        "chance": 1.0 / len(names),
        "real_test_accuracy": classifier_accuracy(model, test, test_labels) if test_known else None,
        "per_class": per_class,
        "n_samples": int(len(samples)),
        "n_train": int(len(train)),
        "n_test": test_known,
        "classes": list(names),
    }


def read_sample_labels(path: Path, n_samples: int) -> pd.Series:
    """The ``label`` column of a samples' labels.tsv, checked against the number of samples."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the labels table ({exc})") from exc
    if "label" not in frame.columns:
        raise InputError(f"{path}: no 'label' column")
    if len(frame) != n_samples:
        raise InputError(f"{path}: {len(frame)} rows but the model has {n_samples} samples")
    return frame["label"]


def conditioning_job(samples: Path, labels: Path, images: Path, table: Path, out: Path, *,
                     condition_on: str | None, settings: Mapping[str, Any], threads: int | None = None) -> dict:
    """The ``conditioning_accuracy`` rule; an unconditional model gets ``{"conditional": false}``."""
    cfg = read_settings(ConditioningSettings, settings)
    if not condition_on:
        result = {"conditional": False, "note": "not conditional: the model takes no class label"}
        write_json(out, result)
        return result
    from pipeline_lib.core.slices import open_split
    from pipeline_lib.core.slices import channel_count, grey_images, grey_rows, load_checked_images
    from pipeline_lib.core.runtime import configure_threads

    configure_threads(threads)
    # the slices stay on disk: the classifier reads its batches, prediction reads blocks
    train, train_rows = open_split(images, table, "train", grey=True)
    test, test_rows = open_split(images, table, "test", grey=True)
    if condition_on not in train_rows.columns:
        raise InputError(f"{table}: no column '{condition_on}' (the model's condition_on)")
    names = class_names(train_rows[condition_on])
    synth = np.asarray(load_checked_images(samples), dtype=np.float32)
    # a stacked model's samples are pooled per channel, each channel with its sample's label
    sample_names = grey_rows(read_sample_labels(labels, len(synth)), channel_count(synth))
    synth = grey_images(synth)
    sample_labels = encode_labels(sample_names, names)
    unknown = sorted(set(sample_names[sample_labels < 0]))
    if unknown:
        raise InputError(f"{labels}: label(s) {', '.join(map(repr, unknown))} are not classes of "
                         f"'{condition_on}' among the training slices ({', '.join(names)})")
    result = conditioning_accuracy(train, encode_labels(train_rows[condition_on], names), test,
                                   encode_labels(test_rows[condition_on], names), synth, sample_labels, names,
                                   settings=ClassifierSettings.of(cfg), seed=cfg.seed)
    result["label_column"] = condition_on
    result["settings"] = asdict(cfg)
    write_json(out, result)
    return result
