"""Every job's cluster request (mem_mb, runtime, threads) as a dry run computes it.

    python bench/job_requests.py [--directory DIR] [--configfile FILE] [--attempt N] [--profile profiles/slurm]
                                 [--out FILE.tsv] [TARGET ...]

``snakemake -n`` prints a rule's message instead of its resources, so this builds the same DAG
through Snakemake's API, runs the dry run and lists each job's resources (rules' sizes come from
pipeline_lib/core/resources.py, docs/RESOURCES.md). Before slicing, dataset-sized requests are
estimated from the configuration and the discovered cohort; run the ``discover_inputs`` checkpoint
first so the cohort is known. ``--attempt 2`` shows the requests of a first retry.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from collections import Counter
from pathlib import Path

COLUMNS = ("rule", "wildcards", "threads", "mem_mb", "runtime")


def profile_default_resources(profile: Path) -> list[str]:
    """The profile's default-resources entries (``name=expression``), as snakemake reads them."""
    from snakemake.profiles import ProfileConfigFileParser

    with open(profile / "config.yaml") as handle:
        return list(ProfileConfigFileParser().parse(handle).get("default-resources", []))


def job_requests(directory: Path, targets: list[str], configfiles: list[Path], attempt: int = 1,
                 profile: Path | None = None) -> list[dict]:
    """One row per job the dry run would execute: rule, wildcards and its resources (rules' own,
    else the profile's default-resources)."""
    from snakemake.api import SnakemakeApi
    from snakemake.resources import Resources
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, ResourceSettings,
                                          StorageSettings)

    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow_api = api.workflow(
            # as many cores as any rule asks for threads, so threads are not capped
            resource_settings=ResourceSettings(cores=256, default_resources=Resources.parse(
                profile_default_resources(profile) if profile else [], defaults="full", allow_expressions=True)),
            config_settings=ConfigSettings(configfiles=configfiles),
            storage_settings=StorageSettings(),
            snakefile=directory / "Snakefile",
            workdir=directory,
        )
        dag_api = workflow_api.dag(dag_settings=DAGSettings(targets=set(targets)))
        with contextlib.redirect_stdout(io.StringIO()):
            dag_api.execute_workflow(executor="dryrun")
        dag = workflow_api._workflow.dag
        rows = []
        # the dry run marks the jobs it would run as finished
        for job in sorted(dag.needrun_jobs(exclude_finished=False), key=lambda j: (j.rule.name, str(j.wildcards_dict))):
            job.attempt = attempt
            job.reset_params_and_resources()
            resources = job.resources
            rows.append({"rule": job.rule.name,
                         "wildcards": ",".join(f"{k}={v}" for k, v in sorted(job.wildcards_dict.items())),
                         "threads": job.threads, "mem_mb": resources.get("mem_mb"),
                         "runtime": resources.get("runtime")})
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", default=["all"])
    parser.add_argument("--directory", type=Path, default=Path.cwd())
    parser.add_argument("--configfile", type=Path, action="append", default=[])
    parser.add_argument("--attempt", type=int, default=1)
    parser.add_argument("--profile", type=Path, default=Path("profiles/slurm"),
                        help="take default-resources from this profile (relative to --directory)")
    parser.add_argument("--out", type=Path, help="write the table here as TSV (default: print)")
    args = parser.parse_args()
    directory = args.directory.resolve()
    profile = directory / args.profile
    rows = job_requests(directory, args.targets, args.configfile, args.attempt, profile if profile.is_dir() else None)
    lines = ["\t".join(COLUMNS)] + ["\t".join(str(row[c]) for c in COLUMNS) for row in rows]
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    else:
        print("\n".join(lines))
    counts = Counter(row["rule"] for row in rows)
    print(f"{len(rows)} jobs: " + ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items())), file=sys.stderr)


if __name__ == "__main__":
    main()
