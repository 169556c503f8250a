from pipeline_lib.core.guard import guard_run_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path
    from pipeline_lib.models.sampling import sample_volumes_job

    sample_volumes_job(
        Path(snakemake.input.weights),
        snakemake.params.sampling,
        volumes=Path(snakemake.output.volumes),
        labels=Path(snakemake.output.labels),
        views=Path(snakemake.output.views),
        table=Path(snakemake.input.table),
        threads=snakemake.threads,
    )


guard_run_job(snakemake, work, stage="sampling")
