from pathlib import Path

from pipeline_lib.evaluation.distribution import original_distribution_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)
original_distribution_job(
    Path(snakemake.input.test),
    Path(snakemake.input.train),
    Path(snakemake.input.table),
    Path(snakemake.output[0]),
    class_columns=snakemake.params.class_columns,
    evaluation=snakemake.params.evaluation,
)
