from pathlib import Path

from pipeline_lib.core.jobs import start_job
from pipeline_lib.models.training import train_job

start_job(snakemake.log[0], snakemake.threads)
train_job(
    snakemake.wildcards.model,
    snakemake.params.block,
    Path(snakemake.input.images),
    Path(snakemake.input.table),
    weights=Path(snakemake.output.weights),
    losses=Path(snakemake.output.losses),
    summary=Path(snakemake.output.summary),
    checkpoint_root=Path(snakemake.params.checkpoints),
    threads=snakemake.threads,
)
