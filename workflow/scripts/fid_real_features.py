from pipeline_lib.core.guard import guard_dataset_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path
    from pipeline_lib.core.settings import runtime_settings
    from pipeline_lib.evaluation.fid import real_features_job

    real_features_job(
        Path(snakemake.input.weights),
        Path(snakemake.input.images),
        Path(snakemake.input.table),
        snakemake.wildcards.split,
        Path(snakemake.output[0]),
        settings={**runtime_settings(snakemake.config, "evaluation.fid"), **snakemake.params.fid},
        threads=snakemake.threads,
    )


guard_dataset_job(snakemake, work, stage="Inception features")
