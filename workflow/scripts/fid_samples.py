from pipeline_lib.core.guard import guard_run_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path
    from pipeline_lib.models.sampling import fid_samples_job

    fid_samples_job(
        Path(snakemake.input.weights),
        snakemake.params.sampling,
        snakemake.params.repeats,
        Path(snakemake.output[0]),
        threads=snakemake.threads,
    )


guard_run_job(snakemake, work, stage="fresh FID sampling")
