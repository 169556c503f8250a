"""The report's failed runs (report/failures_section.py): found from failed records, listed, left out."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline_lib.core.guard import failure_record, write_failed_records
from pipeline_lib.report.inputs import DatasetOutputs, ModelOutputs
from pipeline_lib.report.failures_section import (REFERENCE_ROWS, failed_datasets_html, failed_run_rows,
                                                  failed_runs_html, split_failed_datasets, split_failed_runs)


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


def _dataset_files(folder: Path) -> DatasetOutputs:
    folder.mkdir(parents=True)
    names = ("table", "images", *REFERENCE_ROWS)
    for name in names:
        (folder / name).write_text('{"value": 1}\n')
    return DatasetOutputs(**{name: folder / name for name in names})


def test_a_dataset_with_failed_slices_is_left_out_and_its_runs_name_the_dataset(tmp_path):
    good, killed = _dataset_files(tmp_path / "t1"), _dataset_files(tmp_path / "t2")
    record = failure_record("slice_dataset", "signal 9 (SIGKILL) from outside in slicing", dataset="t2")
    # what the guard leaves: the slices and every output after them hold the record
    write_failed_records([killed.images, killed.table, killed.original], record)
    run = _run_files(tmp_path / "run")
    write_failed_records(list(run.paths.values()), record)
    kept, failed = split_failed_datasets({"t1": good, "t2": killed})
    assert kept == {"t1": good}
    assert failed == [{"dataset": "t2", "output": "slices", "stage": "slice_dataset",
                       "reason": "signal 9 (SIGKILL) from outside in slicing"}]
    assert 'id="failed-datasets-table"' in failed_datasets_html(failed)
    runs = split_failed_runs({"vae_t2": {0: run}})[1]
    assert runs[0]["stage"] == "slice_dataset (dataset t2)"


def test_a_failed_reference_row_is_left_out_with_a_note_and_the_dataset_stays(tmp_path):
    files = _dataset_files(tmp_path / "t1")
    write_failed_records([files.domain_network, files.domain_original],
                         failure_record("domain_network", "killed: out of memory at 6.1 GB", dataset="t1"))
    kept, failed = split_failed_datasets({"t1": files})
    assert kept["t1"].domain_network is None
    assert kept["t1"].domain_original is None
    assert kept["t1"].original == files.original
    assert [r["output"] for r in failed] == ["the domain network", "domain-feature metrics of the real slices"]
    assert failed_datasets_html([]) == ""


def _report_of_one_failed_run(tmp_path, dataset, record) -> str:
    """The page written by the report job for ``dataset`` and one model run failed with ``record``."""
    import pandas as pd

    from pipeline_lib.report.document import report_job
    from pipeline_lib.report.inputs import ReportInputs

    def tsv(name: str, frame: pd.DataFrame) -> Path:
        frame.to_csv(tmp_path / name, sep="\t", index=False)
        return tmp_path / name

    run = _run_files(tmp_path / "run")
    write_failed_records(run.paths.values(), record)
    subject = {"subject": ["sub-0000000000"]}
    inputs = ReportInputs(
        subjects=tsv("subjects.tsv", pd.DataFrame(subject)),
        ingest_qc=tsv("ingest.tsv", pd.DataFrame({**subject, "kind": ["NIfTI file"], "status": ["ok"],
                                                 "reason": [""], "warning": [""]})),
        registration_qc=tsv("registration.tsv", pd.DataFrame({**subject, "status": ["ok"]})),
        registered=[], datasets={"t1": dataset}, models={"vae": {0: run}})
    out = tmp_path / "report" / "index.html"
    report_job(out, inputs, registration={}, sampling={}, synthetic_cohort=False, title="Failures",
               summary_tsv=tmp_path / "summary.tsv")
    return out.read_text()


def test_the_page_is_written_when_every_dataset_failed(tmp_path):
    import pandas as pd

    dataset = _dataset_files(tmp_path / "t1")
    record = failure_record("slice_dataset", "time limit 28 min reached in slicing", dataset="t1")
    write_failed_records([getattr(dataset, f) for f in ("table", "images", *REFERENCE_ROWS)], record)
    text = _report_of_one_failed_run(tmp_path, dataset, record)
    assert "slice_dataset (dataset t1)" in text
    assert 'id="failed-datasets-table"' in text
    assert pd.read_csv(tmp_path / "summary.tsv", sep="\t").loc[0, "runs"] == 0


def test_the_page_is_written_without_the_reference_rows_that_failed(tmp_path):
    import numpy as np
    import pandas as pd

    dataset = _dataset_files(tmp_path / "t1")
    with open(dataset.images, "wb") as handle:  # the name has no .npy suffix for np.save to add
        np.save(handle, np.random.default_rng(0).random((12, 8, 8)).astype(np.float32))
    pd.DataFrame({"subject": [f"sub-{i // 3:010d}" for i in range(12)], "split": ["train"] * 9 + ["test"] * 3,
                  "slice_index": range(12)}).to_csv(dataset.table, sep="\t", index=False)
    record = failure_record("real_features", "killed: out of memory at 4.0 GB", dataset="t1")
    write_failed_records([getattr(dataset, f) for f in REFERENCE_ROWS], record)
    text = _report_of_one_failed_run(tmp_path, dataset, record)
    datasets = re.search(r'<table id="failed-datasets-table">.*?</table>', text, re.S).group(0)
    assert datasets.count('<tr class="failed">') == len(REFERENCE_ROWS)
    assert "FID, KID and PRDC of the real slices" in datasets
