from pipeline_lib.core.guard import guard_dataset_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0])


def work():
    from pathlib import Path
    from pipeline_lib.reader_study.kit import reader_kit_job

    reader_kit_job(
        Path(snakemake.input.images),
        Path(snakemake.input.table),
        list(snakemake.input.samples),
        list(snakemake.input.labels),
        snakemake.params.models,
        snakemake.params.study,
        kit_dir=Path(snakemake.output.kit),
        answer_key=Path(snakemake.output.key),
        summary=Path(snakemake.output.summary),
    )


# Only the dataset's own slices fail the kit: a failed run's samples are left out of it (kit.py).
guard_dataset_job(snakemake, work, stage="the reader-study kit",
                  upstream=[snakemake.input.images, snakemake.input.table], folders=[snakemake.output.kit])
