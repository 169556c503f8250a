from pipeline_lib.core.guard import guard_subject_job
from pipeline_lib.core.jobs import start_job

log = start_job(snakemake.log[0])


def work():
    from pipeline_lib.core.qc import enforce_on_bad_input
    from pipeline_lib.imaging.ingest import ingest_job

    status = ingest_job(snakemake.params.staged, snakemake.params.format, snakemake.output[0],
                        snakemake.wildcards.subject, kind=snakemake.params.kind,
                        reference=snakemake.params.reference, settings=snakemake.params.ingest)
    log.info("%s (%s): %s %s %s", status["subject"], status["kind"], status["status"], status["reason"],
             status["warning"])
    enforce_on_bad_input(status, snakemake.params.on_bad_input)


guard_subject_job(snakemake, work, stage="ingest", kind=snakemake.params.kind)
