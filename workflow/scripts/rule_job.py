# The adapter of every rule whose params name a library function (params.job): see
# pipeline_lib/core/rule_jobs.py for how inputs, outputs and params reach it.
from pipeline_lib.core.rule_jobs import run_rule_job

run_rule_job(snakemake)
