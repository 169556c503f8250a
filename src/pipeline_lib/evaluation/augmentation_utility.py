"""Do the samples carry the right label, and do they help a downstream classifier?

Conditioning accuracy
    A classifier trained on the real TRAIN slices, with the model's
    ``condition_on`` column as target, predicts the class of each sample of a
    conditional model. Its accuracy per requested class is compared with chance
    (1 / number of classes) and with the classifier's own accuracy on the real
    TEST slices, the ceiling a perfectly conditioned generator could reach.

Augmentation utility
    The same small classifier is trained on real TRAIN slices only, on
    synthetic samples only, and on both together, and evaluated on the real
    TEST slices, for several seeds (mean ± std). The task must have labels for
    the synthetic images:

    * conditional models: the ``condition_on`` label, and the synthetic labels
      are the classes the samples were generated for;
    * unconditional models have no labels, so the task is the slice position
      in ``position_bins`` equal-width bins of the kept slice range, and the
      synthetic labels are the bins of the slice position that the domain
      network's position head predicts for each sample (the domain network is
      trained on real training slices only). Its held-out error bounds how
      good these pseudo-labels are; it is recorded in the output.

All classifiers see the same number of optimisation steps whatever the
training set, so the comparison is compute-matched.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from pipeline_lib.evaluation.domain_features import (ClassifierSettings, class_names, encode_labels, fit_slice_cnn, position_bins,
                              predict, settings_from_config, slice_positions)
from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConditioningSettings:
    """``evaluation.conditioning`` of the configuration."""

    seed: int = 0
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    width: int = 16

    @property
    def classifier(self) -> ClassifierSettings:
        return ClassifierSettings(self.steps, self.batch_size, self.lr, self.width)


@dataclass(frozen=True)
class UtilitySettings:
    """``evaluation.utility`` of the configuration."""

    seeds: int = 3
    seed: int = 0
    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    width: int = 16
    position_bins: int = 3
    n_synthetic: int | None = None

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise InputError(f"seeds must be at least 1, got {self.seeds}")
        if self.position_bins < 2:
            raise InputError(f"position_bins must be at least 2, got {self.position_bins}")
        if self.n_synthetic is not None and self.n_synthetic < 1:
            raise InputError(f"n_synthetic must be ≥ 1 or null, got {self.n_synthetic}")

    @property
    def classifier(self) -> ClassifierSettings:
        return ClassifierSettings(self.steps, self.batch_size, self.lr, self.width)


# ----------------------------------------------------------------- conditioning accuracy


def accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``images`` whose predicted class equals ``labels`` (−1 entries are left out)."""
    labels = np.asarray(labels)
    known = labels >= 0
    if not known.any():
        return float("nan")
    pred = predict(model, np.asarray(images)[known])["label"]
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
        "real_test_accuracy": accuracy(model, test, test_labels) if test_known else None,
        "per_class": per_class,
        "n_samples": int(len(samples)),
        "n_train": int(len(train)),
        "n_test": test_known,
        "classes": list(names),
    }


# ----------------------------------------------------------------- augmentation utility


def augmentation_utility(train: np.ndarray, train_labels: np.ndarray, synthetic: np.ndarray,
                         synthetic_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray,
                         n_classes: int, *, settings: ClassifierSettings = ClassifierSettings(),
                         seeds: list[int] = (0, 1, 2)) -> dict[str, Any]:
    """Test accuracy of classifiers trained on real, synthetic, and real + synthetic images, per seed."""
    if n_classes < 2:
        raise InputError(f"the utility task needs at least 2 classes, got {n_classes}")
    if len(synthetic) == 0:
        raise InputError("no synthetic images to train on")
    regimes = {
        "real": (train, train_labels),
        "synthetic": (synthetic, synthetic_labels),
        "real+synthetic": (np.concatenate([train, synthetic]), np.concatenate([train_labels, synthetic_labels])),
    }
    result: dict[str, Any] = {}
    for name, (x, y) in regimes.items():
        scores = [accuracy(fit_slice_cnn(x, labels=y, n_classes=n_classes, settings=settings, seed=s),
                           test, test_labels) for s in seeds]
        result[name] = {"accuracies": scores, "mean": float(np.mean(scores)),
                        "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
                        "n_train_images": int(len(x))}
    test_labels = np.asarray(test_labels)
    known = test_labels[test_labels >= 0]
    result["chance"] = 1.0 / n_classes
    result["majority_rate"] = float(np.bincount(known, minlength=n_classes).max() / len(known)) if len(known) else None
    result["n_test"] = int(len(known))
    result["seeds"] = list(seeds)
    return result


# ----------------------------------------------------------------- jobs


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
    cfg = settings_from_config(ConditioningSettings, settings, "evaluation.conditioning")
    if not condition_on:
        result = {"conditional": False, "note": "not conditional: the model takes no class label"}
        write_json(out, result)
        return result
    from pipeline_lib.core.slices import load_split
    from pipeline_lib.evaluation.pixel_metrics import load_images
    from pipeline_lib.models.training import configure_threads

    configure_threads(threads)
    train, train_rows = load_split(images, table, "train")
    test, test_rows = load_split(images, table, "test")
    if condition_on not in train_rows.columns:
        raise InputError(f"{table}: no column '{condition_on}' (the model's condition_on)")
    names = class_names(train_rows[condition_on])
    synth = np.asarray(load_images(samples), dtype=np.float32)
    sample_names = read_sample_labels(labels, len(synth))
    sample_labels = encode_labels(sample_names, names)
    unknown = sorted(set(sample_names[sample_labels < 0]))
    if unknown:
        raise InputError(f"{labels}: label(s) {', '.join(map(repr, unknown))} are not classes of "
                         f"'{condition_on}' among the training slices ({', '.join(names)})")
    result = conditioning_accuracy(train, encode_labels(train_rows[condition_on], names), test,
                                   encode_labels(test_rows[condition_on], names), synth, sample_labels, names,
                                   settings=cfg.classifier, seed=cfg.seed)
    result["label_column"] = condition_on
    result["settings"] = asdict(cfg)
    write_json(out, result)
    return result


def utility_job(samples: Path, labels: Path, images: Path, table: Path, network: Path, out: Path, *,
                condition_on: str | None, settings: Mapping[str, Any], threads: int | None = None) -> dict:
    """The ``augmentation_utility`` rule (task chosen as described in the module docstring)."""
    from pipeline_lib.core.slices import load_split
    from pipeline_lib.evaluation.domain_features import load_domain_network
    from pipeline_lib.evaluation.pixel_metrics import load_images
    from pipeline_lib.models.training import configure_threads

    configure_threads(threads)
    cfg = settings_from_config(UtilitySettings, settings, "evaluation.utility")
    train, train_rows = load_split(images, table, "train")
    test, test_rows = load_split(images, table, "test")
    synth = np.asarray(load_images(samples), dtype=np.float32)
    sample_names = read_sample_labels(labels, len(synth))
    if cfg.n_synthetic is not None and cfg.n_synthetic < len(synth):
        keep = np.sort(np.random.default_rng(cfg.seed).choice(len(synth), cfg.n_synthetic, replace=False))
        synth, sample_names = synth[keep], sample_names.iloc[keep].reset_index(drop=True)

    if condition_on:
        if condition_on not in train_rows.columns:
            raise InputError(f"{table}: no column '{condition_on}' (the model's condition_on)")
        names = class_names(train_rows[condition_on])
        y_train = encode_labels(train_rows[condition_on], names)
        y_test = encode_labels(test_rows[condition_on], names)
        y_synth = encode_labels(sample_names, names)
        if (y_synth < 0).any():
            raise InputError(f"{labels}: labels that are not classes of '{condition_on}' ({', '.join(names)})")
        task = {"task": f"classify '{condition_on}'", "label_column": condition_on, "classes": names,
                "synthetic_labels": "the class each sample was generated for"}
    else:
        net = load_domain_network(network)
        if net.position_span is None:
            result = {"applicable": False,
                      "note": "unconditional model and no slice-position variation: no label for synthetic images"}
            write_json(out, result)
            return result
        bins = cfg.position_bins
        y_train = position_bins(slice_positions(train_rows, net.position_span), bins)
        y_test = position_bins(slice_positions(test_rows, net.position_span), bins)
        y_synth = position_bins(predict(net.model, synth)["position"], bins)
        names = [f"position bin {i + 1}/{bins}" for i in range(bins)]
        task = {"task": f"classify slice position into {bins} equal-width bins of the kept slice range",
                "classes": names,
                "synthetic_labels": ("pseudo-labels: bins of the slice position predicted by the domain "
                                     "network's position head (trained on real training slices)"),
                "pseudo_label_quality": net.summary.get("test", {}).get("position")}
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    result = {"applicable": True, **task,
              **augmentation_utility(train, y_train, synth, y_synth, test, y_test, len(names),
                                     settings=cfg.classifier, seeds=seeds),
              "synthetic_class_counts": np.bincount(y_synth, minlength=len(names)).tolist(),
              "settings": asdict(cfg)}
    write_json(out, result)
    return result
