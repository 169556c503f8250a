# Shared helpers: config validation, the subject list (from the discovery checkpoint), and
# per-section and per-model lookups. Rule files call these instead of reading the config.
# Nothing here imports torch or numpy: the DAG must build fast.

import functools
import hashlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import yaml
from snakemake.logging import logger
from snakemake.utils import update_config, validate

from pipeline_lib.core import resources
from pipeline_lib.core.config_check import config_problems, raise_problems
from pipeline_lib.core.jobs import is_within, portable_path
from pipeline_lib.core.overrides import typed_overrides
from pipeline_lib.core.private import private_folder
from pipeline_lib.core.rule_jobs import rule_job
from pipeline_lib.core import step_timing
from pipeline_lib.core.subject_batches import assign_batches
from pipeline_lib.core.settings import (ConditioningSettings, DiversitySettings, DomainSettings, ExecutionSettings,
                                        FidSettings, KidSettings, MemorizationSettings, PixelMetricsSettings,
                                        PrdcSettings, ReaderStudySettings, UtilitySettings, read_settings)
from pipeline_lib.core.settings import (TrainerSettings, canonical, dataset_params, dataset_settings, enabled_models,
                                        model_dataset, model_seeds, rerun_settings, result_part, rule_settings)
from pipeline_lib.core.volumes import (estimated_volumes, volume_dataset_mb, volume_dataset_params,
                                       volume_dataset_settings, volumetric_evaluation_mb, volumetric_slices)
from pipeline_lib.imaging.discovery import STAGED_INPUT, STAGED_MASKS, STAGED_SEQUENCES, file_state, layout_problem
from pipeline_lib.imaging.label_filters import check_filters_against_subjects
from pipeline_lib.imaging.pseudonym import project_salt, salt_notice
from pipeline_lib.models import family_sources
from pipeline_lib.models.hyperparameters import (check_model_blocks, model_dataset_problems, published_defaults, spatial_dims,
                                                 typed_hyperparameters)
from pipeline_lib.reader_study.scoring import response_files


CONFIG_SCHEMA = Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"


def typed_command_line_config():
    """--config values converted to the types the schema (and, for a model's hyperparameters, its
    family) declares, merged over the config; the values that do not convert, as problems."""
    typed, problems = typed_overrides(workflow.config_settings.config, yaml.safe_load(CONFIG_SCHEMA.read_text()))
    if isinstance(typed.get("models"), dict):
        typed["models"], more = typed_hyperparameters(typed["models"], config.get("models"))
        problems += more
    update_config(config, typed)
    return problems


def check_config():
    """Every config error, each naming its key, before any job runs (so `snakemake -n` fails too)."""
    problems = typed_command_line_config()
    if not problems:
        problems = config_problems(config, CONFIG_SCHEMA)
    if not problems:
        problems = check_model_blocks(config.get("models"))
    if not problems:
        problems = model_dataset_problems(config)
    if not problems:
        problems = [problem for problem in [layout_problem(config.get("input") or {})] if problem]
    raise_problems(problems, [str(f) for f in workflow.overwrite_configfiles] or ["config.yaml"])


check_config()
validate(config, schema="../schemas/config.schema.yaml", set_default=True)

DEMO_SHEET = "resources/demo/samples.tsv"
SOURCE_LINK = "private/source"
FID_WEIGHTS = "resources/weights/pt_inception-2015-12-05-fid.pth"
# Models with `enabled: false` keep their block (checked, recorded in the provenance) but get no jobs.
MODELS = enabled_models(config)
# "original" names the real reference row of every metric table.
if "original" in MODELS:
    raise ValueError("models.original: 'original' is reserved for the real reference row; rename the model")
# One training run per (model, seed); every per-run output is named <stage folder>/<model>/seed<seed>...
SEEDS = {model: model_seeds(config, model) for model in MODELS}
# 3-D models (a family with spatial_dims 3) learn a volume dataset: the train rule serves them too,
# sample_volumes samples them, and none of the 2-D rules (sample, metrics, fid, reader kit, report)
# asks for them. RUNS are the 2-D runs, VOLUME_RUNS the 3-D ones.
VOLUME_MODELS = [model for model in MODELS if spatial_dims(config["models"][model]["family"]) == 3]
RUNS = [(model, seed) for model in MODELS if model not in VOLUME_MODELS for seed in SEEDS[model]]
VOLUME_RUNS = [(model, seed) for model in VOLUME_MODELS for seed in SEEDS[model]]
RUN = "{model}/seed{seed}"
# Slice datasets (datasets:, or one named "default" from slicing:); each model trains on one.
DATASET_SETTINGS = dataset_settings(config)
DATASETS = list(DATASET_SETTINGS)
MODEL_DATASET = {model: model_dataset(config, model) for model in MODELS}
# The real reference outputs (metrics, features, domain network, reader kit) exist for the datasets
# that models train on (the first dataset when there are no models).
USED_DATASETS = [d for d in DATASETS if d in MODEL_DATASET.values()] or DATASETS[:1]


wildcard_constraints:
    subject=r"sub-[0-9a-f]{10}",
    batch=r"b[0-9]+",
    model="|".join(MODELS) if MODELS else "(?!)",
    seed=r"\d+",
    dataset="|".join(DATASETS),


# ----- inputs and subjects -----


def is_demo_cohort():
    return config["input"]["source"] == "demo"


def input_source():
    """The discovery rule's input: the demo sheet (built by a rule), else private/source, a link
    to input.source. Through the link, Snakemake sees the source's modification time but
    never its path, which may name a patient. A source inside the working directory is linked
    relatively, so that moving the run folder with its data keeps the link (and reruns nothing)."""
    if is_demo_cohort():
        return DEMO_SHEET
    target = os.path.abspath(config["input"]["source"])
    private_folder(os.path.dirname(SOURCE_LINK))
    if is_within(target, os.getcwd()):
        target = os.path.relpath(target, os.path.dirname(SOURCE_LINK))
    if not os.path.islink(SOURCE_LINK) or os.readlink(SOURCE_LINK) != target:
        temporary = f"{SOURCE_LINK}.{os.getpid()}"
        os.symlink(target, temporary)
        os.replace(temporary, SOURCE_LINK)
    return SOURCE_LINK


# Real data without a salt of its own gets a random one in private/pseudonym_salt (imaging.pseudonym);
# the discovery job reads it there: it never enters the config, a parameter or a log.
_salt, _salt_origin = project_salt(config["privacy"]["pseudonym_salt"], config["input"]["source"])
if salt_notice(_salt_origin):
    print(salt_notice(_salt_origin), file=sys.stderr)


def discovery_fingerprint():
    """Changing the salt, the source, the layout (and its pattern, labels and series rules) or the
    reference sequence reruns discovery; none of them appears in Snakemake's records."""
    layout = canonical({**config["input"], "reference_sequence": config["registration"].get("reference_sequence")})
    secret = f"{_salt}\0{config['input']['source']}\0{layout!r}"
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()[:12]


# The tables below are parsed once per state of their file (file_state: inode, size, modification
# time), so a rewritten or replaced subjects.tsv is read again within the same Snakemake process.


@functools.lru_cache(maxsize=4)
def _read_table(path, state):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def read_table(path):
    return _read_table(str(path), file_state(path))


def discovered():
    """pseudonym -> format, kind and labels; only available once the discovery checkpoint has run."""
    path = checkpoints.discover_inputs.get().output.subjects
    return _indexed(str(path), file_state(path))


@functools.lru_cache(maxsize=4)
def _indexed(path, state):
    # once per table: input functions ask for it several times per subject (2,029 subjects)
    return _read_table(path, state).set_index("subject")


@functools.lru_cache(maxsize=4)
def _subject_rows(path, state):
    return _read_table(path, state).set_index("subject").to_dict("index")


def subject_row(wildcards):
    """The subject's row of subjects.tsv as a dict (format, kind, sequence columns, labels).
    Called only for jobs that exist, i.e. once staged_link has found the checkpoint complete: asking
    the checkpoint again here cost 1.5 ms a call, six calls per subject (bench/dag_2029.py)."""
    path = rules.discover_inputs.output.subjects
    return _subject_rows(path, file_state(path))[wildcards.subject]


#: Subjects whose jobs (ingest, register) share one cluster job: a 40,000-subject cohort makes 800
#: submissions instead of 40,000. Where the executor runs jobs itself (local), groups change nothing.
SUBJECTS_PER_CLUSTER_JOB = 50


@functools.lru_cache(maxsize=4)
def _subject_batches(path, state):
    return {subject: i // SUBJECTS_PER_CLUSTER_JOB for i, subject in enumerate(sorted(_subject_rows(path, state)))}


@resources.signature_once
def subject_batch(wildcards):
    """The cluster job (group) of a subject's jobs: consecutive pseudonyms, SUBJECTS_PER_CLUSTER_JOB
    at a time, joined by the profile's `group-components: subjects=...`. With one group name for
    all subjects, Snakemake 9 applies group-components again at every DAG update after the
    checkpoint and merges the batches into ever larger ones (100 subjects: one job); a name per
    batch caps a job at its batch. The batch names count as "subjects" for group-components, as
    Snakemake records for a group name written with wildcards."""
    path = rules.discover_inputs.output.subjects
    batch = f"subjects{_subject_batches(path, file_state(path))[wildcards.subject]}"
    workflow.parent_groupids[batch] = "subjects"
    return batch


# ----- subjects in batches (execution.subject_batches; core/subject_batches.py) -----

#: B > 0: ingest and register run B batch jobs each instead of a job per subject.
SUBJECT_BATCHES = read_settings(ExecutionSettings, config.get("execution")).subject_batches


@functools.lru_cache(maxsize=4)
def _batched_subjects(path, state):
    return assign_batches(_subject_rows(path, state), SUBJECT_BATCHES)


def batched_subjects():
    """batch -> its subjects, once discovery has run."""
    path = discovery_output().subjects
    return _batched_subjects(str(path), file_state(path))


def batch_subjects(wildcards):
    return batched_subjects()[wildcards.batch]


def per_subject_inputs(pattern, subjects):
    """A per-subject stage's folders (``pattern``, e.g. rules.register.output[0]) as a later rule's
    input: the folders themselves, or with batches the manifests of the batches that hold
    ``subjects`` (core/qc's readers open the folders they list)."""
    manifest = SUBJECT_BATCH_MANIFESTS.get(str(pattern)) if SUBJECT_BATCHES else None
    if manifest is None:
        return expand(pattern, subject=subjects)
    wanted = set(subjects)
    return expand(manifest, batch=[batch for batch, members in batched_subjects().items() if wanted & set(members)])


#: The per-subject folder pattern -> the manifest of the batch rule that writes it (filled in by
#: ingest.smk and register.smk).
SUBJECT_BATCH_MANIFESTS = {}


def _each_subject(wildcards):
    """The batch's subjects as the per-subject functions below take them (wildcards.subject)."""
    return [SimpleNamespace(subject=subject) for subject in batch_subjects(wildcards)]


def batch_staged_inputs(wildcards):
    """Every subject's staging links: a changed source reruns its batch (staged_input)."""
    return [path for subject in _each_subject(wildcards) for path in staged_input(subject)]


def batch_ingest_params(wildcards):
    """pseudonym -> what its own ingest job gets as params, and its folder; a subject added to the
    batch changes them, so the batch reruns."""
    folder = str(rules.ingest.output[0])
    return {w.subject: {"staged": staged_link(w), "format": subject_format(w), "kind": subject_kind(w),
                        "sequences": subject_sequences(w), "reference": subject_reference(w),
                        "folder": folder.format(subject=w.subject)}
            for w in _each_subject(wildcards)}


def batch_folders(pattern):
    """Params: pseudonym -> ``pattern`` (a per-subject folder) for the batch's subjects."""

    def folders(wildcards):
        return {subject: str(pattern).format(subject=subject) for subject in batch_subjects(wildcards)}

    return folders


def mem_ingest_batch(wildcards, attempt):
    """Subjects run one after another: the largest subject's request (mem_ingest's formula)."""
    largest = max(resources.source_bytes(staged_input(w)) for w in _each_subject(wildcards))
    return resources.request_mb(resources.ingest_mb(largest), attempt)


def mem_register_batch(wildcards, attempt):
    """The largest ingested subject's request (mem_register's formula), read again when the batch is
    ready to run (before, from the cohort's configuration)."""
    folder = str(rules.ingest.output[0])
    largest = max(resources.bytes_on_disk([folder.format(subject=s)]) for s in batch_subjects(wildcards))
    return resources.request_mb(resources.register_mb(largest, registration_grid()), attempt)


def batch_minutes_per_attempt(minutes):
    """A subject's time limit (minutes_per_attempt) times the batch's subjects, which run one after
    another (core/guard.guard_subject_batch gives each its share), at most the longest a job may ask."""

    def runtime(wildcards, attempt):
        return min(minutes * attempt * len(batch_subjects(wildcards)), max_runtime_minutes())

    return runtime


def subject_batch_group(wildcards):
    """A batch's ingest and register jobs share one cluster job."""
    return f"subjects-{wildcards.batch}"


def discovered_subjects():
    return sorted(discovered().index)


_complete_discovery = {}


def discovery_output():
    """The discovery checkpoint's outputs. The checkpoint is asked (raising while it is still to
    run) until it answers for the current subjects.tsv; then the answer is kept for that table:
    asking it for every subject cost 7 ms a subject on a busy login node."""
    path = rules.discover_inputs.output.subjects
    state = file_state(path) if os.path.exists(path) else None
    if state not in _complete_discovery:
        output = checkpoints.discover_inputs.get().output
        if state is None:
            return output
        _complete_discovery[state] = output
    return _complete_discovery[state]


@resources.signature_once
def staged_link(wildcards):
    """The subject's staging link: the only path to its source any rule sees."""
    return os.path.join(discovery_output().staging, wildcards.subject, STAGED_INPUT)


@resources.signature_once
def staged_input(wildcards):
    """The staging link as the rule's input, so a changed source reruns its ingest (the link
    carries its target's modification time); a missing source is refused by ingest, not the DAG.
    A multi-sequence subject's other sequences and masks (input.layout) are inputs too."""
    link = staged_link(wildcards)
    links = [link] if os.path.exists(link) else []
    row = subject_row(wildcards)
    if not row.get("sequences") and not row.get("mask"):
        return links
    folder = os.path.dirname(link)
    for extra in (STAGED_SEQUENCES, STAGED_MASKS):
        for name in subject_sequence_list(wildcards, "sequences" if extra == STAGED_SEQUENCES else "mask"):
            path = os.path.join(folder, extra, name)
            if os.path.exists(path):
                links.append(path)
    return links


def subject_sequence_list(wildcards, column):
    """The subject's other sequences ("sequences" without the reference) or masks ("mask")."""
    names = [name for name in subject_row(wildcards).get(column, "").split(",") if name]
    return names[1:] if column == "sequences" else names


@resources.signature_once
def subject_sequences(wildcards):
    """Every image sequence of the subject, reference first ("" for a single-sequence input)."""
    return subject_row(wildcards).get("sequences", "")


@resources.signature_once
def subject_reference(wildcards):
    """The subject's reference sequence (input.layout), "" for a single-sequence input."""
    row = subject_row(wildcards)
    return row.get("sequence", "") if "sequences" in row else ""


@resources.signature_once
def subject_format(wildcards):
    return subject_row(wildcards)["format"]


@resources.signature_once
def subject_kind(wildcards):
    return subject_row(wildcards)["kind"]


def per_subject_of_dataset(pattern):
    """Input function: ``pattern`` over every discovered subject, once the dataset's label filters
    are known to fit the discovered labels (else the run stops here, before any registration)."""

    def expand_checked(wildcards):
        subjects = discovered()
        check_filters_against_subjects(wildcards.dataset, DATASET_SETTINGS[wildcards.dataset].filters,
                                       subjects.reset_index(), config["input"].get("layout", "auto"))
        return per_subject_inputs(pattern, sorted(subjects.index))

    return expand_checked


def per_subject(pattern):
    """Input function: ``pattern`` expanded over every discovered subject."""

    def expand_subjects(wildcards):
        return per_subject_inputs(pattern, discovered_subjects())

    return expand_subjects


# ----- datasets -----


def slice_settings(wildcards):
    """Only this dataset's settings: changing one dataset reruns only its chain."""
    return dataset_params(DATASET_SETTINGS[wildcards.dataset])


#: A 3-D run's data files, by the name of the slice dataset's file each stands in for (a volume
#: dataset has no slabs for on-the-fly augmentation; its grid.json is the 3-D runs' own input).
VOLUME_RUN_INPUTS = {"images": "volumes", "table": "table", "grid": "grid"}


def model_slices(name):
    """Input function: the ``name`` output (images or table) of the slice dataset a run's model
    trains on; for a 3-D run, its volume dataset's file that stands in for it (VOLUME_RUN_INPUTS),
    or none."""

    def slices_of_model(wildcards):
        dataset = MODEL_DATASET[wildcards.model]
        if wildcards.model in VOLUME_MODELS:
            output = VOLUME_RUN_INPUTS.get(name)
            return expand(getattr(rules.volume_dataset.output, output), volume_dataset=dataset)[0] if output else []
        if name not in rules.slice_dataset.output.keys():
            return []
        return expand(getattr(rules.slice_dataset.output, name), dataset=dataset)[0]

    return slices_of_model


def model_real_features(wildcards):
    """The real training slices' Inception features of the model's dataset."""
    return expand(rules.real_features.output[0], dataset=MODEL_DATASET[wildcards.model], split="train")[0]


def per_dataset(pattern):
    """``pattern`` expanded over the datasets that have real reference outputs, in USED_DATASETS order."""
    return expand(pattern, dataset=USED_DATASETS)


def dataset_models(dataset):
    return [model for model in MODELS if MODEL_DATASET[model] == dataset]


def dataset_class_columns(wildcards):
    """Label columns the dataset's conditional models use: its real reference row gets per-class FID for them."""
    blocks = [config["models"][m] for m in dataset_models(wildcards.dataset)]
    return sorted({block["condition_on"] for block in blocks if block.get("condition_on")})


# ----- volume datasets (datasets.<name> with kind: volume; volume.smk) -----

VOLUME_DATASET_SETTINGS = volume_dataset_settings(config)


def per_subject_of_volume_dataset(pattern):
    """Input function: ``pattern`` over every discovered subject, once the volume dataset's label
    filters are known to fit the discovered labels (as per_subject_of_dataset for slice datasets)."""

    def expand_checked(wildcards):
        subjects = discovered()
        filters = VOLUME_DATASET_SETTINGS[wildcards.volume_dataset].filters
        check_filters_against_subjects(wildcards.volume_dataset, filters, subjects.reset_index(),
                                       config["input"].get("layout", "auto"))
        return per_subject_inputs(pattern, sorted(subjects.index))

    return expand_checked


def volume_settings(wildcards):
    """Only this volume dataset's settings: changing one rebuilds only it."""
    return volume_dataset_params(VOLUME_DATASET_SETTINGS[wildcards.volume_dataset])


def mem_volume_dataset(wildcards, attempt):
    box = VOLUME_DATASET_SETTINGS[wildcards.volume_dataset].box
    return resources.request_mb(volume_dataset_mb(registration_grid(), box), attempt)


# The volume dataset of each 3-D model (VOLUME_MODELS; volumetric.smk evaluates their runs).
VOLUME_MODEL_DATASET = {model: MODEL_DATASET[model] for model in VOLUME_MODELS}


def per_volume_run(pattern):
    """``pattern`` expanded over every 3-D run, in the order of VOLUME_RUNS."""
    return per_model(pattern, VOLUME_RUNS)


def per_volume_run_inputs(outputs):
    """Named inputs: each of ``outputs`` (name -> pattern) over every 3-D run; none without 3-D runs,
    so that a rule that also reads 3-D runs keeps its 2-D inputs as they were."""
    return {name: per_volume_run(pattern) for name, pattern in outputs.items()} if VOLUME_RUNS else {}


def volume_run_params(outputs):
    """The 3-D runs (model, seed) and the names of ``outputs``, as params; none without 3-D runs."""
    if not VOLUME_RUNS:
        return {}
    return dict(volume_runs=[[model, seed] for model, seed in VOLUME_RUNS], volume_run_inputs=list(outputs))


def run_volumes(name):
    """Input function: the ``name`` output (volumes, table, grid) of the volume dataset of a 3-D run's model."""

    def volumes_of_run(wildcards):
        return expand(getattr(rules.volume_dataset.output, name),
                      volume_dataset=VOLUME_MODEL_DATASET[wildcards.model])[0]

    return volumes_of_run


def volumetric_shapes(wildcards, input):
    """(samples, volumes) shapes of a 3-D run's evaluation: from the files' headers; before they exist,
    from sampling.n, the dataset's box (the registration grid without one) and the discovered cohort."""
    settings = VOLUME_DATASET_SETTINGS[VOLUME_MODEL_DATASET[wildcards.model]]
    shape = (len(settings.channels or ()) or 1,) + tuple(settings.box or registration_grid())
    samples = resources.npy_shape(input.samples) or (config["sampling"]["n"],) + shape
    volumes = resources.npy_shape(input.volumes) or (cohort_shape()[0],) + shape
    return samples, volumes


def mem_volumetric(wildcards, input, attempt):
    return resources.request_mb(volumetric_evaluation_mb(*volumetric_shapes(wildcards, input)), attempt)


def runtime_volumetric(wildcards, input, attempt):
    """Inception on every slice the job cuts: the samples' and the real volumes', three planes."""
    return resources.capped_request_minutes(
        resources.features_minutes(volumetric_slices(*volumetric_shapes(wildcards, input))), attempt, max_runtime_minutes())


# ----- settings -----


def section_settings(path, *kinds):
    """The keys of a config section that change its jobs' results (core.settings says which),
    sorted: reordering keys in config.yaml must rerun nothing."""
    return rerun_settings(config, path, *kinds)


def later_stage_settings(path, rule):
    """The keys of a config section that change the results of ``rule`` of a later stage (declared
    ``read_by`` in core.settings), not of the section's own jobs, by name: ``**later_stage_settings(...)``
    in the rule's params."""
    return rule_settings(config, path, rule)


def section_settings_set(path, *later_keys):
    """section_settings without ``later_keys`` (keys added later) left at null, so configs that do
    not use them keep the params their results were made with."""
    settings = section_settings(path)
    for key in later_keys:
        if settings.get(key) is None:
            settings.pop(key, None)
    return settings


def real_feature_settings():
    """Only these keys change which real slices get Inception features (crop only when set)."""
    fid = section_settings("evaluation.fid")
    settings = {key: fid[key] for key in ("max_real", "seed") if key in fid}
    if fid.get("crop") is not None:
        settings["crop"] = fid["crop"]
    return settings


def model_feature_settings():
    """evaluation.fid.crop when set (``**`` in the params: no params otherwise, as before the
    key existed): the one result key of the model_features rule."""
    crop = section_settings("evaluation.fid").get("crop")
    return {} if crop is None else {"crop": crop}


def distribution_settings():
    """fid, kid and prdc result keys; fresh_samples, equal_per_class and crop only when on, so
    configs that leave them off keep the params their results were made with."""
    settings = {name: section_settings(f"evaluation.{name}") for name in ("fid", "kid", "prdc")}
    for key in ("fresh_samples", "equal_per_class", "crop"):
        if not settings["fid"].get(key):
            settings["fid"].pop(key, None)
    return settings


def fid_block_input(wildcards):
    """model_features reads the fid_samples rule's blocks only under evaluation.fid.fresh_samples."""
    if not config["evaluation"]["fid"].get("fresh_samples"):
        return {}
    return {"blocks": rules.fid_samples.output[0].format(**wildcards)}


def fid_weights_input():
    """A configured weights file is used as it is; otherwise the fid_weights rule's output."""
    return config["evaluation"]["fid"].get("weights") or FID_WEIGHTS


# ----- models -----


def model_settings(wildcards):
    """One run's config block: the model's block without runtime keys (e.g. the checkpoint interval)
    or the seed list (adding a seed reruns no existing run), with this run's seed."""
    run = result_part(config["models"][wildcards.model], TrainerSettings)
    # the user's speed estimate sizes the time limit only
    run["budget"] = {k: v for k, v in run["budget"].items() if k != "seconds_per_step"}
    return canonical({**run, "seed": int(wildcards.seed)})


def model_family_source(wildcards):
    """The family's modules are inputs, so editing one reruns only the models that use it; named
    relative to the working directory, so that a finished run moved with its checkout trains nothing."""
    sources = family_sources(config["models"][wildcards.model]["family"])
    return [portable_path(path, os.getcwd(), workflow.basedir) for path in sources]


def model_condition(wildcards):
    """The slice-table column a model is conditioned on ("" = unconditional)."""
    return config["models"][wildcards.model].get("condition_on") or ""


def per_model(pattern, runs=None):
    """``pattern`` expanded over every 2-D training run (model and seed), in the order of RUNS, or
    over ``runs`` (VOLUME_RUNS: the 3-D runs)."""
    runs = RUNS if runs is None else runs
    return expand(pattern, zip, model=[m for m, _ in runs], seed=[s for _, s in runs])


def first_runs(pattern, models):
    """``pattern`` for the first seed of each of ``models`` (the reader study shows one run per model)."""
    return expand(pattern, zip, model=list(models), seed=[SEEDS[m][0] for m in models])


def checkpoint_dir(wildcards):
    """Resume state of a training run: deliberately not a declared output (Snakemake would delete it)."""
    return f"results/checkpoints/{wildcards.model}/seed{wildcards.seed}"


# ----- cluster resources -----


def minutes_per_attempt(minutes):
    """Cluster time limit that grows with each retry."""

    @resources.signature_once
    def runtime(wildcards, attempt):
        return minutes * attempt

    return runtime


# Each rule's mem_mb (and, where the data set it, runtime) comes from one function below, sized from
# the job's inputs when they exist and from the configuration and the discovered cohort before
# (a dry run); core/resources.py holds the formulas, docs/RESOURCES.md explains them.

SUBJECTS_TABLE = "results/inputs/subjects.tsv"


def cohort_shape():
    """(subjects, sequences per subject) of the discovered cohort; (0, 1) before discovery, when
    dataset-sized requests fall back to their fixed part and are recomputed once inputs exist."""
    if not os.path.exists(SUBJECTS_TABLE):
        return 0, 1
    table = read_table(SUBJECTS_TABLE)
    sequences = table["sequences"].iloc[0].count(",") + 1 if "sequences" in table and len(table) else 1
    return len(table), sequences


def registration_grid():
    return tuple(config["registration"]["grid"])


def dataset_images(dataset):
    """The slice dataset's size: its images.npy header when written, else the configured estimate."""
    subjects, sequences = cohort_shape()
    estimate = resources.estimated_dataset(DATASET_SETTINGS[dataset], registration_grid(), subjects, sequences)
    return resources.dataset_size(expand(rules.slice_dataset.output.images, dataset=dataset)[0], estimate)


def volume_dataset_images(name):
    """A volume dataset's size: its volumes.npy header when written, else the configured estimate."""
    subjects, sequences = cohort_shape()
    estimate = estimated_volumes(VOLUME_DATASET_SETTINGS[name], registration_grid(), subjects, sequences)
    return resources.dataset_size(expand(rules.volume_dataset.output.volumes, volume_dataset=name)[0], estimate)


def run_images(wildcards):
    """The dataset a run's model trains on: its slice dataset, or a 3-D run's volume dataset."""
    if wildcards.model in VOLUME_MODELS:
        return volume_dataset_images(MODEL_DATASET[wildcards.model])
    return dataset_images(MODEL_DATASET[wildcards.model])


@functools.lru_cache(maxsize=None)
def family_defaults(family):
    return published_defaults(family)


def model_value(wildcards, key):
    """A model's hyperparameter: its block's value, else the family's declared default."""
    block = config["models"][wildcards.model]
    return block.get(key, family_defaults(block["family"]).get(key))


def sample_count(wildcards):
    """samples.npy's length when written, else the configured sample count."""
    samples = resources.image_set(rules.sample.output.samples.format(**wildcards))
    return samples.images if samples else config["sampling"]["n"]


@resources.signature_once
def mem_ingest(wildcards, input, attempt):
    return resources.request_mb(resources.ingest_mb(resources.source_bytes(input.staged)), attempt)


@resources.signature_once
def mem_register(wildcards, input, attempt):
    volume = resources.bytes_on_disk([input.ingested])
    return resources.request_mb(resources.register_mb(volume, registration_grid()), attempt)


def mem_slice_dataset(wildcards, attempt):
    images = dataset_images(wildcards.dataset)
    return resources.request_mb(resources.slice_dataset_mb(images, registration_grid()), attempt)


def mem_train(wildcards, attempt):
    family, batch = config["models"][wildcards.model]["family"], model_value(wildcards, "batch_size") or 64
    return resources.request_mb(resources.train_mb(family, int(batch), run_images(wildcards)), attempt)


def mem_sample(wildcards, attempt):
    family, batch = config["models"][wildcards.model]["family"], model_value(wildcards, "batch_size") or 64
    n = config["sampling"]["n"] + config["sampling"]["n_reconstruct"]
    return resources.request_mb(resources.sample_mb(family, n, int(batch), run_images(wildcards)), attempt)


def mem_sample_volumes(wildcards, attempt):
    family, batch = config["models"][wildcards.model]["family"], model_value(wildcards, "batch_size") or 64
    return resources.request_mb(resources.sample_mb(family, config["sampling"]["n"], int(batch),
                                                    run_images(wildcards)), attempt)


def mem_streamed(held=0, with_samples=True):
    """Resources of evaluation rules that read their splits from disk a block at a time
    (core.resources.streamed_evaluation_mb); ``held``: images they read at once beyond the blocks."""

    def mem_mb(wildcards, attempt):
        if "model" in wildcards.keys():
            images = run_images(wildcards)
            samples = resources.ImageSet(sample_count(wildcards), images.pixels) if with_samples else None
        else:
            images, samples = dataset_images(wildcards.dataset), None
        return resources.request_mb(resources.streamed_evaluation_mb(images, samples, held), attempt)

    return mem_mb


def diversity_pair_images():
    """The diversity rules read both images of every pair at once."""
    from pipeline_lib.core.settings import DiversitySettings, read_settings

    return 2 * read_settings(DiversitySettings, config.get("evaluation", {}).get("diversity")).n_pairs


def inception_images(wildcards):
    """Grey images a feature job runs through Inception: a split (at most evaluation.fid.max_real)
    or a run's samples (times the fresh FID blocks' repeats); a stacked dataset's image is one grey
    image (and one feature row) per channel."""
    fid = config["evaluation"]["fid"]
    dataset = wildcards.dataset if "model" not in wildcards.keys() else MODEL_DATASET[wildcards.model]
    channels = len(DATASET_SETTINGS[dataset].channels or ()) or 1
    if "model" not in wildcards.keys():
        images = dataset_images(dataset)
        share = 1 - DATASET_SETTINGS[dataset].test_fraction
        count = int(images.images * (share if wildcards.split == "train" else 1 - share))
        count = min(count, fid.get("max_real") or count)
    else:
        images = run_images(wildcards)
        count = sample_count(wildcards) * (fid["repeats"] + 1 if fid.get("fresh_samples") else 1)
    return resources.ImageSet(count * channels, images.pixels // channels)


def mem_features(wildcards, attempt):
    # a run's samples are loaded whole (the main set; fresh FID blocks are read a chunk at a time)
    held = resources.ImageSet(sample_count(wildcards), run_images(wildcards).pixels) if "model" in wildcards.keys() else None
    return resources.request_mb(resources.features_mb(inception_images(wildcards), held), attempt)


def runtime_features(wildcards, attempt):
    return resources.capped_request_minutes(resources.features_minutes(inception_images(wildcards).images), attempt,
                                            max_runtime_minutes())


def distribution_feature_rows(wildcards):
    """Feature rows a distribution job compares: the training split's (at most evaluation.fid.max_real,
    as real_features writes them) and a run's samples', or the test split's (capped alike)."""
    dataset, samples = evaluated_dataset(wildcards)
    tested = tested_images(wildcards)
    cap = evaluation_settings(FidSettings).max_real or dataset.images
    return min(dataset.images - tested, cap), samples if "model" in wildcards.keys() else min(tested, cap)


def mem_distribution(wildcards, attempt):
    return resources.request_mb(resources.distribution_mb(sum(distribution_feature_rows(wildcards))), attempt)


def mem_per_subject_table(wildcards, attempt):
    return resources.request_mb(resources.table_mb(cohort_shape()[0]), attempt)


def mem_report(wildcards, attempt):
    images = max((dataset_images(d) for d in USED_DATASETS), key=lambda s: s.mb)
    return resources.request_mb(resources.report_mb(cohort_shape()[0], images), attempt)


MAX_RUNTIME_VARIABLE = "PIPELINE_SLURM_MAX_RUNTIME_MINUTES"


def max_runtime_minutes():
    """The longest time limit a job may ask for: the SLURM profile exports the site's
    max_runtime_minutes (the partitions' MaxTime); 7 days without one."""
    value = os.environ.get(MAX_RUNTIME_VARIABLE)
    if not value:
        return resources.DEFAULT_MAX_RUNTIME_MINUTES
    try:
        minutes = float(value)
    except ValueError:
        minutes = 0
    if not minutes > 0:
        raise ValueError(f"{MAX_RUNTIME_VARIABLE} (site key max_runtime_minutes) must be a positive number "
                         f"of minutes, got {value!r}")
    return minutes


# Time limits (runtime, minutes) of the rules that are not per subject or training: each from one
# core/resources.py formula over the job's items (images, pairs, steps, subjects), grown per attempt
# and capped at the site's max_runtime_minutes; docs/RESOURCES.md lists them.


def runtime_from(minutes_of):
    """A rule's runtime callable: ``minutes_of(wildcards)`` grown for the attempt, capped."""

    @resources.signature_once
    def runtime(wildcards, attempt):
        return resources.capped_request_minutes(minutes_of(wildcards), attempt, max_runtime_minutes())

    return runtime


@functools.lru_cache(maxsize=None)
def evaluation_settings(settings_class):
    """A config section's settings with their defaults (core/settings), e.g. the CNNs' steps."""
    block = config
    for key in settings_class.PATH.split("."):
        block = (block or {}).get(key)
    return read_settings(settings_class, block)


def evaluated_dataset(wildcards):
    """The slice dataset a job evaluates (a run's model's, or the dataset wildcard's) and the run's samples (0 without a run)."""
    if "model" in wildcards.keys():
        return run_images(wildcards), sample_count(wildcards)
    return dataset_images(wildcards.dataset), 0


def tested_images(wildcards):
    """The evaluated dataset's test slices (its test_fraction of the images)."""
    name = MODEL_DATASET[wildcards.model] if "model" in wildcards.keys() else wildcards.dataset
    return int(evaluated_dataset(wildcards)[0].images * DATASET_SETTINGS[name].test_fraction)


def slice_dataset_minutes(wildcards):
    settings = DATASET_SETTINGS[wildcards.dataset]
    volumes, copies = resources.dataset_volumes(settings, *cohort_shape())
    return resources.slice_dataset_minutes(volumes, registration_grid(), copies)


def volume_dataset_minutes(wildcards):
    subjects, _ = cohort_shape()
    channels = len(VOLUME_DATASET_SETTINGS[wildcards.volume_dataset].channels or ()) or 1
    return resources.volume_dataset_minutes(subjects * channels, registration_grid())


def sample_minutes(wildcards, images):
    return resources.sample_minutes(config["models"][wildcards.model]["family"],
                                    resources.ImageSet(images, run_images(wildcards).pixels))


def domain_network_minutes(wildcards):
    cnn = evaluation_settings(DomainSettings)
    return resources.domain_network_minutes(cnn.steps, cnn.batch_size, dataset_images(wildcards.dataset))


def domain_metrics_minutes(wildcards):
    """At most n_reference training slices against the samples (or, for the reference row, the test slices)."""
    dataset, samples = evaluated_dataset(wildcards)
    tested = tested_images(wildcards)
    reference = min(dataset.images - tested, evaluation_settings(DomainSettings).n_reference or dataset.images)
    return resources.domain_metrics_minutes(dataset, reference + (samples if "model" in wildcards.keys() else tested))


def conditioning_minutes(wildcards):
    cnn = evaluation_settings(ConditioningSettings)
    dataset, samples = evaluated_dataset(wildcards)
    return resources.conditioning_minutes(cnn.steps, cnn.batch_size, dataset, tested_images(wildcards), samples)


def utility_minutes(wildcards):
    cnn = evaluation_settings(UtilitySettings)
    dataset, samples = evaluated_dataset(wildcards)
    return resources.utility_minutes(cnn.seeds, cnn.steps, cnn.batch_size, dataset, tested_images(wildcards), samples)


def memorization_minutes(wildcards):
    """Every sample against every training slice (the dataset, an upper bound); the training slices,
    at most n_test_reference test slices and the samples encoded."""
    dataset, samples = evaluated_dataset(wildcards)
    tested = min(tested_images(wildcards), evaluation_settings(MemorizationSettings).n_test_reference or dataset.images)
    return resources.nearest_pairs_minutes(samples, dataset, encoded=dataset.images + tested + samples)


def pixel_metrics_minutes(wildcards):
    """Every sample (or, for the reference row, metrics.n_original real slices) against the dataset."""
    dataset, samples = evaluated_dataset(wildcards)
    queries = samples if "model" in wildcards.keys() else evaluation_settings(PixelMetricsSettings).n_original
    return resources.nearest_pairs_minutes(queries, dataset)


def diversity_minutes(wildcards):
    pairs = evaluation_settings(DiversitySettings).n_pairs
    if "model" in wildcards.keys():
        pairs += config["sampling"]["n_reconstruct"]
    return resources.diversity_minutes(pairs, evaluated_dataset(wildcards)[0])


def distribution_minutes(wildcards):
    """A run's samples against its dataset's training features, or the dataset's test against its train."""
    real, samples = distribution_feature_rows(wildcards)
    fid, kid, prdc = (evaluation_settings(s) for s in (FidSettings, KidSettings, PrdcSettings))
    return resources.distribution_minutes(real, samples, fid_repeats=fid.repeats,
                                          kid_subsets=kid.n_subsets, kid_subset_size=kid.subset_size,
                                          prdc_max_real=prdc.max_real, prdc_max_samples=prdc.max_samples)


def reader_kit_minutes(wildcards):
    study = evaluation_settings(ReaderStudySettings)
    return resources.kit_minutes(study.n_real + study.n_per_model * len(reader_kit_models(wildcards)))


def reader_volume_kit_minutes(wildcards):
    study = evaluation_settings(ReaderStudySettings)
    return resources.kit_minutes(study.n_real + study.n_per_model * len(reader_volume_models(wildcards)),
                                 volume_dataset_images(wildcards.dataset))


runtime_slice_dataset = runtime_from(slice_dataset_minutes)
runtime_volume_dataset = runtime_from(volume_dataset_minutes)
runtime_per_subject_table = runtime_from(lambda wildcards: resources.table_minutes(cohort_shape()[0]))
runtime_sample = runtime_from(lambda w: sample_minutes(w, config["sampling"]["n"] + config["sampling"]["n_reconstruct"]))
runtime_sample_volumes = runtime_from(lambda w: sample_minutes(w, config["sampling"]["n"]))
runtime_fid_samples = runtime_from(lambda w: sample_minutes(w, config["sampling"]["n"] * evaluation_settings(FidSettings).repeats))
runtime_domain_network = runtime_from(domain_network_minutes)
runtime_domain_metrics = runtime_from(domain_metrics_minutes)
runtime_memorization = runtime_from(memorization_minutes)
runtime_conditioning = runtime_from(conditioning_minutes)
runtime_utility = runtime_from(utility_minutes)
runtime_pixel_metrics = runtime_from(pixel_metrics_minutes)
runtime_diversity = runtime_from(diversity_minutes)
runtime_intensity = runtime_from(lambda w: resources.intensity_minutes(*evaluated_dataset(w)))
runtime_distribution = runtime_from(distribution_minutes)
runtime_reader_kit = runtime_from(reader_kit_minutes)
runtime_reader_volume_kit = runtime_from(reader_volume_kit_minutes)
runtime_report = runtime_from(lambda w: resources.report_minutes(cohort_shape()[0], len(RUNS) + len(VOLUME_RUNS)))


def planned_steps(wildcards):
    """The run's steps from its budget; epochs counted over the whole dataset (the train split is
    part of it: an upper bound, as a time limit wants)."""
    budget = config["models"][wildcards.model]["budget"]
    if budget.get("steps"):
        return int(budget["steps"])
    batch = int(model_value(wildcards, "batch_size") or 64)
    return int(budget["epochs"]) * max(1, run_images(wildcards).images // batch)


_time_limit_notes = set()


def train_runtime(wildcards, attempt):
    """Cluster time limit in minutes (core/resources.train_time_limit, docs/RESOURCES.md): from the
    speed an earlier attempt measured (step_timing.json beside the checkpoints) and the steps left,
    else from budget.seconds_per_step, else from the minutes cap; never above the site's maximum.
    A killed run resumes from its checkpoint."""
    cap = max_runtime_minutes()
    limit = step_timing.run_time_limit(checkpoint_dir(wildcards), model_settings(wildcards),
                                       config["models"][wildcards.model]["budget"], planned_steps(wildcards),
                                       attempt, cap)
    note = (wildcards.model, wildcards.seed, attempt)
    if limit.attempts_needed > 1 and note not in _time_limit_notes:
        _time_limit_notes.add(note)
        retries = getattr(workflow.execution_settings, "retries", 0)
        logger.warning(
            f"train {wildcards.model} seed {wildcards.seed}: about {limit.needed_minutes / 60:.1f} h left "
            f"({limit.source} speed), above the time limit of {cap:g} min: it continues from its checkpoint "
            f"over {limit.attempts_needed} attempts; give --retries {limit.attempts_needed - 1} or more "
            f"(now {retries}), or raise max_runtime_minutes in profiles/slurm/site.yaml if the partition allows.")
    return limit.minutes


# ----- reader study -----


def reader_study_models():
    """The models in the kit: reader_study.models, or every configured model."""
    chosen = config["reader_study"].get("models")
    if chosen is None:
        return MODELS
    unknown = sorted(set(chosen) - set(config["models"]))
    if unknown:
        raise ValueError(f"reader_study.models names unknown model(s): {', '.join(unknown)}")
    # a disabled model has no samples to show
    return sorted(set(chosen) & set(MODELS))


def reader_datasets():
    """Datasets with a reader kit: those of the reader-study models (one kit each)."""
    chosen = set(reader_study_models())
    return [d for d in DATASETS if chosen & set(dataset_models(d))]


def reader_kit_models(wildcards):
    """The reader-study models of the kit's dataset (its real slices and their samples are mixed)."""
    return [m for m in reader_study_models() if MODEL_DATASET[m] == wildcards.dataset]


def reader_kit_runs(pattern):
    """Input function: ``pattern`` for the first run of each of the kit's models."""

    def kit_runs(wildcards):
        return first_runs(pattern, reader_kit_models(wildcards))

    return kit_runs


def reader_responses_dir(dataset):
    """Where a dataset's reader responses are dropped: reader_study.responses_dir with one kit,
    its sub-folder named after the dataset with several."""
    folder = config["reader_study"]["responses_dir"]
    return folder if len(reader_datasets()) <= 1 else os.path.join(folder, dataset)


def reader_responses(wildcards):
    """Every response CSV in the kit's responses folder: a new or changed file reruns the scoring."""
    return [str(p) for p in response_files(reader_responses_dir(wildcards.dataset))]


# Volume kits (reader_volumes.smk): called only by its rules, which need the 3-D wiring (VOLUME_MODELS).
def reader_volume_models(wildcards):
    """The reader-study 3-D models of the kit's volume dataset."""
    return [m for m in reader_study_models() if m in VOLUME_MODELS and MODEL_DATASET[m] == wildcards.dataset]


def reader_volume_datasets():
    """Volume datasets with a reader kit: those reader-study 3-D models learn."""
    chosen = {MODEL_DATASET[m] for m in reader_study_models() if m in VOLUME_MODELS}
    return [d for d in VOLUME_DATASET_SETTINGS if d in chosen]


def reader_volume_input(name):
    """Input function: the kit's volume dataset's ``name`` output (volumes, table, grid)."""

    def of_dataset(wildcards):
        return expand(getattr(rules.volume_dataset.output, name), volume_dataset=wildcards.dataset)[0]

    return of_dataset


def reader_volume_responses(wildcards):
    """A volume kit's response files: always the sub-folder of reader_study.responses_dir named after its
    volume dataset (a slice kit may use the folder itself; its scoring reads no sub-folder)."""
    folder = os.path.join(config["reader_study"]["responses_dir"], wildcards.dataset)
    return [str(p) for p in response_files(folder)]


def model_domain_network(wildcards):
    """The domain network of the model's dataset."""
    return expand(rules.domain_network.output.network, dataset=MODEL_DATASET[wildcards.model])[0]
