from pathlib import Path

from pipeline_lib.core.jobs import start_job
from pipeline_lib.models.sampling import sample_job

start_job(snakemake.log[0], snakemake.threads)
sample_job(
    Path(snakemake.input.weights),
    Path(snakemake.input.images),
    Path(snakemake.input.table),
    snakemake.params.sampling,
    samples=Path(snakemake.output.samples),
    grid=Path(snakemake.output.grid),
    reconstructions=Path(snakemake.output.reconstructions),
    labels=Path(snakemake.output.labels),
    threads=snakemake.threads,
)
