from pathlib import Path

from pipeline_lib.core.jobs import start_job
from pipeline_lib.reader_study.kit import reader_kit_job

start_job(snakemake.log[0])
reader_kit_job(
    Path(snakemake.input.images),
    Path(snakemake.input.table),
    list(snakemake.input.samples),
    list(snakemake.input.labels),
    snakemake.params.models,
    snakemake.params.study,
    kit_dir=Path(snakemake.output.kit),
    answer_key=Path(snakemake.output.key),
    summary=Path(snakemake.output.summary),
)
