from pathlib import Path

from pipeline_lib.core.jobs import start_job
from pipeline_lib.evaluation.memorization import memorization_job

start_job(snakemake.log[0], snakemake.threads)
memorization_job(
    Path(snakemake.input.samples),
    Path(snakemake.input.images),
    Path(snakemake.input.table),
    Path(snakemake.input.network),
    out_json=Path(snakemake.output.audit),
    out_gallery=Path(snakemake.output.gallery),
    settings=snakemake.params.settings,
)
