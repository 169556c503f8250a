"""Conditioning accuracy and augmentation utility on a toy task with known answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline_lib.evaluation import domain_features as dfm
from pipeline_lib.evaluation import augmentation_utility as utility
from pipeline_lib.evaluation import conditioning
from pipeline_lib.core.errors import InputError

from helpers.threads import single_torch_thread

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dfm.ClassifierSettings(steps=60, batch_size=32, lr=2e-3, width=8, feature_dim=16)
FAST_CFG = dict(steps=60, batch_size=32, lr=2e-3, width=8)


@pytest.fixture(scope="module")
def toy(evaluation_slices):
    images, table = evaluation_slices(n_subjects=16, slices_per_subject=8, size=24, seed=11)
    names = ["scanner-A", "scanner-B"]
    labels = dfm.encode_labels(table["scanner"], names)
    train = (table["split"] == "train").to_numpy()
    return images[train], labels[train], images[~train], labels[~train], names


@pytest.fixture(scope="module")
def dataset_files(tmp_path_factory, evaluation_slices):
    """images.npy, slices.tsv and a trained domain network on disk, as the rules see them."""
    root = tmp_path_factory.mktemp("utility")
    images, table = evaluation_slices(n_subjects=12, slices_per_subject=8, size=24, seed=4)
    np.save(root / "images.npy", images)
    table.to_csv(root / "slices.tsv", sep="\t", index=False)
    with single_torch_thread():
        dfm.domain_network_job(root / "images.npy", root / "slices.tsv", out_network=root / "net.pt",
                               out_summary=root / "net.json",
                               settings={"seed": 0, "steps": 80, "batch_size": 32, "lr": 2e-3, "width": 8,
                                         "feature_dim": 16})
    return root, images, table


def _write_samples(root, images, labels, name):
    np.save(root / f"{name}.npy", images)
    pd.DataFrame({"sample": np.arange(len(images)), "label": labels}).to_csv(
        root / f"{name}.tsv", sep="\t", index=False)
    return root / f"{name}.npy", root / f"{name}.tsv"


@pytest.fixture(scope="module")
def right(toy):
    """Conditioning accuracy of "samples" that are real test slices with their true labels."""
    train, y_train, test, y_test, names = toy
    with single_torch_thread():
        return conditioning.conditioning_accuracy(train, y_train, test, y_test, test, y_test, names, settings=FAST, seed=0)


def test_correct_labels_score_high_and_shuffled_labels_score_chance(toy, right):
    train, y_train, test, y_test, names = toy
    shuffled_labels = np.random.default_rng(0).permutation(y_test)
    shuffled = conditioning.conditioning_accuracy(train, y_train, test, y_test, test, shuffled_labels, names,
                                             settings=FAST, seed=0)
    assert right["chance"] == 0.5
    assert right["n_samples"] == len(test) == 32
    assert right["accuracy"] >= 0.9
    assert right["real_test_accuracy"] == right["accuracy"]     # same images, same labels
    assert [c["class"] for c in right["per_class"]] == names
    assert all(c["accuracy"] >= 0.85 and c["n_samples"] == 16 for c in right["per_class"])
    assert abs(shuffled["accuracy"] - 0.5) <= 0.2
    # The classifier does not depend on the samples: same seed, same ceiling.
    assert shuffled["real_test_accuracy"] == right["real_test_accuracy"]


def test_conditioning_accuracy_is_deterministic(toy, right):
    train, y_train, test, y_test, names = toy
    again = conditioning.conditioning_accuracy(train, y_train, test, y_test, test, y_test, names,
                                          settings=FAST, seed=0)
    assert again == right


def test_augmentation_utility_real_only_beats_chance(toy, evaluation_slices):
    train, y_train, test, y_test, names = toy
    extra, extra_table = evaluation_slices(n_subjects=6, slices_per_subject=8, size=24, seed=99)
    y_extra = dfm.encode_labels(extra_table["scanner"], names)
    result = utility.augmentation_utility(train, y_train, extra, y_extra, test, y_test, 2,
                                          settings=FAST, seeds=[0, 1])
    assert result["chance"] == 0.5
    assert result["majority_rate"] == 0.5
    assert result["n_test"] == 32
    assert result["seeds"] == [0, 1]
    for regime, n in (("real", 96), ("synthetic", 48), ("real+synthetic", 144)):
        entry = result[regime]
        assert len(entry["accuracies"]) == 2
        assert entry["n_train_images"] == n
        assert entry["mean"] == pytest.approx(np.mean(entry["accuracies"]))
        assert entry["std"] == pytest.approx(np.std(entry["accuracies"], ddof=1))
    assert result["real"]["mean"] >= 0.8
    # Each seed's run stands alone: seed 1 alone reproduces the second accuracy.
    again = utility.augmentation_utility(train, y_train, extra, y_extra, test, y_test, 2,
                                         settings=FAST, seeds=[1])
    for regime in ("real", "synthetic", "real+synthetic"):
        assert again[regime]["accuracies"] == result[regime]["accuracies"][1:]


def test_wrong_synthetic_labels_hurt_the_synthetic_only_classifier(toy, evaluation_slices):
    train, y_train, test, y_test, names = toy
    extra, extra_table = evaluation_slices(n_subjects=6, slices_per_subject=8, size=24, seed=99)
    flipped = 1 - dfm.encode_labels(extra_table["scanner"], names)
    result = utility.augmentation_utility(train, y_train, extra, flipped, test, y_test, 2,
                                          settings=FAST, seeds=[0])
    assert result["synthetic"]["mean"] <= 0.2 < 0.8 <= result["real"]["mean"]


def test_conditioning_job_unconditional_model(tmp_path):
    out = tmp_path / "c.json"
    result = conditioning.conditioning_job(tmp_path / "none.npy", tmp_path / "none.tsv", tmp_path / "i.npy",
                                      tmp_path / "t.tsv", out, condition_on=None, settings={})
    assert json.loads(out.read_text()) == result
    assert result["conditional"] is False
    assert "not conditional" in result["note"]


def test_conditioning_job_conditional_model(tmp_path, dataset_files):
    root, images, table = dataset_files
    test = (table["split"] == "test").to_numpy()
    samples, labels = _write_samples(tmp_path, images[test], table.loc[test, "scanner"], "s")
    result = conditioning.conditioning_job(samples, labels, root / "images.npy", root / "slices.tsv",
                                      tmp_path / "c.json", condition_on="scanner",
                                      settings={"seed": 0, **FAST_CFG})
    assert result["conditional"] is True
    assert result["label_column"] == "scanner"
    assert result["classes"] == ["scanner-A", "scanner-B"]
    assert result["n_samples"] == int(test.sum())
    assert json.loads((tmp_path / "c.json").read_text())["accuracy"] == result["accuracy"]


def test_conditioning_job_rejects_unknown_sample_labels(tmp_path, dataset_files):
    root, images, _ = dataset_files
    samples, labels = _write_samples(tmp_path, images[:4], ["scanner-A", "scanner-Z", "scanner-A", ""], "bad")
    with pytest.raises(InputError, match=r"bad\.tsv: label\(s\) '', 'scanner-Z' are not classes"):
        conditioning.conditioning_job(samples, labels, root / "images.npy", root / "slices.tsv",
                                 tmp_path / "c.json", condition_on="scanner", settings=FAST_CFG)


def test_sample_labels_must_match_the_samples(tmp_path, dataset_files):
    root, images, _ = dataset_files
    samples, labels = _write_samples(tmp_path, images[:4], ["scanner-A"] * 4, "short")
    with pytest.raises(InputError, match=r"short\.tsv: 4 rows but the model has 5 samples"):
        conditioning.read_sample_labels(labels, 5)


def test_utility_job_unconditional_uses_position_bins_and_pseudo_labels(tmp_path, dataset_files):
    root, images, table = dataset_files
    samples, labels = _write_samples(tmp_path, images[::3], [""] * len(images[::3]), "u")
    settings = {"seeds": 2, "seed": 0, "position_bins": 2, "n_synthetic": 20, **FAST_CFG}
    result = utility.utility_job(samples, labels, root / "images.npy", root / "slices.tsv", root / "net.pt",
                                 tmp_path / "u.json", condition_on=None, settings=settings)
    assert result["applicable"] is True
    assert "pseudo-labels" in result["synthetic_labels"]
    assert "position" in result["task"]
    assert result["classes"] == ["position bin 1/2", "position bin 2/2"]
    assert result["synthetic"]["n_train_images"] == 20
    assert sum(result["synthetic_class_counts"]) == 20
    assert result["pseudo_label_quality"]["mae"] >= 0
    assert result["real"]["mean"] > result["chance"]
    assert json.loads((tmp_path / "u.json").read_text())["real"] == result["real"]


def test_utility_job_conditional_uses_generation_labels(tmp_path, dataset_files):
    root, images, table = dataset_files
    samples, labels = _write_samples(tmp_path, images[:30], table["scanner"][:30], "c")
    result = utility.utility_job(samples, labels, root / "images.npy", root / "slices.tsv", root / "net.pt",
                                 tmp_path / "u.json", condition_on="scanner",
                                 settings={"seeds": 1, **FAST_CFG})
    assert result["task"] == "classify 'scanner'"
    assert result["classes"] == ["scanner-A", "scanner-B"]
    assert result["synthetic_class_counts"] == [
        int((table["scanner"][:30] == "scanner-A").sum()), int((table["scanner"][:30] == "scanner-B").sum())]
    assert result["seeds"] == [0]
    assert result["real"]["std"] == 0.0
