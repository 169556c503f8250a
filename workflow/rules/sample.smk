rule sample:
    """Draw samples from a trained model; reconstruct test slices where the family can."""
    input:
        weights=rules.train.output.weights,
        images=model_slices("images"),
        table=model_slices("table"),
    output:
        samples=f"results/samples/{RUN}/samples.npy",
        grid=report(
            f"results/samples/{RUN}/grid.png",
            caption="../report/sample_grid.rst",
            category="2. Samples",
            subcategory="{model}",
            labels={"model": "{model}", "seed": "{seed}"},
        ),
        reconstructions=f"results/samples/{RUN}/reconstructions.npy",
        labels=f"results/samples/{RUN}/labels.tsv",
    log:
        f"logs/sample/{RUN}.log",
    params:
        sampling=section_settings("sampling"),
    threads: 2
    resources:
        attempt=job_attempt,
        mem_mb=mem_sample,
        runtime=runtime_sample,
    message:
        "Sampling model {wildcards.model} (seed {wildcards.seed})"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/sample.py"


rule sample_volumes:
    """Draw volumes from a trained 3-D model (VOLUME_RUNS only): (n, C, X, Y, Z) float32 in [0, 1] on
    the axes of its volume dataset's volumes.npy, their class labels, and the axial, coronal and
    sagittal middle slices of the first few (docs/VOLUMES.md)."""
    input:
        weights=rules.train.output.weights,
        # a covariate-conditional model draws its requests from the training volumes' covariates
        table=run_volumes("table"),
    output:
        volumes="results/volume_samples/{model}/seed{seed}/volumes.npy",
        labels="results/volume_samples/{model}/seed{seed}/labels.tsv",
        views=report(
            "results/volume_samples/{model}/seed{seed}/views.png",
            caption="../report/volume_views.rst",
            category="2. Samples",
            subcategory="{model}",
            labels={"model": "{model}", "seed": "{seed}", "views": "orthogonal"},
        ),
    log:
        f"logs/sample_volumes/{RUN}.log",
    params:
        sampling=section_settings("sampling"),
    threads: 2
    resources:
        attempt=job_attempt,
        mem_mb=mem_sample_volumes,
        runtime=runtime_sample_volumes,
    message:
        "Sampling volumes from model {wildcards.model} (seed {wildcards.seed})"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/sample_volumes.py"
