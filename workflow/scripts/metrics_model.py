from pathlib import Path

from pipeline_lib.evaluation.pixel_metrics_jobs import model_metrics_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0])
model_metrics_job(
    Path(snakemake.input.samples),
    Path(snakemake.input.reconstructions),
    Path(snakemake.input.images),
    Path(snakemake.input.table),
    Path(snakemake.output[0]),
    sharpness_scale=snakemake.params.metrics["sharpness_scale"],
    n_reconstruct=snakemake.params.sampling["n_reconstruct"],
    seed=snakemake.params.sampling["seed"],
)
