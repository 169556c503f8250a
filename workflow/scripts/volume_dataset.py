from pipeline_lib.core.guard import guard_dataset_job
from pipeline_lib.core.jobs import start_job

log = start_job(snakemake.log[0])


def work():
    from pathlib import Path

    import pandas as pd

    from pipeline_lib.core.volumes import VolumeDatasetSettings
    from pipeline_lib.imaging.slicing import subject_volumes
    from pipeline_lib.imaging.volumes import build_volume_dataset

    labels = pd.read_csv(snakemake.input.subjects, sep="\t", dtype=str, keep_default_na=False)
    volumes = subject_volumes(snakemake.input.registered, snakemake.params.on_poor_fit, labels)
    table = build_volume_dataset(
        volumes,
        labels,
        Path(snakemake.output.volumes),
        Path(snakemake.output.table),
        Path(snakemake.output.grid),
        VolumeDatasetSettings(**snakemake.params.dataset),
    )
    log.info("volume dataset %s: %d volumes from %d subjects", snakemake.wildcards.volume_dataset, len(table),
             len(volumes))


guard_dataset_job(snakemake, work, stage="building the volume dataset")
