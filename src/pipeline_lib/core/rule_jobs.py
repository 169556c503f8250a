"""One adapter for every rule whose work is a single library function: the rule's params hold
``**rule_job("pipeline_lib.evaluation.memorization.memorization_job")`` (the function's name in
``params.job``, a digest of its code in ``params.job_code``) and it runs
``workflow/scripts/rule_job.py``; no script of its own.

The function receives the rule's files and values by name:

* each named input ``x`` as ``x=Path(...)``,
* each named output ``x`` as ``out_x=Path(...)``; a rule with one unnamed output passes it as ``out``
  (the prefix keeps an output apart from an input of the same name),
* each param other than ``job`` and ``job_code`` as it is,
* ``threads`` when the function has that parameter.

The code digest makes the rule rerun when its function's module changes, or a module of the same
stage package (``pipeline_lib.evaluation``) that it imports, and only then: by content, like every
param, so a checkout that only touches files reruns nothing. Shared modules (``core``) are left
out, as the train rule's ``family_sources`` leaves them out: editing them reruns nothing.

:func:`rule_job_problems` checks this contract while Snakemake builds the DAG, from the function's
source (no import: the DAG never imports torch), so a misspelt function or argument fails
``snakemake -n`` with the rule and key named instead of a job failing hours later.

A per-run rule (wildcards ``model`` and ``seed``) runs under ``guard_run_job``, any other under
``guard_dataset_job`` (core/guard.py); the guard's reasons name the rule.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
import os
from pathlib import Path
from typing import Callable, Iterable

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.source_files import imported_sources

#: The param that names the function and the one with its code's digest; every other param is passed to it.
JOB_PARAM = "job"
CODE_PARAM = "job_code"
#: The argument a rule's single unnamed output is passed as.
SINGLE_OUTPUT = "out"
#: Passed only to functions that take it.
THREADS = "threads"


def output_argument(name: str) -> str:
    return f"out_{name}"


def rule_arguments(inputs: Iterable[str], outputs: Iterable[str], n_outputs: int, params: Iterable[str],
                   ) -> tuple[list[str], list[str]]:
    """The argument names a rule provides (inputs, outputs, params; ``threads`` aside) and its
    problems with the contract (unnamed inputs, unnamed outputs beside others)."""
    outputs = list(outputs)
    problems = []
    if outputs and len(outputs) != n_outputs or not outputs and n_outputs != 1:
        problems.append("name every output, or declare exactly one unnamed output (passed as 'out')")
    names = list(inputs) + ([output_argument(o) for o in outputs] if outputs else [SINGLE_OUTPUT])
    names += [p for p in params if p not in (JOB_PARAM, CODE_PARAM)]
    return names, problems


def job_source(job: str) -> tuple[Path | None, str]:
    """The source file of ``job``'s module (None when there is none) and the function's name."""
    module, _, function = job.rpartition(".")
    if not module or not function:
        return None, function
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None, function
    origin = getattr(spec, "origin", None)
    return (Path(origin) if origin and origin.endswith(".py") else None), function


def job_code_files(job: str) -> list[Path]:
    """The source of ``job``'s module and of every module of its stage package (the first two parts
    of its name, e.g. ``pipeline_lib.evaluation``) that it imports, directly or not, at any level."""
    source, _ = job_source(job)
    if source is None:
        return []
    parts = job.rpartition(".")[0].split(".")
    if len(parts) < 3 or source.name == "__init__.py":
        return [source]
    return imported_sources(source, [(".".join(parts[:2]), source.parents[len(parts) - 3])])


def rule_job(job: str) -> dict[str, str]:
    """A rule's params for ``job`` (``params: **rule_job(...)``): its name and the digest of
    :func:`job_code_files` (their contents and names inside the package: no absolute path, so a
    moved checkout reruns nothing). A missing module gives an empty digest; the check after the
    last include then names the rule."""
    digest = hashlib.sha256()
    files = job_code_files(job) if isinstance(job, str) else []
    root = os.path.commonpath([path.parent for path in files]) if files else None
    for path in files:
        digest.update(f"{os.path.relpath(path, root)}\0".encode() + path.read_bytes() + b"\0")
    return {JOB_PARAM: job, CODE_PARAM: digest.hexdigest()[:16] if files else ""}


def job_problems(rule: str, job, provided: list[str]) -> list[str]:
    """What is wrong with ``params.job`` of ``rule`` given the argument names the rule provides."""
    where = f"rule {rule}: params.{JOB_PARAM}"
    if not isinstance(job, str):
        return [f"{where} must be a dotted function name, e.g. 'pipeline_lib.evaluation.memorization."
                f"memorization_job', not {job!r}"]
    source, function = job_source(job)
    if source is None:
        return [f"{where} '{job}': no Python module '{job.rpartition('.')[0]}'"]
    tree = ast.parse(source.read_text(), filename=str(source))
    found = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == function]
    if not found:
        return [f"{where} '{job}': {source.name} has no function '{function}'"]
    args = found[0].args
    positional = args.posonlyargs + args.args
    with_defaults = {a.arg for a in positional[len(positional) - len(args.defaults):]}
    with_defaults |= {a.arg for a, default in zip(args.kwonlyargs, args.kw_defaults) if default is not None}
    accepted = [a.arg for a in positional + args.kwonlyargs]
    problems = []
    if args.vararg is not None or args.posonlyargs:
        problems.append(f"{where} '{job}': the function must take its arguments by name (no *args, no "
                        "positional-only parameters)")
    if args.kwarg is None:
        problems += [f"{where} '{job}': the function has no parameter '{name}' (the rule's "
                     f"{_rule_key(name)})" for name in provided if name not in accepted]
    missing = [a for a in accepted if a not in provided and a not in with_defaults and a != THREADS]
    problems += [f"{where} '{job}': the rule gives no '{name}' (expected as {_rule_key(name)})" for name in missing]
    return problems


def _rule_key(argument: str) -> str:
    if argument == SINGLE_OUTPUT:
        return "its one unnamed output"
    if argument.startswith("out_"):
        return f"output.{argument[4:]} or params.{argument}"
    return f"input.{argument} or params.{argument}"


def rule_job_problems(rules) -> list[str]:
    """Every problem of the Snakemake rules that name a ``params.job``, each naming rule and key."""
    problems = []
    for rule in rules:
        params = dict(rule.params.items())
        if JOB_PARAM not in params:
            continue
        provided, shape = rule_arguments(rule.input.keys(), rule.output.keys(), len(rule.output), params)
        if CODE_PARAM not in params:
            shape.append(f"params.{JOB_PARAM} without params.{CODE_PARAM}: write **rule_job({params[JOB_PARAM]!r}) "
                         "in the rule's params, so that the rule reruns when its code changes")
        if len(rule.input.keys()) != len(rule.input):
            shape.append("name every input (it is passed to the function by its name)")
        problems += [f"rule {rule.name}: {problem}" for problem in shape]
        problems += job_problems(rule.name, params[JOB_PARAM], provided)
    return problems


def raise_rule_job_problems(rules) -> None:
    """An InputError listing :func:`rule_job_problems`, if any (called once the rules are read)."""
    problems = rule_job_problems(rules)
    if problems:
        raise InputError("rules naming a library job:\n  " + "\n  ".join(problems))


# ------------------------------------------------------------------ in the job


def load_job(job: str) -> Callable:
    module, _, function = job.rpartition(".")
    return getattr(importlib.import_module(module), function)


def job_arguments(snakemake, function: Callable) -> dict:
    """The keyword arguments of ``function`` from the ``snakemake`` object (see the module docstring)."""
    arguments = {name: _paths(value) for name, value in snakemake.input.items()}
    named_outputs = dict(snakemake.output.items())
    if named_outputs:
        arguments.update({output_argument(name): Path(value) for name, value in named_outputs.items()})
    else:
        arguments[SINGLE_OUTPUT] = Path(snakemake.output[0])
    arguments.update({name: value for name, value in snakemake.params.items() if name not in (JOB_PARAM, CODE_PARAM)})
    if THREADS in inspect.signature(function).parameters:
        arguments[THREADS] = snakemake.threads
    return arguments


def _paths(value):
    """A path, or a list of paths for an input of several files."""
    return Path(value) if isinstance(value, str) else [Path(v) for v in value]


def run_rule_job(snakemake) -> None:
    """The whole of a rule-job adapter: logs to the rule's log, then the named function under the
    guard of a per-run or a per-dataset job."""
    from pipeline_lib.core.guard import guard_dataset_job, guard_run_job
    from pipeline_lib.core.jobs import start_job

    start_job(snakemake.log[0], snakemake.threads)
    job = snakemake.params[JOB_PARAM]

    def work():
        function = load_job(job)
        function(**job_arguments(snakemake, function))

    wildcards = dict(snakemake.wildcards.items())
    guard = guard_run_job if {"model", "seed"} <= wildcards.keys() else guard_dataset_job
    guard(snakemake, work, stage=snakemake.rule)
