from pathlib import Path

from pipeline_lib.core.jobs import start_job
from pipeline_lib.report.document import report_job

start_job(snakemake.log[0])
report_job(
    Path(snakemake.output[0]),
    inputs={name: snakemake.input[name] for name in snakemake.input.keys()},
    models=snakemake.params.models,
    settings=snakemake.params.settings,
    synthetic_cohort=snakemake.params.synthetic_cohort,
    title=snakemake.params.title,
)
