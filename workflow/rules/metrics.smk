rule metrics_model:
    """Seed-001 metrics of one model's samples (and reconstructions) against the training slices."""
    input:
        samples="results/samples/{model}/samples.npy",
        reconstructions="results/samples/{model}/reconstructions.npy",
        images="results/slices/images.npy",
        table="results/slices/slices.tsv",
    output:
        "results/metrics/{model}.json",
    log:
        "logs/metrics/{model}.log",
    params:
        metrics=settings("metrics"),
        sampling=settings("sampling"),
    message:
        "Computing metrics of model {wildcards.model}"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/metrics_model.py"


rule metrics_original:
    """The reference row: real test slices against the training slices."""
    input:
        images="results/slices/images.npy",
        table="results/slices/slices.tsv",
    output:
        "results/metrics/original.json",
    log:
        "logs/metrics/original.log",
    params:
        metrics=settings("metrics"),
        seed=config["sampling"]["seed"],
    message:
        "Computing metrics of the real reference set"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/metrics_original.py"
