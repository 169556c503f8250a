from dataclasses import fields
from pathlib import Path

from pipeline_lib.core.jobs import start_job
from pipeline_lib.core.provenance import provenance
from pipeline_lib.report.document import ModelOutputs, ReportInputs, report_job

start_job(snakemake.log[0])
runs = snakemake.params.runs
# report.smk names each per-run input list after a ModelOutputs field, in the order of `runs`.
per_run = {f.name: list(snakemake.input[f.name]) for f in fields(ModelOutputs)}
assert all(len(paths) == len(runs) for paths in per_run.values()), "one file per run expected"
models = {}
for i, (model, seed) in enumerate(runs):
    models.setdefault(model, {})[int(seed)] = ModelOutputs(**{kind: Path(paths[i]) for kind, paths in per_run.items()})
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
    models=models,
)
report_job(
    Path(snakemake.output.html),
    inputs,
    # on_poor_fit is a runtime key, so not in the registration settings; the caption states it.
    registration={**snakemake.params.registration, "on_poor_fit": snakemake.params.on_poor_fit},
    preprocessing=snakemake.params.preprocessing,
    sampling=snakemake.params.sampling,
    synthetic_cohort=snakemake.params.synthetic_cohort,
    title=snakemake.params.title,
    # The configuration as this job saw it, secrets redacted (core.provenance).
    provenance=provenance(snakemake.config, Path(snakemake.scriptdir).parents[1]),
    summary_tsv=Path(snakemake.output.summary),
)
