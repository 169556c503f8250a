from pipeline_lib.core.guard import guard_run_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0])


def work():
    from pathlib import Path
    from pipeline_lib.core.settings import PixelMetricsSettings, SamplingSettings, read_settings
    from pipeline_lib.evaluation.pixel_metrics import model_metrics_job

    metrics = read_settings(PixelMetricsSettings, snakemake.params.metrics)
    sampling = read_settings(SamplingSettings, snakemake.params.sampling)
    model_metrics_job(
        Path(snakemake.input.samples),
        Path(snakemake.input.reconstructions),
        Path(snakemake.input.images),
        Path(snakemake.input.table),
        Path(snakemake.output[0]),
        sharpness_scale=metrics.sharpness_scale,
        n_reconstruct=sampling.n_reconstruct,
        seed=sampling.seed,
    )


guard_run_job(snakemake, work, stage="pixel metrics")
