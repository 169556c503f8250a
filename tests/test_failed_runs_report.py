"""The report's failed runs (report/failures_section.py): found from failed records, listed, left out."""

from __future__ import annotations

from pathlib import Path

from pipeline_lib.core.guard import failure_record, write_failed_records
from pipeline_lib.report.inputs import ModelOutputs
from pipeline_lib.report.failures_section import failed_run_rows, failed_runs_html, split_failed_runs


#: Some of a run's inputs (by the report rule's names): training's, an evaluation's, the audit's two.
RUN_INPUTS = ("summary", "losses", "metrics", "memorization", "gallery")


def _run_files(folder: Path) -> ModelOutputs:
    folder.mkdir(parents=True)
    files = {name: folder / f"{name}.json" for name in RUN_INPUTS}
    for path in files.values():
        path.write_text('{\n  "value": 1\n}\n')
    return ModelOutputs(**files)


def test_a_run_with_any_failed_record_is_split_off_with_its_stage_and_reason(tmp_path):
    good, killed, late = (_run_files(tmp_path / name) for name in ("good", "killed", "late"))
    record = failure_record("train", "signal 9 (SIGKILL) from outside in training", run="dcgan/seed0")
    write_failed_records(list(killed.paths.values()), record)
    # a run whose training worked but whose memorization audit was killed
    write_failed_records([late.memorization, late.gallery], failure_record("memorization_audit", "time limit 60 min"))
    kept, failed = split_failed_runs({"vae": {0: good, 1: late}, "dcgan": {0: killed}})
    assert kept == {"vae": {0: good}}
    assert failed == [{"model": "vae", "seed": 1, "stage": "memorization_audit", "reason": "time limit 60 min"},
                      {"model": "dcgan", "seed": 0, "stage": "train",
                       "reason": "signal 9 (SIGKILL) from outside in training"}]
    html = failed_runs_html(failed)
    assert html.count('<tr class="failed">') == 2
    assert "memorization_audit" in html
    assert failed_run_rows(failed)[1] == {"model": "dcgan", "runs": 0, "incomplete_runs": 0, "seeds": "0",
                                          "failed": "train: signal 9 (SIGKILL) from outside in training"}


def test_no_failed_runs_add_nothing_to_the_page(tmp_path):
    assert split_failed_runs({"vae": {0: _run_files(tmp_path / "a")}})[1] == []
    assert failed_runs_html([]) == ""


def test_reasons_are_escaped(tmp_path):
    html = failed_runs_html([{"model": "m<1>", "seed": 0, "stage": "train", "reason": "a < b & c"}])
    assert "m&lt;1&gt;" in html
    assert "a &lt; b &amp; c" in html
