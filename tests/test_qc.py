"""core.qc: the per-subject status protocol, with the flagged status of the registration QC gate."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline_lib.core import qc
from pipeline_lib.core.errors import InputError


def _stage(tmp_path, subject, status, reason="", numbers=None):
    folder = tmp_path / subject
    folder.mkdir()
    qc.write_status(folder, {"subject": subject, "stage": "register", "status": status, "file": "", "reason": reason})
    if numbers is not None:
        (folder / "qc.json").write_text(json.dumps(numbers))
    return folder


@pytest.fixture
def stages(tmp_path):
    return [
        _stage(tmp_path, "sub-000000000a", "ok", numbers={"mask_dice": 0.95, "affine": [[1, 0], [0, 1]]}),
        _stage(tmp_path, "sub-000000000b", "flagged", "brain mask overlap 0.61 < 0.85", {"mask_dice": 0.61}),
        _stage(tmp_path, "sub-000000000c", "failed", "no usable brain"),
        _stage(tmp_path, "sub-000000000d", "skipped", "ingest failed: truncated"),
        _stage(tmp_path, "sub-000000000e", "ok", numbers={"mask_dice": 0.9}),
    ]


def test_flagged_subjects_reach_later_stages_only_when_kept(stages):
    assert sorted(qc.usable_outputs(stages, "registered.nii.gz")) == ["sub-000000000a", "sub-000000000e"]
    assert sorted(qc.usable_outputs(stages, "registered.nii.gz", "keep")) == [
        "sub-000000000a", "sub-000000000b", "sub-000000000e"]
    assert sorted(qc.successful_outputs(stages, "x")) == ["sub-000000000a", "sub-000000000e"]
    assert qc.usable_outputs(stages, "x")["sub-000000000a"] == stages[0] / "x"
    with pytest.raises(InputError, match="on_poor_fit"):
        qc.usable_statuses("drop")
    with pytest.raises(InputError, match="unknown subject status"):
        qc.outputs_with_status(stages, "x", ("fine",))


def test_flagged_is_no_bad_input(stages):
    flagged = qc.read_status(stages[1])
    qc.enforce_on_bad_input(flagged, "fail")  # a poor fit does not stop the run
    with pytest.raises(InputError, match="no usable brain"):
        qc.enforce_on_bad_input(qc.read_status(stages[2]), "fail")


def test_flagged_status_joins_every_reason():
    status = qc.new_status("sub-000000000a", "register")
    assert qc.flagged_status(status, []) is status
    flagged = qc.flagged_status(status, ["brain mask overlap 0.61 < 0.85", "shear 0.20 > 0.15"])
    assert flagged["status"] == "flagged"
    assert flagged["reason"] == "brain mask overlap 0.61 < 0.85; shear 0.20 > 0.15"


def test_status_table_is_worst_first_and_leaves_lists_out(stages):
    table = qc.collect_status_table(stages, qc_file="qc.json", worst_first_by="mask_dice")
    assert list(table["subject"]) == ["sub-000000000c", "sub-000000000d", "sub-000000000b",
                                      "sub-000000000e", "sub-000000000a"]
    assert "affine" not in table.columns
    assert "mask_dice" in table.columns
    in_folder_order = qc.collect_status_table(stages, qc_file="qc.json")
    assert list(in_folder_order["subject"]) == sorted(in_folder_order["subject"])
    empty = qc.worst_first(pd.DataFrame({"subject": ["b", "a"], "status": ["ok", "ok"]}), "mask_dice")
    assert list(empty["subject"]) == ["a", "b"]
