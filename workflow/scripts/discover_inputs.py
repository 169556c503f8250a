import os
from pathlib import Path

from pipeline_lib.core.io import write_tsv
from pipeline_lib.core.jobs import start_job
from pipeline_lib.core.private import make_owner_only, private_folder
from pipeline_lib.imaging.discovery import discover_inputs, write_staging
from pipeline_lib.imaging.pseudonym import project_salt

log = start_job(snakemake.log[0])
schema = Path(snakemake.scriptdir).parent / "schemas" / "samples.schema.yaml"
# The input is a link to input.source (or the demo's sheet): its real path is read here
# and nowhere else, so no rule input, parameter or log line holds a folder name.
source = Path(os.path.realpath(snakemake.input.source))
# the DAG chose the salt (and wrote a generated one to private/ already); this reads the same
salt, _ = project_salt(snakemake.config["privacy"]["pseudonym_salt"], snakemake.config["input"]["source"])
private_folder(Path(snakemake.output.linkage).parent)
found = discover_inputs(source, salt, schema,
                        layout=snakemake.config["input"],
                        reference_sequence=snakemake.config["registration"].get("reference_sequence"))
write_tsv(snakemake.output.linkage, found.linkage)
write_tsv(snakemake.output.ignored_private, found.ignored)
write_tsv(snakemake.output.subjects, found.subjects)
write_tsv(snakemake.output.ignored, found.public_ignored())
# Jobs run in the working directory: inputs inside it are linked relatively (the run can move).
write_staging(found, Path(snakemake.output.staging), run_folder=Path.cwd())
make_owner_only(snakemake.output.linkage, snakemake.output.ignored_private, snakemake.output.staging)
log.info("discovered %d subjects; %d entries ignored (listed with kind and reason in %s)",
         len(found.subjects), len(found.ignored), snakemake.output.ignored)
