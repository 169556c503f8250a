from pipeline_lib.core.guard import guard_dataset_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path
    from pipeline_lib.evaluation.domain_features import domain_network_job

    domain_network_job(
        Path(snakemake.input.images),
        Path(snakemake.input.table),
        out_network=Path(snakemake.output.network),
        out_summary=Path(snakemake.output.summary),
        settings=snakemake.params.settings,
        threads=snakemake.threads,
    )


guard_dataset_job(snakemake, work, stage="the domain network")
