# Ungría Hirte et al.'s pixel metrics (dataset similarity, ISD, minimum ISD, sharpness,
# reconstruction MSE) of every model and of the real reference row.


rule metrics_model:
    """Pixel metrics of one model's samples (and reconstructions) against the training slices."""
    input:
        samples=rules.sample.output.samples,
        reconstructions=rules.sample.output.reconstructions,
        images=model_slices("images"),
        table=model_slices("table"),
    output:
        f"results/metrics/{RUN}.json",
    log:
        f"logs/metrics/{RUN}.log",
    params:
        metrics=section_settings("metrics"),
        sampling=section_settings("sampling"),
    resources:
        attempt=job_attempt,
        mem_mb=mem_streamed(),
        runtime=runtime_pixel_metrics,
    message:
        "Computing metrics of model {wildcards.model} (seed {wildcards.seed})"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/metrics_model.py"


rule metrics_original:
    """The reference row of a dataset: its real test slices against its training slices."""
    input:
        images=rules.slice_dataset.output.images,
        table=rules.slice_dataset.output.table,
    output:
        "results/metrics/original/{dataset}.json",
    log:
        "logs/metrics/original/{dataset}.log",
    params:
        metrics=section_settings("metrics"),
        seed=lookup(dpath="sampling/seed", within=config),
    resources:
        attempt=job_attempt,
        mem_mb=mem_streamed(),
        runtime=runtime_pixel_metrics,
    message:
        "Computing metrics of the real reference set of dataset {wildcards.dataset}"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/metrics_original.py"
