from pathlib import Path

import pandas as pd

from pipeline_lib.core.jobs import start_job
from pipeline_lib.core.qc import successful_outputs
from pipeline_lib.imaging.slicing import build_slice_dataset

log = start_job(snakemake.log[0])
registered = successful_outputs(snakemake.input.registered, "registered.nii.gz")
labels = pd.read_csv(snakemake.input.subjects, sep="\t", dtype=str, keep_default_na=False)
s = snakemake.params.slicing
table = build_slice_dataset(
    registered,
    labels,
    Path(snakemake.output.images),
    Path(snakemake.output.table),
    drop_top=s["drop_top"],
    drop_bottom=s["drop_bottom"],
    clip_percentile=s["clip_percentile"],
    image_size=s["image_size"],
    test_fraction=s["test_fraction"],
    seed=s["split_seed"],
)
log.info("%d slices from %d subjects", len(table), len(registered))
