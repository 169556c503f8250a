from pipeline_lib.core.guard import guard_run_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path
    from pipeline_lib.evaluation.volumetric import volumetric_job

    volumetric_job(
        Path(snakemake.input.samples),
        Path(snakemake.input.volumes),
        Path(snakemake.input.table),
        Path(snakemake.input.grid),
        Path(snakemake.input.weights),
        out_json=Path(snakemake.output.metrics),
        out_png=Path(snakemake.output.views),
        metrics=snakemake.params.metrics,
        diversity=snakemake.params.diversity,
        memorization=snakemake.params.memorization,
        fid=snakemake.params.fid,
        seed=snakemake.params.seed,
    )


guard_run_job(snakemake, work, stage="volumetric metrics")
