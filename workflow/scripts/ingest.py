from pipeline_lib.core.guard import guard_subject_job
from pipeline_lib.core.jobs import start_job

log = start_job(snakemake.log[0])


def work():
    from pathlib import Path

    from pipeline_lib.core.qc import enforce_on_bad_input
    from pipeline_lib.imaging.ingest import ingest_other_sequences, ingest_subject, write_reference

    status = ingest_subject(
        # the staging link, private/staging/<pseudonym>/input: the source's path is never seen here
        Path(snakemake.params.staged),
        snakemake.params.format,
        Path(snakemake.output[0]),
        snakemake.wildcards.subject,
        kind=snakemake.params.kind,
        settings=snakemake.params.ingest,
    )
    # the subject's other sequences and masks (input.layout), staged beside its input
    status = ingest_other_sequences(Path(snakemake.params.staged).parent, Path(snakemake.output[0]), status,
                                    settings=snakemake.params.ingest)
    write_reference(Path(snakemake.output[0]), snakemake.params.reference)
    log.info("%s (%s): %s %s %s", status["subject"], status["kind"], status["status"], status["reason"],
             status["warning"])
    enforce_on_bad_input(status, snakemake.params.on_bad_input)


guard_subject_job(snakemake, work, stage="ingest", kind=snakemake.params.kind)
