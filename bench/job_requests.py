"""Every job's cluster request (mem_mb, runtime, threads) as a dry run computes it.

    python bench/job_requests.py [--directory DIR] [--configfile FILE] [--attempt N] [--profile profiles/slurm]
                                 [--subjects N] [--per-rule] [--out FILE.tsv] [TARGET ...]

``snakemake -n`` prints a rule's message instead of its resources, so this builds the same DAG
through Snakemake's API, runs the dry run and lists each job's resources (rules' sizes come from
pipeline_lib/core/resources.py, docs/RESOURCES.md). Before slicing, dataset-sized requests are
estimated from the configuration and the discovered cohort; run the ``discover_inputs`` checkpoint
first so the cohort is known. ``--attempt 2`` shows the requests of a first retry.

``--subjects N`` plans a cohort of N subjects without any image: a copy of the checkout in a
temporary folder whose discovery table lists N placeholder subjects, with the configuration of the
(one) ``--configfile`` (e.g. a preset at its published size, or 40,000 subjects); ``--per-rule``
prints one row per rule (jobs, the range of mem_mb and runtime) as a Markdown table instead of
one per job.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from collections import Counter
from pathlib import Path

COLUMNS = ("rule", "wildcards", "threads", "mem_mb", "runtime")


def read_profile(profile: Path | None) -> dict:
    """The profile's settings as snakemake reads them (``default-resources`` as ``name=expression``)."""
    from snakemake.profiles import ProfileConfigFileParser

    if profile is None:
        return {}
    with open(profile / "config.yaml") as handle:
        return dict(ProfileConfigFileParser().parse(handle))


def job_requests(directory: Path, targets: list[str], configfiles: list[Path], attempt: int = 1,
                 profile: Path | None = None) -> tuple[list[dict], list[dict]]:
    """One row per job the dry run would execute: rule, wildcards and its resources (rules' own,
    else the profile's default-resources); and one row per group job (the profile's
    group-components), each a single cluster submission."""
    from snakemake.api import SnakemakeApi
    from snakemake.resources import GroupResources, Resources
    from snakemake_interface_common.exceptions import WorkflowError
    from snakemake.settings.types import (ConfigSettings, DAGSettings, GroupSettings, OutputSettings,
                                          ResourceSettings, StorageSettings)

    settings = read_profile(profile)
    components = dict(entry.split("=") for entry in settings.get("group-components", []))

    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow_api = api.workflow(
            # the profile's cores bound a group job's width, as on the cluster
            resource_settings=ResourceSettings(cores=int(settings.get("cores", 256)), nodes=int(settings.get("jobs", 100)),
                                               default_resources=Resources.parse(
                settings.get("default-resources", []), defaults="full", allow_expressions=True)),
            config_settings=ConfigSettings(configfiles=configfiles),
            storage_settings=StorageSettings(),
            snakefile=directory / "Snakefile",
            workdir=directory,
        )
        dag_api = workflow_api.dag(dag_settings=DAGSettings(targets=set(targets)))
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                dag_api.execute_workflow(executor="dryrun", group_settings=GroupSettings(
                    group_components={k: int(v) for k, v in components.items()}))
            except WorkflowError:
                # Through the API (not the CLI), the local dry-run scheduler stops at the first
                # group job of the cluster profile; the DAG and its groups are complete by then.
                pass
        dag = workflow_api._workflow.dag
        rows, groups = [], {}
        # the dry run marks the jobs it would run as finished
        for job in sorted(dag.needrun_jobs(exclude_finished=False), key=lambda j: (j.rule.name, str(j.wildcards_dict))):
            job.attempt = attempt
            job.reset_params_and_resources()
            resources = job.resources
            rows.append({"rule": job.rule.name,
                         "wildcards": ",".join(f"{k}={v}" for k, v in sorted(job.wildcards_dict.items())),
                         "threads": job.threads, "mem_mb": resources.get("mem_mb"),
                         "runtime": resources.get("runtime")})
            group = dag.get_job_group(job)
            if group is not None:
                groups[id(group)] = group
        group_rows = []
        for group in groups.values():
            # as the cluster executor computes it (the dry run's is the local one, which adds the
            # ingest and register layers instead of taking the larger)
            resources = GroupResources.basic_layered(toposorted_jobs=group.toposorted,
                                                     constraints=group.global_resources, run_local=False,
                                                     additive_resources=["runtime"], sortby=["runtime"])
            group_rows.append({"group": group.groupid, "jobs": len(group.jobs), "cores": resources.get("_cores"),
                               "mem_mb": resources.get("mem_mb"), "runtime": resources.get("runtime")})
        return rows, group_rows


def planned_checkout(directory: Path, configfile: Path | None, subjects: int, folder: Path) -> Path:
    """A copy of the checkout under ``folder`` planning ``subjects`` placeholder subjects
    (tests/helpers/workflow.discovered_checkout) with ``configfile``'s configuration (the
    checkout's config.yaml without one); the input folder named in it need not exist."""
    import shutil

    import yaml

    sys.path.insert(0, str(directory / "tests"))
    from helpers.workflow import discovered_checkout

    config = yaml.safe_load((configfile or directory / "config.yaml").read_text())
    config.setdefault("input", {})["source"] = str(folder)
    work = discovered_checkout(folder, config, subjects)
    shutil.copytree(directory / "presets", work / "presets")  # report.published names its tables there
    return work


def per_rule_table(rows: list[dict]) -> list[str]:
    """One Markdown row per rule: its jobs and the range of their mem_mb and runtime."""
    lines = ["| rule | jobs | mem_mb | runtime (min) |", "|---|---|---|---|"]
    for rule in sorted({row["rule"] for row in rows}):
        jobs = [row for row in rows if row["rule"] == rule]
        cells = []
        for column in ("mem_mb", "runtime"):
            low, high = min(row[column] for row in jobs), max(row[column] for row in jobs)
            cells.append(f"{low:,}" if low == high else f"{low:,}-{high:,}")
        lines.append(f"| {rule} | {len(jobs)} | {cells[0]} | {cells[1]} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", default=["all"])
    parser.add_argument("--directory", type=Path, default=Path.cwd())
    parser.add_argument("--configfile", type=Path, action="append", default=[])
    parser.add_argument("--attempt", type=int, default=1)
    parser.add_argument("--profile", type=Path, default=Path("profiles/slurm"),
                        help="take default-resources from this profile (relative to --directory)")
    parser.add_argument("--subjects", type=int, help="plan this many placeholder subjects (no images) in a temporary copy")
    parser.add_argument("--per-rule", action="store_true", help="one Markdown row per rule instead of one per job")
    parser.add_argument("--out", type=Path, help="write the table here as TSV (default: print)")
    args = parser.parse_args()
    directory = args.directory.resolve()
    profile = directory / args.profile
    configfiles = args.configfile
    with contextlib.ExitStack() as stack:
        if args.subjects is not None:
            import tempfile

            if len(configfiles) > 1:
                parser.error("--subjects takes one --configfile (the whole configuration)")
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="job_requests_")))
            directory = planned_checkout(directory, configfiles[0].resolve() if configfiles else None,
                                         args.subjects, folder)
            configfiles = []
        rows, groups = job_requests(directory, args.targets, configfiles, args.attempt,
                                    profile if profile.is_dir() else None)
    if args.per_rule:
        lines = per_rule_table(rows)
    else:
        lines = ["\t".join(COLUMNS)] + ["\t".join(str(row[c]) for c in COLUMNS) for row in rows]
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    else:
        print("\n".join(lines))
    counts = Counter(row["rule"] for row in rows)
    print(f"{len(rows)} jobs: " + ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items())), file=sys.stderr)
    grouped = sum(group["jobs"] for group in groups)
    print(f"{len(rows) - grouped + len(groups)} cluster submissions: {len(groups)} group jobs "
          f"({grouped} jobs) and {len(rows) - grouped} single jobs", file=sys.stderr)
    for group in groups[:3]:
        print(f"  group {group['group']}: {group['jobs']} jobs, {group['cores']} cores, "
              f"{group['mem_mb']} MB, {group['runtime']} min", file=sys.stderr)


if __name__ == "__main__":
    main()
