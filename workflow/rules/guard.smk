# Guarded jobs (pipeline_lib.core.guard): per-subject and per-run work runs in a child process
# that the job watches, so that a job killed on its last attempt still leaves a "failed" record
# and the cohort and the report go on. A guarded rule declares `attempt=job_attempt` in its
# resources: the job learns whether this attempt is its last.

from pipeline_lib.core.guard import attempt_resource, export_retries
from pipeline_lib.core.resources import signature_once


@signature_once
def job_attempt(wildcards, attempt):
    """Resource `attempt`: "<this attempt>/<attempts>" (a string, so a group job does not sum it).

    A cluster job runs a Snakemake of its own, started with `--retries 0`: only the main process
    knows the profile's retries (once the run starts, not while the Snakefile is read), so it
    hands them on in the environment, which sbatch exports to the job."""
    if not (workflow.remote_exec or workflow.subprocess_exec) and workflow.execution_settings is not None:
        export_retries(workflow.execution_settings.retries)
    return attempt_resource(attempt)
