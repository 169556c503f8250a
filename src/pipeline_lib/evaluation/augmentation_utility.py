"""Do the samples help a downstream classifier? (augmentation utility)

The same small classifier is trained on real TRAIN slices only, on synthetic
samples only, and on both together, and evaluated on the real TEST slices, for
several seeds (mean ± std). The task must have labels for the synthetic images:

* conditional models: the ``condition_on`` label, and the synthetic labels are
  the classes the samples were generated for;
* unconditional models have no labels, so the task is the slice position in
  ``position_bins`` equal-width bins of the kept slice range, and the synthetic
  labels are the bins of the slice position that the domain network's position
  head predicts for each sample (the domain network is trained on real training
  slices only). Its held-out error bounds how good these pseudo-labels are; it is
  recorded in the output.

All classifiers see the same number of optimisation steps whatever the training
set, so the comparison is compute-matched.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import write_json
from pipeline_lib.core.settings import UtilitySettings, read_settings
from pipeline_lib.core.slices import ConcatImages
from pipeline_lib.evaluation.domain_features import (ClassifierSettings, class_names, encode_labels, fit_slice_cnn, position_bins,
                                                     predict, slice_positions)

log = logging.getLogger(__name__)

from pipeline_lib.evaluation.conditioning import classifier_accuracy, read_sample_labels


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
        # joined as a view: the real slices may be a split on disk (core.slices.SplitImages)
        "real+synthetic": (ConcatImages(train, synthetic), np.concatenate([train_labels, synthetic_labels])),
    }
    result: dict[str, Any] = {}
    for name, (x, y) in regimes.items():
        scores = [classifier_accuracy(fit_slice_cnn(x, labels=y, n_classes=n_classes, settings=settings, seed=s),
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


def utility_job(samples: Path, labels: Path, images: Path, table: Path, network: Path, out: Path, *,
                condition_on: str | None, settings: Mapping[str, Any], threads: int | None = None) -> dict:
    """The ``augmentation_utility`` rule (task chosen as described in the module docstring)."""
    from pipeline_lib.core.slices import open_split
    from pipeline_lib.evaluation.domain_features import load_domain_network
    from pipeline_lib.core.slices import channel_count, grey_images, grey_rows, load_checked_images
    from pipeline_lib.core.runtime import configure_threads

    configure_threads(threads)
    cfg = read_settings(UtilitySettings, settings)
    # the slices stay on disk: each classifier reads its batches, prediction reads blocks
    train, train_rows = open_split(images, table, "train", grey=True)
    test, test_rows = open_split(images, table, "test", grey=True)
    synth = np.asarray(load_checked_images(samples), dtype=np.float32)
    # a stacked model's samples are pooled per channel, each channel with its sample's label
    sample_names = grey_rows(read_sample_labels(labels, len(synth)), channel_count(synth))
    synth = grey_images(synth)
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
                                     settings=ClassifierSettings.of(cfg), seeds=seeds),
              "synthetic_class_counts": np.bincount(y_synth, minlength=len(names)).tolist(),
              "settings": asdict(cfg)}
    write_json(out, result)
    return result
