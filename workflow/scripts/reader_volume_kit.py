from pipeline_lib.core.guard import guard_dataset_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0])


def work():
    from pathlib import Path
    from pipeline_lib.reader_study.volume_kit import volume_kit_job

    volume_kit_job(
        Path(snakemake.input.volumes),
        Path(snakemake.input.table),
        Path(snakemake.input.grid),
        list(snakemake.input.samples),
        snakemake.params.models,
        snakemake.params.study,
        kit_dir=Path(snakemake.output.kit),
        answer_key=Path(snakemake.output.key),
        summary=Path(snakemake.output.summary),
    )


# Only the volume dataset's own files fail the kit: a failed run's volumes are left out of it (volume_kit.py).
guard_dataset_job(snakemake, work, stage="the reader-study volume kit",
                  upstream=[snakemake.input.volumes, snakemake.input.table], folders=[snakemake.output.kit])
