"""Reader-study designs of the seeds: per-reader kits (Kazuhiro et al.), familiarisation, blocks
(Han et al.), and scoring in rates with the balanced accuracy Kazuhiro et al. report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline_lib.core.errors import InputError
from pipeline_lib.reader_study.design import (BlockSpec, compose_blocks, composition_summary, han_blocks,
                                              reader_kits, reader_seed)
from pipeline_lib.reader_study.scoring import balanced_accuracy, rates, score_responses

SEQUENCES = ["T1", "T1c", "T2", "FLAIR"]
KAZUHIRO = {"preset": "kazuhiro", "n_total": 50, "synthetic_fraction": [0.4, 0.6], "seed": 7}

# Kazuhiro et al., Table 1: TP, FN, FP, TN rates (%, positive = real) and accuracy per reader.
KAZUHIRO_TABLE_1 = {
    "NR1": (56, 44, 45, 55, 0.55),
    "NR2": (30, 70, 71, 29, 0.30),
    "NNR1": (90, 10, 24, 76, 0.83),
    "NNR2": (83, 17, 40, 60, 0.72),
    "NNR3": (73, 27, 44, 56, 0.64),
}


def pool(n: int, groups: list[str] | None = None) -> pd.DataFrame:
    labels = [groups[i % len(groups)] for i in range(n)] if groups else [""] * n
    return pd.DataFrame({"index": np.arange(n), "group": labels})


# -- scoring: seed 004's published numbers ---------------------------------------------------

@pytest.mark.parametrize("reader", sorted(KAZUHIRO_TABLE_1))
def test_balanced_accuracy_of_the_published_rates_is_the_published_accuracy(reader):
    """Each published accuracy is (TPR + TNR) / 2 of the published rates, to the paper's two decimals
    (0.555 is printed 0.55, 0.295 as 0.30, 0.715 as 0.72, 0.645 as 0.64: within half a unit)."""
    tp, fn, fp, tn, published = KAZUHIRO_TABLE_1[reader]
    assert balanced_accuracy(tp, fn, fp, tn) == pytest.approx(published, abs=0.005 + 1e-12)
    assert rates(tp, fn, fp, tn) == {"TP_rate": tp, "FN_rate": fn, "FP_rate": fp, "TN_rate": tn}


def _reader_answers(reader: str, n_real: int, n_synthetic: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A key of n_real real and n_synthetic synthetic images and one reader's answers that hit the
    published rates exactly."""
    tp, fn, fp, tn, _ = KAZUHIRO_TABLE_1[reader]
    key = pd.DataFrame({"image": [f"{i:04d}.png" for i in range(n_real + n_synthetic)], "kit_id": "k",
                        "truth": ["real"] * n_real + ["synthetic"] * n_synthetic,
                        "source": ["real"] * n_real + ["dcgan"] * n_synthetic, "block": "", "group": "",
                        "source_index": [str(i) for i in range(n_real + n_synthetic)]})
    real_said_real = tp * n_real // 100
    synthetic_said_real = fp * n_synthetic // 100
    answers = (["real"] * real_said_real + ["synthetic"] * (n_real - real_said_real)
               + ["real"] * synthetic_said_real + ["synthetic"] * (n_synthetic - synthetic_said_real))
    responses = pd.DataFrame({"kit_id": "k", "reader_id": reader, "order_index": range(1, len(key) + 1),
                              "image": key["image"], "answer": answers, "confidence": np.nan,
                              "response_ms": 1000, "timed_out": 0, "file": f"{reader}.csv"})
    return key, responses


@pytest.mark.parametrize("reader", sorted(KAZUHIRO_TABLE_1))
def test_scoring_reproduces_kazuhiro_table_1_from_a_kit_that_is_not_half_synthetic(reader):
    """100 real and 200 synthetic images (a kit far from 50 %): the readers table gives the published
    rates and, as balanced accuracy, the published accuracy; the plain accuracy on counts does not
    always (it leans towards the larger class)."""
    tp, fn, fp, tn, published = KAZUHIRO_TABLE_1[reader]
    key, responses = _reader_answers(reader, 100, 200)
    row = score_responses(key, responses)["readers"][0]
    assert (row["TP"], row["FN"], row["FP"], row["TN"]) == (tp, fn, 2 * fp, 2 * tn)
    assert (row["TP_rate"], row["FN_rate"], row["FP_rate"], row["TN_rate"]) == (tp, fn, fp, tn)
    assert row["balanced_accuracy"] == pytest.approx(published, abs=0.005 + 1e-12)
    assert row["accuracy"] == pytest.approx((tp + 2 * tn) / 300)


def test_plain_accuracy_on_an_unbalanced_kit_misses_a_published_value():
    key, responses = _reader_answers("NNR1", 100, 200)
    row = score_responses(key, responses)["readers"][0]
    assert abs(row["accuracy"] - 0.83) > 0.02
    assert row["balanced_accuracy"] == pytest.approx(0.83)


# -- per-reader kits and familiarisation -------------------------------------------------------

def test_two_reader_ids_get_different_sets_within_the_40_60_rule():
    real, samples = pool(300), {"dcgan": pool(300)}
    kits = reader_kits(real, samples, KAZUHIRO, ["NR1", "NR2", "NNR1", "NNR2", "NNR3"], n_familiarisation=10)
    sets = {}
    for reader, kit in kits["readers"].items():
        summary = composition_summary(kit)
        assert summary["n_images"] == 50
        assert 0.4 <= summary["synthetic_fraction"] <= 0.6
        assert set(kit["reader_id"]) == {reader}
        assert not kit.duplicated(["source", "source_index"]).any()
        sets[reader] = set(zip(kit["source"], kit["source_index"]))
    assert sets["NR1"] != sets["NR2"]
    assert len(sets["NR1"] & sets["NR2"]) < 40
    # the same reader ID gives the same set again, whatever other readers take part
    again = reader_kits(real, samples, KAZUHIRO, ["NR1"], n_familiarisation=10)["readers"]["NR1"]
    pd.testing.assert_frame_equal(again, kits["readers"]["NR1"])
    assert reader_seed(7, "NR1") != reader_seed(7, "NR2")
    assert reader_seed(7, "NR1") != reader_seed(8, "NR1")


def test_synthetic_share_varies_between_readers():
    kits = reader_kits(pool(500), {"dcgan": pool(500)}, KAZUHIRO, [f"R{i}" for i in range(12)])
    fractions = {composition_summary(k)["synthetic_fraction"] for k in kits["readers"].values()}
    assert len(fractions) > 1
    assert all(0.4 <= f <= 0.6 for f in fractions)


def test_familiarisation_cases_are_shown_first_and_never_scored():
    real, samples = pool(120), {"a": pool(80), "b": pool(80)}
    kits = reader_kits(real, samples, KAZUHIRO, ["X", "Y"], n_familiarisation=10)
    training = kits["familiarisation"]
    assert len(training) == 10
    assert set(training["block"]) == {"familiarisation"}
    assert (training["truth"] == "real").sum() == 5
    assert set(training["source"]) == {"real", "a", "b"}
    seen = set(zip(training["source"], training["source_index"]))
    for kit in kits["readers"].values():
        assert not seen & set(zip(kit["source"], kit["source_index"]))
    assert len(reader_kits(real, samples, KAZUHIRO, ["X"])["familiarisation"]) == 0
    with pytest.raises(InputError, match="distinct reader IDs"):
        reader_kits(real, samples, KAZUHIRO, ["X", "X"])


# -- blocks (Han et al.) --------------------------------------------------------------------------

def test_han_blocks_match_real_images_by_sequence_and_concat_takes_equal_shares():
    real = pool(400, SEQUENCES)
    samples = {"dcgan": pool(200, SEQUENCES), "wgan": pool(200, SEQUENCES), "dcgan_concat": pool(50)}
    blocks = han_blocks(["dcgan", "wgan"], SEQUENCES, n=8, concat_models=["dcgan_concat"])
    assert [b.name for b in blocks][:2] == ["dcgan/T1", "dcgan/T1c"]
    assert blocks[-1].name == "dcgan_concat/concat"
    kit = compose_blocks(real, samples, blocks, seed=1)
    assert list(dict.fromkeys(kit["block"])) == [b.name for b in blocks]  # blocks in turn
    assert list(kit["block_order"]) == sorted(kit["block_order"])
    assert not kit.duplicated(["source", "source_index"]).any()
    for name, part in kit.groupby("block"):
        synthetic, real_part = part[part["truth"] == "synthetic"], part[part["truth"] == "real"]
        assert len(synthetic) == len(real_part) == 8
        if name.endswith("/concat"):
            assert real_part["group"].value_counts().to_dict() == {s: 2 for s in SEQUENCES}
            assert set(synthetic["source"]) == {"dcgan_concat"}
        else:
            model, sequence = name.split("/")
            assert set(synthetic["source"]) == {model}
            assert set(synthetic["group"]) == set(real_part["group"]) == {sequence}
    # shuffled within a block: not all real images after the synthetic ones
    first = kit[kit["block"] == "dcgan/T1"]["truth"].tolist()
    assert first != sorted(first)


def test_blocks_without_labels_need_no_label_column_and_labelled_blocks_say_so():
    real, samples = pool(40), {"m": pool(40)}
    kit = compose_blocks(real, samples, [BlockSpec("m", (("m", None),), 5, 5)], seed=0)
    assert len(kit) == 10
    assert set(kit["group"]) == {""}
    with pytest.raises(InputError, match="carry no labels; set reader_study.group_by"):
        compose_blocks(real, samples, han_blocks(["m"], SEQUENCES, n=4), seed=0)
    with pytest.raises(InputError, match="names model 'x'"):
        compose_blocks(real, samples, [BlockSpec("x", (("x", None),), 2, 2)], seed=0)
    with pytest.raises(InputError, match="distinct"):
        compose_blocks(real, samples, [BlockSpec("a", (("m", None),), 1, 1)] * 2, seed=0)


# -- the presets' reader designs (presets/<study>.yaml, reader_study) -----------------------------

def _preset_reader_study(study: str) -> dict:
    from pathlib import Path

    import yaml
    path = Path(__file__).resolve().parents[1] / "presets" / f"{study}.yaml"
    return yaml.safe_load(path.read_text())["reader_study"]


def test_block_real_groups_narrow_to_the_labels_of_the_kits_real_slices():
    """One setting for every kit: a T1 kit's blocks draw real T1 only, a kit with all four sequences
    draws them in equal shares, and a kit with none of the listed labels is an error naming both."""
    from pipeline_lib.reader_study.design import compose_design
    settings = {"preset": "han", "n_per_model": 8, "blocks": "per_model", "group_by": "sequence",
                "block_real_groups": SEQUENCES}
    samples = {"dcgan": pool(40), "wgan": pool(40)}
    kit = compose_design(pool(40, ["T1"]), samples, settings)["readers"][None]
    assert list(dict.fromkeys(kit["block"])) == ["dcgan/T1", "wgan/T1"]
    assert set(kit.loc[kit["truth"] == "real", "group"]) == {"T1"}
    kit = compose_design(pool(80, SEQUENCES), samples, settings)["readers"][None]
    assert list(dict.fromkeys(kit["block"])) == ["dcgan/concat", "wgan/concat"]
    for _, part in kit.groupby("block"):
        assert part.loc[part["truth"] == "real", "group"].value_counts().to_dict() == {s: 2 for s in SEQUENCES}
    with pytest.raises(InputError, match=r"block_real_groups .* none of these labels .*\['PD'\]"):
        compose_design(pool(40, ["PD"]), samples, settings)


def test_han_preset_runs_one_block_per_gan_and_sequence_with_concat_reals_in_equal_shares():
    """Han et al. §3.3 as the preset configures it: per kit (sequence) one block per GAN, 50 samples
    against 50 real slices of that sequence; Concat's 50 real slices in equal shares of the four."""
    from pipeline_lib.reader_study.design import compose_design
    settings = _preset_reader_study("han_2018")
    assert settings["n_familiarisation"] == 0  # "without previous training stages"
    sequences = ["t1", "t1ce", "t2", "flair"]
    models = {"dcgan_t1_128": pool(500), "wgan_t1_128": pool(500)}
    kit = compose_design(pool(700, ["t1"]), models, settings)["readers"][None]
    assert list(dict.fromkeys(kit["block"])) == ["dcgan_t1_128/t1", "wgan_t1_128/t1"]
    assert kit.groupby(["block", "truth"]).size().tolist() == [50, 50, 50, 50]
    concat = {"dcgan_concat_128": pool(500), "wgan_concat_128": pool(500)}
    kit = compose_design(pool(2800, sequences), concat, settings)["readers"][None]
    assert list(dict.fromkeys(kit["block"])) == ["dcgan_concat_128/concat", "wgan_concat_128/concat"]
    for _, part in kit.groupby("block"):
        shares = part.loc[part["truth"] == "real", "group"].value_counts()
        assert sorted(shares.tolist()) == [12, 12, 13, 13]
        assert set(shares.index) == set(sequences)
    assert not kit.duplicated(["source", "source_index"]).any()


def test_kazuhiro_preset_gives_five_readers_own_sets_and_a_ten_case_familiarisation():
    """Kazuhiro et al.: per reader 50 images, 40-60 % created, sets differ between readers; 10
    familiarisation cases first, never in a scored set."""
    from pipeline_lib.reader_study.design import compose_design
    settings = _preset_reader_study("kazuhiro_2018")
    design = compose_design(pool(300), {"dcgan": pool(1000)}, settings)
    training = design["familiarisation"]
    assert len(training) == 10
    assert (training["truth"] == "real").sum() == 5
    seen = set(zip(training["source"], training["source_index"].astype(int)))
    readers = design["readers"]
    assert sorted(readers) == sorted(["NR1", "NR2", "NNR1", "NNR2", "NNR3"])
    sets = []
    for frame in readers.values():
        assert len(frame) == 50
        assert 0.4 <= (frame["truth"] == "synthetic").mean() <= 0.6
        mine = set(zip(frame["source"], frame["source_index"].astype(int)))
        assert not mine & seen
        sets.append(frozenset(mine))
    assert len(set(sets)) == 5
