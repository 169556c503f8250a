from pipeline_lib.core.guard import guard_dataset_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0])


def work():
    from pathlib import Path
    from pipeline_lib.reader_study.scoring import TABLE_NAMES, reader_scores_job

    reader_scores_job(
        Path(snakemake.input.key),
        [Path(p) for p in snakemake.input.responses],
        scores_json=Path(snakemake.output.scores),
        tables={name: Path(snakemake.output[name]) for name in TABLE_NAMES},
        positive_class=snakemake.params.positive_class,
    )


# A failed kit (its dataset's slices failed, or the kit job died) has no answer key to score against.
guard_dataset_job(snakemake, work, stage="scoring the reader study", upstream=[snakemake.input.key])
