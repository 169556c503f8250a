"""Cohort generators and test corpora: inputs made for the pipeline, not a stage of it.

- ``demo_cohort``: the demo's synthetic cohort (MNI152 head phantoms as NIfTI and DICOM, one
  corrupt file, one wrong voxel size), written by the ``demo_cohort`` rule;
- ``standin``: each study preset's stand-in cohort, shaped like that paper's data on disk;
- ``hostile_corpus``: bad and awkward inputs, each with the decision ingest must reach, and the
  scorecard in docs/HOSTILE_INPUTS.md;
- ``ground_truth``: a head moved by known affines, for checking registration against the truth.

They build inputs and run stage 1 (``imaging``) over them, so they may import ``core`` and
``imaging``; no stage imports them (docs/ARCHITECTURE.md, tests/test_architecture.py).
"""
