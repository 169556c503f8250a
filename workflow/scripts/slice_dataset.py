from pathlib import Path

import pandas as pd

from pipeline_lib.core.jobs import start_job
from pipeline_lib.core.settings import SlicingSettings, read_settings
from pipeline_lib.imaging.slicing import build_slice_dataset, volumes_to_slice

log = start_job(snakemake.log[0])
registered = volumes_to_slice(snakemake.input.registered, snakemake.params.on_poor_fit)
labels = pd.read_csv(snakemake.input.subjects, sep="\t", dtype=str, keep_default_na=False)
slicing = read_settings(SlicingSettings, snakemake.params.slicing)
table = build_slice_dataset(
    registered,
    labels,
    Path(snakemake.output.images),
    Path(snakemake.output.table),
    drop_top=slicing.drop_top,
    drop_bottom=slicing.drop_bottom,
    clip_percentile=slicing.clip_percentile,
    image_size=slicing.image_size,
    test_fraction=slicing.test_fraction,
    seed=slicing.split_seed,
)
log.info("%d slices from %d subjects", len(table), len(registered))
