from pipeline_lib.core.guard import guard_dataset_job, guard_run_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path
    from pipeline_lib.core.settings import SamplingSettings, read_settings
    from pipeline_lib.evaluation.diversity import model_diversity_job, original_diversity_job

    # Without a samples input this is the "original" row (pairs of real test slices).
    if hasattr(snakemake.input, "samples"):
        sampling = read_settings(SamplingSettings, snakemake.params.sampling)
        model_diversity_job(
            Path(snakemake.input.samples),
            Path(snakemake.input.reconstructions),
            Path(snakemake.input.images),
            Path(snakemake.input.table),
            Path(snakemake.output[0]),
            settings=snakemake.params.settings,
            n_reconstruct=sampling.n_reconstruct,
            seed=sampling.seed,
        )
    else:
        original_diversity_job(
            Path(snakemake.input.images),
            Path(snakemake.input.table),
            Path(snakemake.output[0]),
            settings=snakemake.params.settings,
        )


# The per-run rule and the per-dataset reference row are both guarded.
if hasattr(snakemake.input, "samples"):
    guard_run_job(snakemake, work, stage="diversity metrics")
else:
    guard_dataset_job(snakemake, work, stage="diversity of the real slices")
