from dataclasses import fields
from pathlib import Path

from pipeline_lib.core.jobs import start_job
from pipeline_lib.report.document import ModelOutputs, ReportInputs, report_job

start_job(snakemake.log[0])
models = snakemake.params.models
# report.smk names each per-model input list after a ModelOutputs field, in the order of `models`.
per_model = {f.name: list(snakemake.input[f.name]) for f in fields(ModelOutputs)}
assert all(len(paths) == len(models) for paths in per_model.values()), "one file per model expected"
inputs = ReportInputs(
    subjects=Path(snakemake.input.subjects),
    ingest_qc=Path(snakemake.input.ingest_qc),
    registration_qc=Path(snakemake.input.registration_qc),
    registered=[Path(p) for p in snakemake.input.registered],
    table=Path(snakemake.input.table),
    images=Path(snakemake.input.images),
    original=Path(snakemake.input.original),
    distribution_original=Path(snakemake.input.distribution_original),
    domain_network=Path(snakemake.input.domain_network),
    domain_original=Path(snakemake.input.domain_original),
    reader_scores=Path(snakemake.input.reader_scores),
    diversity_original=Path(snakemake.input.diversity_original),
    models={m: ModelOutputs(**{kind: Path(paths[i]) for kind, paths in per_model.items()})
            for i, m in enumerate(models)},
)
report_job(
    Path(snakemake.output[0]),
    inputs,
    registration=snakemake.params.registration,
    sampling=snakemake.params.sampling,
    synthetic_cohort=snakemake.params.synthetic_cohort,
    title=snakemake.params.title,
)
