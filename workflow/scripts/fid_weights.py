from pathlib import Path

from pipeline_lib.evaluation.fid import fid_weights_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0])
fid_weights_job(Path(snakemake.output[0]))
