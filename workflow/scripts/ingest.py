import os
from pathlib import Path

from pipeline_lib.core.jobs import start_job
from pipeline_lib.core.qc import enforce_on_bad_input
from pipeline_lib.imaging.ingest import ingest_subject

log = start_job(snakemake.log[0])
status = ingest_subject(
    # Relative to the working directory, so QC tables don't expose the machine's layout.
    Path(os.path.relpath(snakemake.params.source)),
    snakemake.params.format,
    Path(snakemake.output[0]),
    snakemake.wildcards.subject,
)
log.info("%s: %s %s", status["subject"], status["status"], status.get("reason", ""))
enforce_on_bad_input(status, snakemake.params.on_bad_input)
