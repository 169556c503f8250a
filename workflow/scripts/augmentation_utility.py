from pipeline_lib.core.guard import guard_run_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path
    from pipeline_lib.evaluation.augmentation_utility import utility_job

    utility_job(
        Path(snakemake.input.samples),
        Path(snakemake.input.labels),
        Path(snakemake.input.images),
        Path(snakemake.input.table),
        Path(snakemake.input.network),
        Path(snakemake.output[0]),
        condition_on=snakemake.params.condition_on or None,
        settings=snakemake.params.settings,
        threads=snakemake.threads,
    )


guard_run_job(snakemake, work, stage="augmentation utility")
