from pipeline_lib.core.guard import guard_run_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path
    from pipeline_lib.models.sampling import sample_job

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


guard_run_job(snakemake, work, stage="sampling")
