# The volumetric evaluation of 3-D runs (VOLUME_RUNS in common.smk): the 2-D metrics on three planes
# of the sampled volumes, the 2.5-D FID, 3-D MS-SSIM, nearest-training-volume memorization, brain
# volume and tissue intensity against the run's volume dataset (docs/VOLUMES.md). Without 3-D runs
# nothing asks for it, so the 2-D pipeline's DAG is unchanged.

rule volumetric_metrics:
    """Every volumetric metric of one 3-D run against its volume dataset, and the orthogonal views of
    samples beside real test volumes; the real volumes are read a chunk at a time."""
    input:
        samples=rules.sample_volumes.output.volumes,
        labels=rules.sample_volumes.output.labels,
        volumes=run_volumes("volumes"),
        table=run_volumes("table"),
        grid=run_volumes("grid"),
        weights=fid_weights_input(),
    output:
        metrics=f"results/metrics/{RUN}.volumetric.json",
        views=report(
            f"results/metrics/{RUN}.volumetric.png",
            caption="../report/volumetric_views.rst",
            category="2. Samples",
            subcategory="{model}",
            labels={"model": "{model}", "seed": "{seed}", "figure": "orthogonal views"},
        ),
    log:
        f"logs/volumetric/{RUN}.log",
    params:
        # the keys of the 2-D metrics' sections that this job reads, so no other key reruns it
        sharpness_scale=lookup(dpath="metrics/sharpness_scale", within=config),
        n_pairs=lookup(dpath="evaluation/diversity/n_pairs", within=config),
        kernel_size=lookup(dpath="evaluation/diversity/kernel_size", within=config),
        percentile=lookup(dpath="evaluation/memorization/percentile", within=config),
        seed=lookup(dpath="sampling/seed", within=config),
        covariates=lambda wildcards: list(config["models"][wildcards.model].get("condition_on_covariates") or []),
    wildcard_constraints:
        model="|".join(VOLUME_MODEL_DATASET) or "(?!)",
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=mem_volumetric,
        runtime=runtime_volumetric,
    message:
        "Volumetric metrics of 3-D model {wildcards.model} (seed {wildcards.seed})"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/volumetric_metrics.py"
