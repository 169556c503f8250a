from pathlib import Path

from pipeline_lib.imaging.demo_cohort import make_demo_cohort
from pipeline_lib.core.jobs import start_job

log = start_job(snakemake.log[0])
demo = snakemake.params.demo
table = make_demo_cohort(
    Path(snakemake.output.sheet).parent,
    n_subjects=demo["n_subjects"],
    seed=demo["seed"],
    resolution_mm=demo["resolution_mm"],
    n_scanners=demo["n_scanners"],
    dicom_fraction=demo["dicom_fraction"],
)
log.info("demo cohort: %d entries", len(table))
