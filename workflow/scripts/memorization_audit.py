from pipeline_lib.core.guard import guard_run_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path
    from pipeline_lib.evaluation.memorization import memorization_job

    memorization_job(
        Path(snakemake.input.samples),
        Path(snakemake.input.images),
        Path(snakemake.input.table),
        Path(snakemake.input.network),
        out_json=Path(snakemake.output.audit),
        out_gallery=Path(snakemake.output.gallery),
        settings=snakemake.params.settings,
    )


guard_run_job(snakemake, work, stage="the memorization audit")
