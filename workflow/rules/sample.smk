rule sample:
    """Draw samples from a trained model; reconstruct test slices where the family can."""
    input:
        weights=rules.train.output.weights,
        images=rules.slice_dataset.output.images,
        table=rules.slice_dataset.output.table,
    output:
        samples="results/samples/{model}/samples.npy",
        grid="results/samples/{model}/grid.png",
        reconstructions="results/samples/{model}/reconstructions.npy",
        labels="results/samples/{model}/labels.tsv",
    log:
        "logs/sample/{model}.log",
    params:
        sampling=section_settings("sampling"),
    threads: 2
    message:
        "Sampling model {wildcards.model}"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/sample.py"
