from pathlib import Path

from pipeline_lib.imaging.discovery import discover_inputs
from pipeline_lib.core.io import write_tsv
from pipeline_lib.core.jobs import start_job

log = start_job(snakemake.log[0])
schema = Path(snakemake.scriptdir).parent / "schemas" / "samples.schema.yaml"
linkage, subjects = discover_inputs(
    Path(snakemake.input[0]), snakemake.config["privacy"]["pseudonym_salt"], schema
)
write_tsv(snakemake.output.linkage, linkage)
write_tsv(snakemake.output.subjects, subjects)
log.info("discovered %d subjects", len(subjects))
