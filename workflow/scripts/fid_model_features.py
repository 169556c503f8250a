from pipeline_lib.core.guard import guard_run_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path
    from pipeline_lib.core.settings import runtime_settings
    from pipeline_lib.evaluation.fid import model_features_job

    model_features_job(
        Path(snakemake.input.weights),
        Path(snakemake.input.samples),
        Path(snakemake.output[0]),
        settings={**runtime_settings(snakemake.config, "evaluation.fid"), **dict(snakemake.params.items())},
        threads=snakemake.threads,
        blocks=Path(snakemake.input.blocks) if "blocks" in snakemake.input.keys() else None,
    )


guard_run_job(snakemake, work, stage="Inception features")
