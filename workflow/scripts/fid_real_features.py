from pathlib import Path

from pipeline_lib.evaluation.fid import real_features_job, runtime_settings
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)
real_features_job(
    Path(snakemake.input.weights),
    Path(snakemake.input.images),
    Path(snakemake.input.table),
    snakemake.wildcards.split,
    Path(snakemake.output[0]),
    # device, batch size and memory format do not change the features: not rerun triggers
    settings={**runtime_settings(snakemake.config), **snakemake.params.fid},
    threads=snakemake.threads,
)
