"""The hostile-input corpus: every kind of bad or awkward input gets its expected decision.

One tree holds every case (pipeline_lib.cohorts.hostile_corpus); discovery and ingest run
over it in one go, as the workflow runs them (as root, without the capabilities that
let root read unreadable files). Each case must be decided as expected, each refusal
with its specific reason; the scorecard in docs/ must be this run's.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from pipeline_lib.cohorts import hostile_corpus as hc

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    root, work = base / "corpus", base / "work"
    work.mkdir()
    skipped = hc.build_corpus(root)
    here = os.getcwd()
    os.chdir(base)  # the shell-metacharacter case would create its file here if anything ran it
    try:
        outcomes = hc.run_without_dac_override(root, work)
    finally:
        os.chdir(here)
    return base, hc.judge(root, outcomes, skipped=skipped), skipped


def test_at_least_45_kinds_of_input_are_built(corpus):
    _, table, skipped = corpus
    built = table[table["decision"] != "not built"]
    assert built["kind"].nunique() >= 45
    assert set(built["group"]) == {"filesystem", "NIfTI", "DICOM"}
    if os.geteuid() == 0:
        assert skipped == {}


def test_every_case_is_decided_as_expected_with_a_specific_reason(corpus):
    _, table, _ = corpus
    built = table[table["decision"] != "not built"]
    wrong = built[~built["ok"].astype(bool)]
    assert wrong.empty, wrong[["slug", "expected", "decision", "reason"]].to_string()
    refused = built[built["expected"] == hc.REFUSE]
    assert refused["reason"].str.len().gt(10).all()
    # reasons name the input by what it is, never by a path
    assert not refused["reason"].str.contains(str(corpus[0])).any()


def test_accepted_outputs_carry_no_header_text_and_nothing_ran_a_shell(corpus):
    base, table, _ = corpus
    accepted = table[table["decision"].isin([hc.ACCEPT, hc.WARN])]
    assert len(accepted) >= 20
    for output in accepted["output"]:
        for path in Path(output).iterdir():
            data = path.read_bytes()
            if path.name.endswith(".gz"):
                data = gzip.decompress(data)
            assert b"CORPUS" not in data, path
            assert b"19580317" not in data, path
    assert not (base / "PWNED").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the committed scorecard was made as root (device node case)")
def test_scorecard_in_docs_is_this_runs(corpus):
    _, table, _ = corpus
    committed = (REPO / "docs" / "HOSTILE_INPUTS.md").read_text()
    assert committed == hc.scorecard(table), (
        "docs/HOSTILE_INPUTS.md is stale: python -m pipeline_lib.cohorts.hostile_corpus --scorecard "
        "docs/HOSTILE_INPUTS.md")
