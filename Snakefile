# Brain MRI -> trained generative models, synthetic slices and a comparison report.
# Run:  snakemake --profile profiles/local all      (workstation)
#       snakemake --profile profiles/slurm all      (cluster)

import sys

from snakemake.utils import min_version

min_version("9.0")


# config.yaml is the demo's configuration and the default. A config of one's own
# (--configfile my.yaml) replaces it instead of being merged into it: merged, it would
# silently inherit the demo's ten models and its demo-sized settings.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# `snakemake --report report.zip` describes the workflow with this text and the outputs marked report().
report: "workflow/report/workflow.rst"


# Jobs (local scripts and cluster jobs alike) import the library from this checkout,
# so a job never runs a different pipeline_lib than the one the DAG was built with.
LIBRARY = str(Path(workflow.basedir) / "src")
sys.path.insert(0, LIBRARY)

from pipeline_lib.core.jobs import export_library_path
from pipeline_lib.core.private import PRIVATE_DIR, make_owner_only
from pipeline_lib.core.rule_jobs import raise_rule_job_problems

export_library_path(LIBRARY)


# ----- rules ---------------------------------------------------------------
include: "workflow/rules/common.smk"
include: "workflow/rules/guard.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/register.smk"
include: "workflow/rules/slice.smk"
include: "workflow/rules/volume.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/fid.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/volumetric.smk"
include: "workflow/rules/reader_study.smk"
include: "workflow/rules/reader_volumes.smk"
include: "workflow/rules/report.smk"


# Rules that name a library function (params.job, run by scripts/rule_job.py): a misspelt function
# or argument fails here, naming the rule and key, before any job runs.
raise_rule_job_problems(workflow.rules)


# Snakemake itself writes into private/ after a job (the .snakemake_timestamp of the staging
# folder) with the umask's permissions; the jobs make their own outputs owner-only.
onsuccess:
    make_owner_only(PRIVATE_DIR)


onerror:
    make_owner_only(PRIVATE_DIR)


# ----- target --------------------------------------------------------------
rule all:
    default_target: True
    input:
        rules.report.output.html,
        expand(rules.reader_kit.output.summary, dataset=reader_datasets()),
        # 3-D runs (none: nothing added)
        per_model(rules.sample_volumes.output.volumes, VOLUME_RUNS),
        # every 3-D run's volumetric evaluation (none without 3-D runs)
        per_volume_run(rules.volumetric_metrics.output.metrics),
