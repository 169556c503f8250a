from pipeline_lib.core.guard import guard_run_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path
    from pipeline_lib.evaluation.distribution import model_distribution_job

    model_distribution_job(
        Path(snakemake.input.features),
        Path(snakemake.input.real),
        Path(snakemake.input.table),
        Path(snakemake.input.labels),
        Path(snakemake.output[0]),
        model=snakemake.wildcards.model,
        condition_on=snakemake.params.condition_on or None,
        evaluation=snakemake.params.evaluation,
    )


guard_run_job(snakemake, work, stage="FID, KID and PRDC")
