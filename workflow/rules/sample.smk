rule sample:
    """Draw samples from a trained model; reconstruct test slices where the family can."""
    input:
        weights="results/models/{model}/weights.pt",
        images="results/slices/images.npy",
        table="results/slices/slices.tsv",
    output:
        samples="results/samples/{model}/samples.npy",
        grid="results/samples/{model}/grid.png",
        reconstructions="results/samples/{model}/reconstructions.npy",
        labels="results/samples/{model}/labels.tsv",
    log:
        "logs/sample/{model}.log",
    params:
        sampling=settings("sampling"),
    threads: 2
    message:
        "Sampling model {wildcards.model}"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/sample.py"
