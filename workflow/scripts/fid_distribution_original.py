from pipeline_lib.core.guard import guard_dataset_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path
    from pipeline_lib.evaluation.distribution import original_distribution_job

    original_distribution_job(
        Path(snakemake.input.test),
        Path(snakemake.input.train),
        Path(snakemake.input.table),
        Path(snakemake.output[0]),
        class_columns=snakemake.params.class_columns,
        evaluation=snakemake.params.evaluation,
    )


guard_dataset_job(snakemake, work, stage="FID, KID and PRDC of the real slices")
