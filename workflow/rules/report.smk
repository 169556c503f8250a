rule report:
    """The self-contained comparison report."""
    input:
        subjects="results/inputs/subjects.tsv",
        ingest_qc="results/qc/ingest.tsv",
        registration_qc="results/qc/registration.tsv",
        registered=per_subject("results/register/{subject}"),
        table="results/slices/slices.tsv",
        images="results/slices/images.npy",
        original="results/metrics/original.json",
        metrics=expand("results/metrics/{model}.json", model=MODELS),
        summaries=expand("results/models/{model}/summary.json", model=MODELS),
        losses=expand("results/models/{model}/losses.csv", model=MODELS),
        grids=expand("results/samples/{model}/grid.png", model=MODELS),
        reconstructions=expand("results/samples/{model}/reconstructions.npy", model=MODELS),
        reader_scores="results/reader_study/scores.json",
        **FID_OUTPUTS,
        **EVALUATION_OUTPUTS,
    output:
        "results/report/index.html",
    log:
        "logs/report.log",
    params:
        models=MODELS,
        synthetic_cohort=config["input"]["source"] == "demo",
        settings={k: settings(k) for k in ("registration", "sampling")},
        title=config["report"]["title"],
    message:
        "Writing the comparison report"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/report.py"
