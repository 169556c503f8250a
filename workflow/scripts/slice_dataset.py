from pipeline_lib.core.guard import guard_dataset_job
from pipeline_lib.core.jobs import start_job

log = start_job(snakemake.log[0])


def work():
    from pathlib import Path

    import pandas as pd

    from pipeline_lib.imaging.slicing import SliceSpec, build_slice_dataset, subject_volumes

    labels = pd.read_csv(snakemake.input.subjects, sep="\t", dtype=str, keep_default_na=False)
    volumes = subject_volumes(snakemake.input.registered, snakemake.params.on_poor_fit, labels)
    table = build_slice_dataset(
        volumes,
        labels,
        Path(snakemake.output.images),
        Path(snakemake.output.table),
        SliceSpec.from_settings(snakemake.params.dataset),
        out_volumes=Path(snakemake.output.volumes),
        out_volume_index=Path(snakemake.output.volume_index),
    )
    log.info("dataset %s: %d slices from %d subjects", snakemake.wildcards.dataset, len(table), len(volumes))


guard_dataset_job(snakemake, work, stage="slicing")
