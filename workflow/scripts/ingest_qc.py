from pipeline_lib.core.io import read_tsv, write_tsv
from pipeline_lib.core.jobs import start_job
from pipeline_lib.core.private import make_owner_only
from pipeline_lib.core.qc import collect_status_table, private_qc_table, with_ignored_entries

log = start_job(snakemake.log[0])
table = with_ignored_entries(collect_status_table(snakemake.input.ingest), read_tsv(snakemake.input.ignored),
                             stage="discovery")
write_tsv(snakemake.output.table, table)
write_tsv(snakemake.output.private, private_qc_table(table, read_tsv(snakemake.input.linkage),
                                                     read_tsv(snakemake.input.ignored_private)))
make_owner_only(snakemake.output.private)
log.info("ingest QC: %s", table["status"].value_counts().to_dict())
