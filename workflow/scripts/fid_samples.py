from pathlib import Path

from pipeline_lib.core.jobs import start_job
from pipeline_lib.models.sampling import fid_samples_job

start_job(snakemake.log[0], snakemake.threads)
fid_samples_job(
    Path(snakemake.input.weights),
    snakemake.params.sampling,
    snakemake.params.repeats,
    Path(snakemake.output[0]),
    threads=snakemake.threads,
)
