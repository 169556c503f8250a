# Shared helpers: config validation, the subject list (from the discovery checkpoint),
# and per-model lookups. Nothing here imports torch: the DAG must build fast.

import functools
from pathlib import Path

import pandas as pd
from snakemake.utils import validate

from pipeline_lib.models import family_sources
from pipeline_lib.reader_study.scoring import response_files


validate(config, schema="../schemas/config.schema.yaml", set_default=True)

DEMO_SHEET = "resources/demo/samples.tsv"
MODELS = sorted(config["models"])


wildcard_constraints:
    subject=r"sub-[0-9a-f]{10}",
    model="|".join(MODELS) if MODELS else "(?!)",


def input_source():
    """The discovery rule's input: the demo sheet (built by a rule) or the user's folder/sheet."""
    source = config["input"]["source"]
    return DEMO_SHEET if source == "demo" else source


@functools.lru_cache(maxsize=4)
def _read_table(path, mtime):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def read_table(path):
    return _read_table(str(path), Path(path).stat().st_mtime_ns)


def linkage():
    """pseudonym -> source row; only available once the discovery checkpoint has run."""
    table = read_table(checkpoints.discover_inputs.get().output.linkage)
    return table.set_index("subject")


def discovered_subjects():
    return sorted(linkage().index)


def subject_source_input(wildcards):
    """A missing source becomes an ingest failure for that subject, not a DAG error."""
    path = linkage().loc[wildcards.subject, "path"]
    return [path] if Path(path).exists() else []


def subject_source(wildcards):
    return linkage().loc[wildcards.subject, "path"]


def subject_format(wildcards):
    return linkage().loc[wildcards.subject, "format"]


def per_subject(pattern):
    """Input function: ``pattern`` expanded over every discovered subject."""

    def expand_subjects(wildcards):
        return expand(pattern, subject=discovered_subjects())

    return expand_subjects


def canonical(value):
    """Dicts with sorted keys, recursively: Snakemake compares params by their repr, so
    merely reordering keys in config.yaml would otherwise rerun jobs."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def settings(section):
    return canonical(config[section])


def model_block(wildcards):
    return canonical(config["models"][wildcards.model])


def model_family_source(wildcards):
    """The family's modules are inputs, so editing one reruns only the models that use it."""
    family = config["models"][wildcards.model]["family"]
    return [str(path) for path in family_sources(family)]


def minutes_per_attempt(minutes):
    """Cluster time limit that grows with each retry."""

    def runtime(wildcards, attempt):
        return minutes * attempt

    return runtime


def train_runtime(wildcards, attempt):
    """Cluster time limit in minutes: the model's minutes budget plus start-up and saving
    (4 h without one), doubled on every retry; a killed run resumes from its checkpoint."""
    minutes = config["models"][wildcards.model]["budget"].get("minutes")
    return (int(minutes * 1.1) + 20 if minutes else 240) * 2 ** (attempt - 1)


def checkpoint_dir(wildcards):
    """Resume state of a training run: deliberately not a declared output (Snakemake would delete it)."""
    return f"results/checkpoints/{wildcards.model}"


def salt_fingerprint():
    """Changing the salt must rerun discovery; the salt itself stays out of Snakemake's records."""
    import hashlib

    return hashlib.sha256(config["privacy"]["pseudonym_salt"].encode()).hexdigest()[:12]


# ----- reader study -----
# Keys that only matter for scoring: changing them must not rebuild (and reshuffle) the kit.
READER_SCORING_KEYS = ("responses_dir", "positive_class")


def reader_study_models():
    """The models in the kit: reader_study.models, or every configured model."""
    chosen = config["reader_study"].get("models")
    if chosen is None:
        return MODELS
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown:
        raise ValueError(f"reader_study.models names unknown model(s): {', '.join(unknown)}")
    return sorted(chosen)


def reader_kit_settings():
    return {k: v for k, v in settings("reader_study").items() if k not in READER_SCORING_KEYS}


def reader_responses(wildcards):
    """Every response CSV in the responses folder: a new or changed file reruns the scoring."""
    return [str(p) for p in response_files(config["reader_study"]["responses_dir"])]
