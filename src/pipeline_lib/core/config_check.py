"""Config errors before anything runs, each naming its key (``input.source: /x does not exist``).

``workflow/rules/common.smk`` calls :func:`config_problems` while Snakemake parses
the workflow, so ``snakemake -n`` already fails on a bad config. Torch-free, like
everything the DAG imports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings import (SECTIONS, DatasetSettings, DiversitySettings, dataset_blocks, dataset_problems,
                                        enabled_models, read_settings, section_block)
from pipeline_lib.core.volumes import volume_dataset_problems

DEMO_SOURCE = "demo"
SHEET_SUFFIXES = (".tsv", ".txt")
NO_MODEL = ("models: no model to train (the section is missing, empty or every model has enabled: false); "
            "give at least one model block with family and budget (config.yaml has two), or layer your "
            "file over the defaults: --configfile config.yaml my.yaml")


def config_problems(config: Mapping[str, Any], schema_path: Path) -> list[str]:
    """Every problem of ``config``: schema violations, the input source, each section's checks."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems = [f"{_key(error.absolute_path)}: {error.message}"
                for error in sorted(validator.iter_errors(dict(config)), key=lambda e: list(map(str, e.absolute_path)))]
    if problems:
        return problems  # the checks below assume the schema's shape
    problem = input_source_problem(config)
    if problem:
        problems.append(problem)
    if not enabled_models(config):
        problems.append(NO_MODEL)
    for path, cls in SECTIONS.items():
        try:
            read_settings(cls, section_block(config, path), path)
        except InputError as exc:
            problems.append(str(exc))
    problems += dataset_problems(config)
    problems += volume_dataset_problems(config)
    problems += window_problems(config)
    return problems


def window_problems(config: Mapping[str, Any]) -> list[str]:
    """The diversity metrics' window must fit every dataset's images (MS-SSIM drops scales until it
    does, but even one scale needs an image at least as wide as the window)."""
    try:
        kernel = read_settings(DiversitySettings, section_block(config, "evaluation.diversity")).kernel_size
    except InputError:
        return []  # reported with the section's own checks
    problems = []
    for name, block in dataset_blocks(config).items():
        try:
            side = min(read_settings(DatasetSettings, block, f"datasets.{name}").size)
        except InputError:
            continue  # reported by dataset_problems
        if side < kernel:
            problems.append(f"evaluation.diversity.kernel_size: a {kernel}-pixel window does not fit the "
                            f"{side}-pixel images of dataset {name}; use at most {side}")
    return problems


def input_source_problem(config: Mapping[str, Any]) -> str | None:
    """Why ``input.source`` cannot be discovered, or None."""
    source = str(((config.get("input") or {}).get("source")) or DEMO_SOURCE)
    if source == DEMO_SOURCE:
        return None
    if not os.path.exists(source):
        hint = " (a relative path is read from the working directory, " + os.getcwd() + ")" \
            if not os.path.isabs(source) else ""
        return f"input.source: {source} does not exist{hint}"
    if os.path.isdir(source):
        if not os.access(source, os.R_OK | os.X_OK):
            return f"input.source: {source} is a folder that cannot be read"
        return None
    if not source.lower().endswith(SHEET_SUFFIXES):
        return f"input.source: {source} must be a folder or a sample sheet (.tsv)"
    if not os.access(source, os.R_OK):
        return f"input.source: {source} cannot be read"
    return None


def raise_problems(problems: list[str], config_files: list[str]) -> None:
    """One InputError listing every problem and the config files they came from."""
    if problems:
        files = ", ".join(config_files) or "no config file (defaults and --config only)"
        raise InputError(f"invalid configuration (from {files}):\n  " + "\n  ".join(problems))


def _key(path) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "(top level)"
