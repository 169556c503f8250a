from pipeline_lib.core.guard import guard_run_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path
    from pipeline_lib.core.settings import runtime_settings
    from pipeline_lib.evaluation.volumetric import volumetric_job

    volumetric_job(
        Path(snakemake.input.samples),
        Path(snakemake.input.volumes),
        Path(snakemake.input.table),
        Path(snakemake.input.grid),
        Path(snakemake.input.weights),
        out_json=Path(snakemake.output.metrics),
        out_png=Path(snakemake.output.views),
        sharpness_scale=snakemake.params.sharpness_scale,
        n_pairs=snakemake.params.n_pairs,
        kernel_size=snakemake.params.kernel_size,
        percentile=snakemake.params.percentile,
        seed=snakemake.params.seed,
        # device, batch size, memory format: they change no result (not params)
        fid=runtime_settings(snakemake.config, "evaluation.fid"),
        labels=Path(snakemake.input.labels),
        covariates=snakemake.params.covariates,
    )


guard_run_job(snakemake, work, stage="volumetric metrics")
