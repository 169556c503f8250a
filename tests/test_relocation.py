"""A finished run moved to another path (workstation -> cluster scratch) reruns nothing.

Snakemake compares each job's recorded input set, params and code with the current ones, so
any absolute path of the checkout in them (the model families' modules were one) retrains every
model after a move; links to inputs inside the run folder (the demo cohort) that point at the old
place dangle and re-ingest every subject. The finished run is built cheaply as in test_reruns
(real discovery, every other output marked produced with ``--touch``): Snakemake records the
same input/params/code metadata as after a real run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from pipeline_lib.core.jobs import is_within, portable_path
from pipeline_lib.imaging.discovery import discover_inputs, write_staging
from helpers.workflow import TEST_CONFIG, copy_checkout, dry_run_jobs, mark_all_produced, snakemake

SCHEMA = Path(__file__).resolve().parents[1] / "workflow/schemas/samples.schema.yaml"


def test_checkout_files_are_recorded_relative_to_a_nested_working_directory(tmp_path):
    checkout = tmp_path / "checkout"
    module = checkout / "src/pipeline_lib/models/families/vae.py"
    assert portable_path(module, checkout, checkout) == "src/pipeline_lib/models/families/vae.py"
    assert portable_path(module, checkout / "runs/a", checkout) == "../../src/pipeline_lib/models/families/vae.py"
    # a run folder apart from the checkout: the checkout's absolute path survives moving the run folder
    assert portable_path(module, tmp_path / "scratch/run", checkout) == str(module)


def test_is_within_does_not_match_a_sibling_with_the_same_prefix(tmp_path):
    assert is_within(tmp_path / "run/data/x.nii", tmp_path / "run")
    assert not is_within(tmp_path / "run2/x.nii", tmp_path / "run")


def test_staging_links_sources_inside_the_run_folder_relatively(tmp_path):
    run, outside = tmp_path / "run", tmp_path / "elsewhere"
    for folder in (run / "data", outside):
        folder.mkdir(parents=True)
        (folder / "sub-01.nii").write_bytes(b"\0" * 352)
    inside_found = discover_inputs(run / "data", "salt", SCHEMA)
    outside_found = discover_inputs(outside, "salt", SCHEMA)
    write_staging(inside_found, run / "private/staging", run_folder=run)
    write_staging(outside_found, run / "private/staging-outside", run_folder=run)
    inside_link = next((run / "private/staging").glob("*/input"))
    outside_link = next((run / "private/staging-outside").glob("*/input"))
    assert not os.path.isabs(os.readlink(inside_link))
    assert inside_link.resolve() == (run / "data/sub-01.nii").resolve()
    assert os.readlink(outside_link) == os.path.realpath(outside / "sub-01.nii")
    # the link keeps its target's time, as absolute links do (a rebuilt staging folder reruns nothing)
    assert os.lstat(inside_link).st_mtime_ns == os.stat(run / "data/sub-01.nii").st_mtime_ns


@pytest.mark.integration
def test_a_finished_run_moved_to_another_path_plans_no_job(tmp_path_factory):
    """The run and its checkout move together (the README's way: run inside the checkout); the
    old place is gone, as after a move to another machine."""
    work = copy_checkout(tmp_path_factory, "relocation")
    config = yaml.safe_load(TEST_CONFIG.read_text())
    # one cheap model with a family whose modules import others (cvae -> base, losses): a training
    # job's code inputs are what used to carry the checkout's absolute path
    config["models"] = {"cvae": {**config["models"]["cvae"], "seeds": [0]}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(work, "--cores", "2", "discover_inputs")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    mark_all_produced(work)
    assert dry_run_jobs(work) == {}
    # what Snakemake compares (each job's input, params, code) never holds the run folder's path
    records = list((work / ".snakemake/metadata").iterdir())
    assert records
    assert not [r.name for r in records if str(work).encode() in r.read_bytes()]

    moved = tmp_path_factory.mktemp("scratch") / "elsewhere" / "run"
    shutil.copytree(work, moved, symlinks=True)
    work.rename(work.with_name("gone"))
    assert dry_run_jobs(moved) == {}


@pytest.mark.integration
def test_the_link_to_a_source_inside_the_run_folder_survives_a_move(tmp_path_factory):
    """input.source inside the run folder (data copied beside the results): Snakemake sees the
    source through private/source, whose target would otherwise be rewritten after a move, and the
    link's new time would rerun discovery and everything after it."""
    work = copy_checkout(tmp_path_factory, "relocation-source")
    (work / "data").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), work / "data" / "sub-01.nii.gz")
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["input"]["source"] = "data"
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(work, "-n", "--cores", "1", "discover_inputs")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    link = work / "private" / "source"
    assert os.readlink(link) == os.path.join("..", "data")
    before = os.lstat(link).st_mtime_ns

    moved = tmp_path_factory.mktemp("scratch") / "elsewhere" / "run"
    shutil.copytree(work, moved, symlinks=True)
    work.rename(work.with_name("gone"))
    result = snakemake(moved, "-n", "--cores", "1", "discover_inputs")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert os.lstat(moved / "private" / "source").st_mtime_ns == before
    assert (moved / "private" / "source").resolve() == (moved / "data").resolve()
