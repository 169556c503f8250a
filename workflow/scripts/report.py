from dataclasses import fields
from pathlib import Path

from pipeline_lib.core.jobs import start_job
from pipeline_lib.core.provenance import provenance
from pipeline_lib.report.document import report_job
from pipeline_lib.report.inputs import DatasetOutputs, ModelOutputs, ReportInputs

start_job(snakemake.log[0])
runs = snakemake.params.runs
# report.smk's REPORT_RUN_INPUTS: each per-run input is a list in the order of `runs`.
per_run = {name: list(snakemake.input[name]) for name in snakemake.params.run_inputs}
assert all(len(paths) == len(runs) for paths in per_run.values()), "one file per run expected"
models = {}
for i, (model, seed) in enumerate(runs):
    models.setdefault(model, {})[int(seed)] = ModelOutputs(**{kind: Path(paths[i]) for kind, paths in per_run.items()})
# 3-D runs (report.smk's REPORT_VOLUME_RUN_INPUTS): named on the rule only when there are some.
volume_runs = {}
volume_inputs = getattr(snakemake.params, "volume_run_inputs", [])
for i, (model, seed) in enumerate(getattr(snakemake.params, "volume_runs", [])):
    volume_runs.setdefault(model, {})[int(seed)] = ModelOutputs(
        **{name: Path(snakemake.input[name][i]) for name in volume_inputs})
# Per-dataset inputs are lists in the order of `datasets`; reader scores in that of `reader_datasets`.
reader_scores = dict(zip(snakemake.params.reader_datasets, snakemake.input.reader_scores))
datasets = {}
for i, name in enumerate(snakemake.params.datasets):
    datasets[name] = DatasetOutputs(
        **{f.name: Path(snakemake.input[f.name][i]) for f in fields(DatasetOutputs) if f.name != "reader_scores"},
        reader_scores=Path(reader_scores[name]) if name in reader_scores else None,
    )
inputs = ReportInputs(
    subjects=Path(snakemake.input.subjects),
    ingest_qc=Path(snakemake.input.ingest_qc),
    registration_qc=Path(snakemake.input.registration_qc),
    registered=[Path(p) for p in snakemake.input.registered],
    datasets=datasets,
    models=models,
    model_datasets=dict(snakemake.params.model_datasets),
    reader_responses=dict(snakemake.params.reader_responses),
    reader_kits=dict(snakemake.params.reader_kits),
    volume_runs=volume_runs,
)
report_job(
    Path(snakemake.output.html),
    inputs,
    # on_poor_fit is a result of the report (read_by), not of registration's own jobs; the caption states it.
    registration={**snakemake.params.registration, "on_poor_fit": snakemake.params.on_poor_fit},
    preprocessing=snakemake.params.preprocessing,
    sampling=snakemake.params.sampling,
    synthetic_cohort=snakemake.params.synthetic_cohort,
    title=snakemake.params.title,
    # The configuration as this job saw it, secrets redacted (core.provenance).
    provenance=provenance(snakemake.config, Path(snakemake.scriptdir).parents[1]),
    summary_tsv=Path(snakemake.output.summary),
    published=snakemake.params.published,
    protocol_notes=dict(snakemake.params.protocol_notes),
)
