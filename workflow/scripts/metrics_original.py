from pathlib import Path

from pipeline_lib.evaluation.pixel_metrics_jobs import original_metrics_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0])
original_metrics_job(
    Path(snakemake.input.images),
    Path(snakemake.input.table),
    Path(snakemake.output[0]),
    sharpness_scale=snakemake.params.metrics["sharpness_scale"],
    n_original=snakemake.params.metrics["n_original"],
    seed=snakemake.params.seed,
)
