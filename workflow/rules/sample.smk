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
    message:
        "Sampling model {wildcards.model} (seed {wildcards.seed})"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/sample.py"
