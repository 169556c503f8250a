from pathlib import Path

from pipeline_lib.core.jobs import start_job
from pipeline_lib.core.settings import runtime_settings
from pipeline_lib.evaluation.fid import real_features_job

start_job(snakemake.log[0], snakemake.threads)
real_features_job(
    Path(snakemake.input.weights),
    Path(snakemake.input.images),
    Path(snakemake.input.table),
    snakemake.wildcards.split,
    Path(snakemake.output[0]),
    settings={**runtime_settings(snakemake.config, "evaluation.fid"), **snakemake.params.fid},
    threads=snakemake.threads,
)
