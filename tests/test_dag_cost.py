"""What keeps a large cohort's DAG cheap to build (bench/dag_2029.py, bench/results/dag_40000.md):
the per-job callables' signatures are inspected once, and subjects.tsv is parsed once per version
of the file, a changed or replaced table being read again."""

from __future__ import annotations

import inspect
import os

from snakemake.common import FUNC_OVERWRITE_PARAMS_ATTR, get_function_params, get_input_function_aux_params

from pipeline_lib.core import resources
from pipeline_lib.imaging.discovery import file_state


def test_snakemake_passes_the_same_arguments_without_inspecting_again(monkeypatch):
    @resources.signature_once
    def mem_mb(wildcards, input, attempt):
        return attempt

    @resources.signature_once
    def anything(wildcards, **kwargs):
        return kwargs

    inspected = []
    real_signature = inspect.signature
    monkeypatch.setattr(inspect, "signature", lambda func, *a, **k: inspected.append(func) or real_signature(func, *a, **k))
    offered = {"input": ["a"], "attempt": 2, "threads": 1, "rulename": "ingest"}
    assert get_input_function_aux_params(mem_mb, offered) == {"input": ["a"], "attempt": 2}
    assert get_input_function_aux_params(anything, offered) == offered
    assert "groupid" not in get_function_params(mem_mb)
    assert inspected == []
    # the attribute Snakemake reads: a renamed one would silently bring the per-call inspection back
    assert resources.SNAKEMAKE_PARAMETERS_ATTRIBUTE == FUNC_OVERWRITE_PARAMS_ATTR


def test_a_rewritten_subject_table_is_a_new_state_even_at_the_same_time_stamp(tmp_path):
    table = tmp_path / "subjects.tsv"
    table.write_text("subject\tformat\nsub-0000000001\tnifti\n")
    before = file_state(table)
    assert file_state(table) == before
    stamp = os.stat(table).st_mtime_ns

    # replaced atomically (core.io), same size, the old time stamp restored: a new inode
    replacement = tmp_path / "subjects.tsv.tmp"
    replacement.write_text("subject\tformat\nsub-0000000002\tnifti\n")
    os.utime(replacement, ns=(stamp, stamp))
    os.replace(replacement, table)
    replaced = file_state(table)
    assert replaced != before

    # rewritten in place to another size within the same tick
    table.write_text("subject\tformat\nsub-0000000002\tdicom series\n")
    os.utime(table, ns=(stamp, stamp))
    assert file_state(table) != replaced
