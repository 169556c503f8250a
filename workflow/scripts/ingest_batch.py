from pipeline_lib.core.guard import guard_subject_batch
from pipeline_lib.core.jobs import start_job

log = start_job(snakemake.log[0])
# pseudonym -> its staging link, format, kind, reference sequence and output folder
subjects = snakemake.params.subjects


def work(subject):
    from pipeline_lib.core.qc import enforce_on_bad_input
    from pipeline_lib.imaging.ingest import ingest_job

    given = subjects[subject]
    status = ingest_job(given["staged"], given["format"], given["folder"], subject, kind=given["kind"],
                        reference=given["reference"], settings=snakemake.params.ingest)
    log.info("%s (%s): %s %s %s", status["subject"], status["kind"], status["status"], status["reason"],
             status["warning"])
    enforce_on_bad_input(status, snakemake.params.on_bad_input)


rows = guard_subject_batch(snakemake, sorted(subjects), work, stage="ingest",
                           out_dir=lambda subject: subjects[subject]["folder"],
                           kind=lambda subject: subjects[subject]["kind"])

from pipeline_lib.core.subject_batches import write_manifest  # noqa: E402 (after the subjects: the guard's parent stays small)

write_manifest(snakemake.output.manifest, rows)
