# Per-run inputs of the report, by name: each becomes a file of the run's ModelOutputs
# (pipeline_lib/report/inputs.py) under this name; a JSON output is read as the run's record of that
# name (run.<name>), the others (report/inputs.py's FILE_INPUTS) are read by path. A new per-run
# metric is one entry here and a section that reads run.<name>.
REPORT_RUN_INPUTS = dict(
    summary=rules.train.output.summary,
    losses=rules.train.output.losses,
    grid=rules.sample.output.grid,
    reconstructions=rules.sample.output.reconstructions,
    metrics=rules.metrics_model.output[0],
    distribution=rules.distribution_metrics.output[0],
    domain=rules.domain_metrics.output[0],
    memorization=rules.memorization_audit.output.audit,
    gallery=rules.memorization_audit.output.gallery,
    conditioning=rules.conditioning_accuracy.output[0],
    utility=rules.augmentation_utility.output[0],
    validation=rules.train.output.validation,
    snapshots=rules.train.output.snapshots,
    diversity=rules.diversity_metrics.output[0],
    intensity=rules.intensity_statistics.output[0],
)

# Per-3-D-run inputs (VOLUME_RUNS): the same scheme, read into ReportInputs.volume_runs; named on the
# rule only when there are 3-D runs, so that a 2-D pipeline's report job is unchanged.
REPORT_VOLUME_RUN_INPUTS = dict(
    volumetric=rules.volumetric_metrics.output.metrics,
    volumetric_views=rules.volumetric_metrics.output.views,
)


rule report:
    """The self-contained comparison report. Per-run inputs are REPORT_RUN_INPUTS, each a list in the
    order of RUNS (model, seed); per-dataset inputs are named as the fields of
    pipeline_lib.report.inputs.DatasetOutputs, in the order of USED_DATASETS (reader scores: reader_datasets())."""
    input:
        subjects=rules.discover_inputs.output.subjects,
        ingest_qc=rules.ingest_qc.output.table,
        registration_qc=rules.qc_tables.output.registration,
        registered=per_subject(rules.register.output[0]),
        table=per_dataset(rules.slice_dataset.output.table),
        images=per_dataset(rules.slice_dataset.output.images),
        original=per_dataset(rules.metrics_original.output[0]),
        distribution_original=per_dataset(rules.distribution_metrics_original.output[0]),
        domain_network=per_dataset(rules.domain_network.output.summary),
        domain_original=per_dataset(rules.domain_metrics_original.output[0]),
        diversity_original=per_dataset(rules.diversity_original.output[0]),
        reader_scores=expand(rules.reader_scores.output.scores, dataset=reader_datasets()),
        **{name: per_model(output) for name, output in REPORT_RUN_INPUTS.items()},
        **per_volume_run_inputs(REPORT_VOLUME_RUN_INPUTS),
    output:
        html=report(
            "results/report/index.html",
            caption="../report/comparison_report.rst",
            category="1. Comparison report",
        ),
        summary=report(
            "results/report/summary.tsv",
            caption="../report/summary_table.rst",
            category="1. Comparison report",
        ),
    log:
        "logs/report.log",
    params:
        runs=[[model, seed] for model, seed in RUNS],
        run_inputs=list(REPORT_RUN_INPUTS),
        datasets=USED_DATASETS,
        reader_datasets=reader_datasets(),
        # Named on the page so that the coordinator knows where the readers' answers go.
        reader_responses={dataset: reader_responses_dir(dataset) for dataset in reader_datasets()},
        reader_kits={dataset: expand(rules.reader_kit.output.kit, dataset=dataset)[0] for dataset in reader_datasets()},
        model_datasets=MODEL_DATASET,
        synthetic_cohort=is_demo_cohort(),
        registration=section_settings("registration"),
        **later_stage_settings("registration", "report"),
        preprocessing=section_settings("preprocessing"),
        sampling=section_settings("sampling"),
        title=lookup(dpath="report/title", within=config),
        # A paper's published tables beside this run's values (core/published.py; null = none).
        published=lookup(dpath="report/published", within=config),
        # Why this run differs from the paper, per protocol item (report/protocol_section.py).
        protocol_notes=lookup(dpath="report/protocol_notes", within=config, default={}),
        **volume_run_params(REPORT_VOLUME_RUN_INPUTS),
    resources:
        mem_mb=mem_report,
        runtime=runtime_report,
    message:
        "Writing the comparison report"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/report.py"
