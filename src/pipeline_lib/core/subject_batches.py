"""Subjects in batches: per-subject work (ingest, register) run a batch of subjects per job.

At biobank size the DAG itself is the cost: Snakemake spends about 1 ms of CPU per job on a login
node before any rule of ours runs (bench/results/dag_40000.md), and one ingest and one register job
per subject make 80,000 jobs at 40,000 subjects. With ``execution.subject_batches: B`` the
per-subject stages run as B batch jobs each (rules ``ingest_batch``, ``register_batch``): every
subject still works under its own guard (core/guard.guard_subject_batch) and writes the same
folder, ``results/<stage>/<subject>/``, with the same content as its own job would.

Which batch a subject belongs to depends on its pseudonym and B only (:func:`batch_of`: a hash of
the pseudonym modulo B), never on the other subjects: adding a subject changes one batch's subject
list, so only that batch reruns. The price: batch sizes are not equal (binomial around N / B; at
40,000 subjects in 800 batches, 50 +- 7), they grow as the cohort grows (each batch's memory and
time request is computed from its own subjects), and changing B reassigns every subject (choose it
once for a study: about N / 50).

A batch job's declared output is its manifest, ``results/batches/<stage>/<batch>.subjects.tsv``:
one row per subject with its folder and status, written last. Rules downstream take the manifests
as input (the DAG stays small) and read the folders they list (:func:`subject_folders`, called by
core/qc's readers), in the same subject order as the per-subject folders they get without batches.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import pandas as pd

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.io import write_tsv

#: A batch manifest's name ends so; any other input path is a subject's own folder.
MANIFEST_SUFFIX = ".subjects.tsv"
MANIFEST_COLUMNS = ["subject", "folder", "status"]


def batch_of(subject: str, n_batches: int) -> str:
    """The batch of ``subject`` among ``n_batches``: ``b<index>``, zero-padded to the width of the
    largest index so that the names sort as the numbers do."""
    if n_batches < 1:
        raise InputError(f"execution.subject_batches must be at least 1 to batch subjects, got {n_batches}")
    digest = hashlib.sha256(subject.encode("utf-8")).digest()
    index = int.from_bytes(digest[:8], "big") % n_batches
    return f"b{index:0{len(str(n_batches - 1))}d}"


def assign_batches(subjects: Iterable[str], n_batches: int) -> dict[str, list[str]]:
    """batch -> its subjects (sorted), for the batches that have any, in name order."""
    batches: dict[str, list[str]] = {}
    for subject in sorted(subjects):
        batches.setdefault(batch_of(subject, n_batches), []).append(subject)
    return dict(sorted(batches.items()))


def is_manifest(path: str | Path) -> bool:
    return str(path).endswith(MANIFEST_SUFFIX)


def write_manifest(path: str | Path, rows: list[dict]) -> None:
    """The batch's manifest (atomically): subject, folder (as the rules name it), status."""
    write_tsv(path, pd.DataFrame(rows, columns=MANIFEST_COLUMNS))


def read_manifest(path: str | Path) -> pd.DataFrame:
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = sorted(set(MANIFEST_COLUMNS) - set(frame.columns))
    if missing:
        raise InputError(f"{path}: not a subject batch manifest (missing column(s) {', '.join(missing)})")
    return frame


def subject_folders(paths: Iterable[str | Path]) -> list[str | Path]:
    """Per-subject folders from a rule's input: subject folders are passed through as they are;
    batch manifests become the folders they list, and then every folder is ordered by subject, as
    the per-subject inputs are (so slicing's split and the QC tables come out the same)."""
    paths = list(paths)
    if not any(is_manifest(path) for path in paths):
        return paths
    folders = []
    for path in paths:
        folders += list(read_manifest(path)["folder"]) if is_manifest(path) else [str(path)]
    return sorted(folders, key=lambda folder: Path(folder).name)
