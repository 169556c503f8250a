"""Which discovered subjects a dataset's label filters can use, checked when the DAG is built.

Slicing applies ``datasets.<name>.filters`` to the registered volumes; checking them against
discovery's subjects.tsv first means a filter that fits no subject (Han et al.'s ``grade: HGG`` on
BraTS 2021, which has no grade) stops the run before a single subject is registered. Light on
imports on purpose: the Snakefile calls it while building the DAG.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.imaging.sequences import DEFAULT_SEQUENCE

# ingestion bookkeeping, not labels; a source path or key may identify a patient. A subject's
# ``sequence`` label is not copied: each slice carries its own volume's sequence.
# "sequence" is set per sliced volume; "sequences" and "mask" list what a multi-sequence subject has
# (discovery's bookkeeping, not a class of the subject).
NOT_LABELS = {"subject", "format", "kind", "path", "source_key", "exists", "sequence", "sequences", "mask"}


def check_filters_against_subjects(dataset: str, filters: Mapping[str, tuple[str, ...]],
                                  subjects: pd.DataFrame, layout: str = "auto") -> None:
    """Raise InputError, naming ``datasets.<dataset>.filters.<column>``, when the discovered
    subjects (subjects.tsv) cannot give the dataset a volume: a filtered label that no subject
    has, or no subject whose labels and sequences pass. Run when the DAG is built after discovery,
    so a preset's filter that does not fit the cohort stops the run before any subject is registered."""
    columns = [c for c in subjects.columns if c not in NOT_LABELS]
    for column in filters:
        if column == "sequence":
            continue
        present = column in subjects.columns and (subjects[column].astype(str) != "").any()
        if present:
            continue
        if column == "grade" and layout == "brats":
            raise InputError(
                f"datasets.{dataset}.filters.grade: the BraTS cohort at input.source has no grade (no "
                "HGG/LGG folders and no name_mapping.csv with a Grade column, as in BraTS 2021 and "
                "later, whose cases are all gliomas without a grade). Remove the filter, give every case "
                "one grade with --config 'input={labels: {grade: HGG}}' if that is true of the cohort, or "
                "put a name_mapping.csv with the columns Grade and BraTS_<year>_subject_ID (the case "
                "folder names) in input.source")
        raise InputError(f"datasets.{dataset}.filters.{column}: no discovered subject has the label "
                         f"{column} (labels: {', '.join(['sequence', *columns])})")
    for row in subjects.to_dict("records"):
        if any(str(row.get(column, "")) not in wanted for column, wanted in filters.items() if column != "sequence"):
            continue
        sequences = [s for s in str(row.get("sequences", "")).split(",") if s] \
            or [str(row.get("sequence", "")) or DEFAULT_SEQUENCE]
        if "sequence" not in filters or set(sequences) & set(filters["sequence"]):
            return
    raise InputError(f"datasets.{dataset}.filters: no discovered subject passes {dict(filters)} "
                     "(see results/inputs/subjects.tsv for the labels and sequences found)")
