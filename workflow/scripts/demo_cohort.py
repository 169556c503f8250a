from dataclasses import asdict
from pathlib import Path

from pipeline_lib.core.jobs import start_job
from pipeline_lib.core.settings import DemoSettings, read_settings
from pipeline_lib.cohorts.demo_cohort import make_demo_cohort

log = start_job(snakemake.log[0])
table = make_demo_cohort(Path(snakemake.output.sheet).parent,
                         **asdict(read_settings(DemoSettings, snakemake.params.demo)))
log.info("demo cohort: %d entries", len(table))
