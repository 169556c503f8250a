from pipeline_lib.core.jobs import start_job
from pipeline_lib.core.qc import collect_status_table
from pipeline_lib.core.io import write_tsv

log = start_job(snakemake.log[0])
# worst first: failed, skipped, flagged, then by brain-mask overlap with the template
write_tsv(snakemake.output.registration,
          collect_status_table(snakemake.input.register, qc_file="qc.json", worst_first_by="mask_dice"))
