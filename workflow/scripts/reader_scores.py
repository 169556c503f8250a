from pathlib import Path

from pipeline_lib.core.jobs import start_job
from pipeline_lib.reader_study.scoring import TABLE_NAMES, reader_scores_job

start_job(snakemake.log[0])
reader_scores_job(
    Path(snakemake.input.key),
    [Path(p) for p in snakemake.input.responses],
    scores_json=Path(snakemake.output.scores),
    tables={name: Path(snakemake.output[name]) for name in TABLE_NAMES},
    positive_class=snakemake.params.positive_class,
)
