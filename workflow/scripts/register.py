from pipeline_lib.core.guard import guard_subject_job, status_kind
from pipeline_lib.core.jobs import start_job

log = start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path

    from pipeline_lib.imaging.ingest import read_reference
    from pipeline_lib.imaging.registration import run_registration_job  # (ITK reads its thread count at import)

    status = run_registration_job(
        Path(snakemake.input.ingested),
        Path(snakemake.output[0]),
        snakemake.wildcards.subject,
        snakemake.params.registration,
        snakemake.params.preprocessing,
        on_bad_input=snakemake.params.on_bad_input,
        threads=snakemake.threads,
        # recorded by ingest: a param read from discovery's table would make a cluster job need the
        # checkpoint's outputs, which only the ingest job has as inputs
        sequence=read_reference(Path(snakemake.input.ingested)),
    )
    log.info("%s: %s %s", status["subject"], status["status"], status.get("reason", ""))


guard_subject_job(snakemake, work, stage="registration", kind=status_kind(snakemake.input.ingested))
