"""The report's inputs: every file the report rule names, read into :class:`ReportData`.

A training run's files arrive under the report rule's per-run input names (``RUN_INPUTS`` in
``workflow/rules/report.smk``), as one :class:`ModelOutputs` per run. The names in
:data:`FILE_INPUTS` are files the page reads by path (images, tables, arrays); every other name is
a JSON record that :meth:`Run.read` loads and the run exposes under that name (``run.metrics``,
``run.diversity``, …). A new per-run metric is therefore one named input of the report rule and one
section that reads ``run.<name>`` (or ``ReportData.records("<name>")``); nothing here changes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from pipeline_lib.core.figures import save_grid, save_pairs
from pipeline_lib.core.io import read_json, read_tsv
from pipeline_lib.core.published import ProtocolItem, PublishedTable, load_protocol, load_published, published_path
from pipeline_lib.core.qc import FLAGGED, OK, outputs_with_status
from pipeline_lib.core.settings import PreprocessingSettings, RegistrationSettings, SamplingSettings, read_settings
from pipeline_lib.core.slices import grey_images, image_channels, load_split, load_table
from pipeline_lib.report.failures_section import split_failed_datasets, split_failed_runs

#: Per-run inputs the page reads by path; every other per-run input is a JSON record.
FILE_INPUTS = frozenset({"losses", "grid", "reconstructions", "gallery", "validation", "snapshots"})
#: The same for a 3-D run's volumetric inputs (report.smk's REPORT_VOLUME_RUN_INPUTS).
VOLUME_FILE_INPUTS = frozenset({"volumetric_views"})


class ModelOutputs:
    """What the report reads of one training run (a model with one seed), by the report rule's
    per-run input names: ``ModelOutputs(summary=..., grid=..., metrics=...)``; ``files.grid`` is a path."""

    def __init__(self, **paths: str | Path) -> None:
        taken = sorted(set(paths) & {"paths", "records"})
        if taken:  # they would hide the attributes of the same name
            raise ValueError(f"per-run input names {taken} are reserved; rename them in report.smk")
        self.paths: dict[str, Path] = {name: Path(path) for name, path in paths.items()}

    def __getattr__(self, name: str) -> Path:
        paths = self.__dict__.get("paths", {})
        if name in paths:
            return paths[name]
        raise AttributeError(f"the report rule has no per-run input {name!r} (it has: {', '.join(paths) or 'none'})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelOutputs) and self.paths == other.paths

    def __repr__(self) -> str:
        return f"ModelOutputs({', '.join(f'{k}={str(v)!r}' for k, v in self.paths.items())})"

    def records(self, file_inputs: frozenset[str] = FILE_INPUTS) -> dict[str, Path]:
        """name → path of every JSON record of the run (the inputs not in ``file_inputs``)."""
        return {name: path for name, path in self.paths.items() if name not in file_inputs}


@dataclass(frozen=True)
class DatasetOutputs:
    """What the report reads of one slice dataset: its slices and its real reference outputs (a
    reference output that failed is None once report/failures_section.split_failed_datasets has
    set it aside)."""

    table: Path
    images: Path
    original: Path
    distribution_original: Path
    domain_network: Path
    domain_original: Path
    diversity_original: Path
    reader_scores: Path | None = None


@dataclass(frozen=True)
class ReportInputs:
    """Every file the report reads, by name; ``models`` maps each model (in the report's order) to
    its runs, seed → that run's files; ``datasets`` each slice dataset's files, and
    ``model_datasets`` the dataset each model trains on (default: the first dataset); ``reader_responses``
    and ``reader_kits`` the reader study's folders, named on the page (neither is read)."""

    subjects: Path
    ingest_qc: Path
    registration_qc: Path
    registered: Sequence[Path]
    datasets: Mapping[str, DatasetOutputs]
    models: Mapping[str, Mapping[int, ModelOutputs]]
    model_datasets: Mapping[str, str] = field(default_factory=dict)
    #: dataset → the folder its readers' answer files go into, and the folder of its reader kit.
    reader_responses: Mapping[str, str] = field(default_factory=dict)
    reader_kits: Mapping[str, str] = field(default_factory=dict)
    #: 3-D runs (VOLUME_RUNS): model → seed → the run's volumetric files (report.smk's
    #: REPORT_VOLUME_RUN_INPUTS: ``volumetric``, a record, and ``volumetric_views``, a figure).
    volume_runs: Mapping[str, Mapping[int, ModelOutputs]] = field(default_factory=dict)



@dataclass(frozen=True)
class Run:
    """One training run: its files and its JSON records, each under its input name (``run.metrics``)."""

    seed: int
    files: ModelOutputs
    #: input name → the parsed JSON record (every per-run input not in :data:`FILE_INPUTS`).
    records: Mapping[str, dict]

    def __getattr__(self, name: str) -> dict:
        records = self.__dict__.get("records", {})
        if name in records:
            return records[name]
        raise AttributeError(f"the run has no record {name!r} (the report rule's per-run JSON inputs: "
                             f"{', '.join(records) or 'none'})")

    @property
    def incomplete(self) -> bool:
        return bool(self.summary.get("incomplete"))

    def with_record(self, name: str, record: dict) -> "Run":
        return dataclasses.replace(self, records={**self.records, name: record})

    @classmethod
    def read(cls, seed: int, files: ModelOutputs, file_inputs: frozenset[str] = FILE_INPUTS) -> "Run":
        return cls(seed=int(seed), files=files,
                   records={name: read_json(path) for name, path in files.records(file_inputs).items()})


@dataclass
class ReportData:
    """Everything a section renders from: the loaded inputs of :class:`ReportInputs`."""

    runs: dict[str, list[Run]]
    cohort: dict = field(default_factory=dict)
    ingest_qc: pd.DataFrame | None = None
    registration_qc: pd.DataFrame | None = None
    overlays: dict[str, Path] = field(default_factory=dict)
    registration_caption: str = ""
    original: dict = field(default_factory=dict)
    distribution_original: dict | None = None
    domain_network: dict | None = None
    domain_original: dict | None = None
    diversity_original: dict | None = None
    reader_scores: Path | None = None
    reconstruction_grids: dict[str, Path] = field(default_factory=dict)
    #: A grid of real test slices, shown beside the sample grids (drawn by the report job).
    real_grid: Path | None = None
    #: Where the readers' answer files go (reader_study.responses_dir, per dataset with several kits)
    #: and where the kit to send them is.
    reader_responses: str | None = None
    reader_kit: str | None = None
    synthetic_cohort: bool = False
    title: str = "Brain MRI generative models"
    provenance: dict | None = None
    #: With several slice datasets: each dataset's own data (its models' runs, its reference rows,
    #: slice counts and reader scores); the page then shows one block per dataset.
    datasets: dict[str, "ReportData"] = field(default_factory=dict)
    #: ``report.published``: the paper's tables (core/published.py), shown beside this run's values.
    published: dict[str, PublishedTable] | None = None
    #: Its ``protocol`` items (report/protocol_section.py), compared with this run's configuration.
    protocol: tuple[ProtocolItem, ...] = ()
    #: ``report.protocol_notes``: the preset's reason per protocol item id where the run differs.
    protocol_notes: dict[str, str] = field(default_factory=dict)
    #: The values of the slices' ``sequence`` column (empty without one).
    sequences: tuple[str, ...] = ()
    #: Runs that failed on their last attempt (report/failures_section.py): model, seed, stage, reason.
    failed_runs: list[dict] = field(default_factory=list)
    #: Datasets whose slices or reference rows failed (report/failures_section.py): dataset, output,
    #: stage, reason.
    failed_datasets: list[dict] = field(default_factory=list)
    #: 3-D runs by model (report/volumetric_section.py), each with its ``volumetric`` record.
    volume_runs: dict[str, list[Run]] = field(default_factory=dict)

    @property
    def grouped(self) -> bool:
        return len(self.datasets) > 1

    def records(self, kind: str) -> dict[str, list[dict]]:
        """model → the ``kind`` record (``metrics``, ``distribution``, …) of each of its runs."""
        return {model: [getattr(run, kind) for run in runs] for model, runs in self.runs.items()}

    def first_runs(self) -> dict[str, Run]:
        """The first seed's run of every model: what the page shows images of."""
        return {model: runs[0] for model, runs in self.runs.items() if runs}



def nested(record: Mapping, *path: str) -> Any:
    """``record[path[0]][path[1]]…``, None where a step is missing or not a mapping."""
    node: Any = record
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


# ---------------------------------------------------------------- reading the report rule's files


def load_report_data(inputs: ReportInputs, *, registration: RegistrationSettings | Mapping,
                     sampling: SamplingSettings | Mapping, synthetic_cohort: bool, title: str,
                     provenance: Mapping | None, workdir: Path,
                     preprocessing: PreprocessingSettings | Mapping | None = None,
                     published: str | Path | None = None,
                     protocol_notes: Mapping[str, str] | None = None) -> ReportData:
    """Read every input of the report; ``workdir`` receives the reconstruction grids drawn here.
    With several datasets the result holds one :class:`ReportData` per dataset in ``datasets``."""
    registration = read_settings(RegistrationSettings, registration)
    preprocessing = read_settings(PreprocessingSettings, preprocessing)
    sampling = read_settings(SamplingSettings, sampling)
    subjects = read_tsv(inputs.subjects)
    ingest_qc = read_tsv(inputs.ingest_qc)
    registration_qc = read_tsv(inputs.registration_qc)
    cohort = {
        "subjects_found": len(subjects),
        "input_entries_ignored": int((ingest_qc["status"] == "ignored").sum()),
        "subjects_ingested": int((ingest_qc["status"] == "ok").sum()),
        "subjects_registered": int((registration_qc["status"] == OK).sum()),
        "subjects_flagged": int((registration_qc["status"] == FLAGGED).sum()),
        "subjects_failed": int((~registration_qc["status"].isin([OK, FLAGGED])).sum()),
    }
    models, failed_runs = split_failed_runs(inputs.models)
    runs = {model: [Run.read(seed, files) for seed, files in sorted(by_seed.items())]
            for model, by_seed in models.items()}
    volume_models, failed_volume_runs = split_failed_runs(inputs.volume_runs)
    failed_runs += failed_volume_runs
    volume_runs = {model: [Run.read(seed, files, VOLUME_FILE_INPUTS) for seed, files in sorted(by_seed.items())]
                   for model, by_seed in volume_models.items()}
    names = list(inputs.datasets)
    datasets, failed_datasets = split_failed_datasets(inputs.datasets)
    shared = dict(
        ingest_qc=ingest_qc[["subject", "kind", "status", "reason", "warning"]],
        registration_qc=_registration_view(registration_qc),
        overlays={s: p.parent / "overlay.png"
                  for s, p in outputs_with_status(inputs.registered, "qc.json", (OK, FLAGGED)).items()},
        registration_caption=registration_gate_text(registration),
        synthetic_cohort=synthetic_cohort, title=title, failed_runs=failed_runs, failed_datasets=failed_datasets,
        volume_runs=volume_runs,
        provenance=dict(provenance) if provenance is not None else None,
        published=load_published(published_path(published)) if published else None,
        protocol=load_protocol(published_path(published)) if published else (),
        protocol_notes=dict(protocol_notes or {}))
    parts = {}
    for name, files in datasets.items():
        models = [m for m in runs if inputs.model_datasets.get(m, names[0]) == name]
        reader = dict(reader_responses=inputs.reader_responses.get(name), reader_kit=inputs.reader_kits.get(name))
        parts[name] = _dataset_data(files, {m: runs[m] for m in models}, cohort, registration, preprocessing,
                                    sampling, Path(workdir) / name, {**shared, **reader})
    if not parts:  # every dataset failed: the page still lists the cohort and what failed
        return ReportData(runs={}, cohort=cohort, **shared)
    if len(parts) == 1:
        return next(iter(parts.values()))
    first = next(iter(parts.values()))
    return dataclasses.replace(first, runs=runs, datasets=parts,
                               reconstruction_grids={k: v for p in parts.values() for k, v in p.reconstruction_grids.items()})


def _dataset_data(files: DatasetOutputs, runs: dict[str, list[Run]], cohort: Mapping,
                  registration: RegistrationSettings, preprocessing: PreprocessingSettings,
                  sampling: SamplingSettings, workdir: Path, shared: Mapping) -> ReportData:
    """One dataset's part of the report: its slices, reference rows, reader scores and models."""
    table = load_table(Path(files.table))
    images = np.load(files.images, mmap_mode="r")
    height, width = images.shape[-2:]
    channels = image_channels(images, table)
    real = table["augmented"].astype(str) != "1" if "augmented" in table.columns else True
    cohort = {**cohort,
              "slices_train": int(((table["split"] == "train") & real).sum()),
              "slices_test": int((table["split"] == "test").sum()),
              "image_size": int(width) if height == width else f"{int(height)} × {int(width)}",
              "registration": registration_summary(registration, preprocessing)}
    if "augmented" in table.columns and not np.all(real):
        cohort["slices_train_augmented"] = int((~real).sum())
    if channels:
        cohort["channels"] = (f"{', '.join(channels)}: each image stacks these {len(channels)} sequences as channels "
                              "(models generate them together); every metric pools the channels as grey images, "
                              "like Han et al.'s \"Concat\" dataset")
    sequences = tuple(sorted(set(table["sequence"].astype(str)) - {"", "nan"})) if "sequence" in table.columns else ()
    if channels:
        sequences = tuple(channels)
    workdir.mkdir(parents=True, exist_ok=True)
    real_grid = real_slices_grid(Path(files.images), Path(files.table), sampling.seed, workdir / "real_slices.png")
    reconstruction_grids = {}
    first = {m: r[0] for m, r in runs.items() if r and np.load(r[0].files.reconstructions, mmap_mode="r").shape[0]}
    if first:
        test_images, _ = load_split(Path(files.images), Path(files.table), "test",
                                    n=sampling.n_reconstruct, seed=sampling.seed, grey=True)
        for model, run in first.items():
            reconstruction_grids[f"{model} (seed {run.seed})"] = workdir / f"{model}.png"
            save_pairs(test_images, grey_images(np.load(run.files.reconstructions)), workdir / f"{model}.png")
    return ReportData(
        runs=runs, cohort=cohort, **shared,
        # a reference output that failed is None (report/failures_section.split_failed_datasets)
        original=_reference(files.original) or {},
        distribution_original=_reference(files.distribution_original),
        domain_network=_reference(files.domain_network),
        domain_original=_reference(files.domain_original),
        diversity_original=_reference(files.diversity_original),
        reader_scores=Path(files.reader_scores) if files.reader_scores else None,
        reconstruction_grids=reconstruction_grids, sequences=sequences, real_grid=real_grid)


def _reference(path: Path | None) -> dict | None:
    return read_json(path) if path is not None else None


#: As many real slices as a sample grid shows (core.figures.save_grid's default).
REAL_GRID_IMAGES = 64


def real_slices_grid(images: Path, table: Path, seed: int, out_png: Path) -> Path:
    """A grid of real test slices drawn like the models' sample grids (stacked sequences side by side),
    reading only the slices shown from the memory-mapped stack."""
    real, _ = load_split(images, table, "test", n=REAL_GRID_IMAGES, seed=seed)
    save_grid(real, out_png)
    return out_png



_REGISTRATION_NUMBERS = ["mask_dice", "scale_x", "scale_y", "scale_z", "max_shear", "correlation_after",
                         "correlation_before", "brain_ml"]


def _registration_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader of the report needs, the QC numbers as numbers."""
    view = frame.reindex(columns=["subject", "status", *_REGISTRATION_NUMBERS, "reason", "input_warning"])
    for column in _REGISTRATION_NUMBERS:
        view[column] = pd.to_numeric(view[column], errors="coerce")
    return view


def registration_summary(registration: RegistrationSettings, preprocessing: PreprocessingSettings) -> str:
    """One line saying how subjects were registered: extraction, what was matched to what, output."""
    template = registration.template or "MNI152 2009c (nilearn, brain-only)"
    extraction = preprocessing.brain_extraction
    if registration.transform == "none":
        how = f"no transform estimated (inputs taken as already in the space of {template})"
    elif registration.match == "brain":
        source = f"brain extracted with {extraction}" if extraction != "none" else "input as given (brain extraction off)"
        how = f"{registration.transform}, brain to brain: {source} to {template}"
    else:
        how = f"{registration.transform}, head to head: whole head to {template}"
    return f"{how}; output {registration.output} on grid {'x'.join(map(str, registration.grid))}"


def registration_gate_text(registration: RegistrationSettings) -> str:
    low, high = registration.scale_range
    fate = ("left out of slicing" if registration.on_poor_fit == "exclude"
            else "sliced like the others (registration.on_poor_fit: keep)")
    return (f"Worst first. A subject is flagged when the Dice of its registered brain mask with the "
            f"template's is below {registration.min_mask_dice:g}, a scale of its affine lies outside "
            f"{low:g}–{high:g}, its shear exceeds {registration.max_shear:g}, the affine mirrors, or its "
            f"correlation with the template inside the template's brain mask is below "
            f"{registration.min_correlation:g}; flagged subjects are {fate}. Scales are those of the "
            f"subject-to-template map along the template's axes. Click an overlay to enlarge it.")


