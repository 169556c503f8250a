from pipeline_lib.core.guard import guard_subject_batch, status_kind
from pipeline_lib.core.jobs import start_job

log = start_job(snakemake.log[0], snakemake.threads)
# pseudonym -> its ingest folder, and its output folder
ingested = snakemake.params.ingested
folders = snakemake.params.folders


def work(subject):
    from pathlib import Path

    from pipeline_lib.imaging.ingest import read_reference
    from pipeline_lib.imaging.registration import run_registration_job  # (ITK reads its thread count at import)

    status = run_registration_job(
        Path(ingested[subject]), Path(folders[subject]), subject, snakemake.params.registration,
        snakemake.params.preprocessing, on_bad_input=snakemake.params.on_bad_input, threads=snakemake.threads,
        sequence=read_reference(Path(ingested[subject])))
    log.info("%s: %s %s", status["subject"], status["status"], status.get("reason", ""))


rows = guard_subject_batch(snakemake, sorted(folders), work, stage="registration",
                           out_dir=lambda subject: folders[subject],
                           kind=lambda subject: status_kind(ingested[subject]))

from pipeline_lib.core.subject_batches import write_manifest  # noqa: E402 (after the subjects: the guard's parent stays small)

write_manifest(snakemake.output.manifest, rows)
