from pipeline_lib.core.guard import guard_dataset_job, guard_run_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path
    from pipeline_lib.evaluation.domain_features import domain_metrics_job

    # Without a samples input this is the "original" row (real test slices).
    samples = getattr(snakemake.input, "samples", None)
    domain_metrics_job(
        Path(snakemake.input.network),
        Path(snakemake.input.images),
        Path(snakemake.input.table),
        Path(snakemake.output[0]),
        settings=snakemake.params.settings,
        samples=Path(samples) if samples else None,
        threads=snakemake.threads,
    )


# The per-run rule and the per-dataset reference row are both guarded.
if hasattr(snakemake.input, "samples"):
    guard_run_job(snakemake, work, stage="domain-feature metrics")
else:
    guard_dataset_job(snakemake, work, stage="domain-feature metrics of the real slices")
