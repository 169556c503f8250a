from pipeline_lib.core.guard import guard_dataset_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0])


def work():
    from pathlib import Path
    from pipeline_lib.core.settings import PixelMetricsSettings, read_settings
    from pipeline_lib.evaluation.pixel_metrics import original_metrics_job

    metrics = read_settings(PixelMetricsSettings, snakemake.params.metrics)
    original_metrics_job(
        Path(snakemake.input.images),
        Path(snakemake.input.table),
        Path(snakemake.output[0]),
        sharpness_scale=metrics.sharpness_scale,
        n_original=metrics.n_original,
        seed=snakemake.params.seed,
    )


guard_dataset_job(snakemake, work, stage="pixel metrics of the real slices")
