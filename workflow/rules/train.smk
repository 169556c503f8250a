rule train:
    """Train one model; resumes from results/checkpoints/{model}/ after a kill."""
    input:
        images=rules.slice_dataset.output.images,
        table=rules.slice_dataset.output.table,
        family=model_family_source,
    output:
        weights="results/models/{model}/weights.pt",
        losses="results/models/{model}/losses.csv",
        summary="results/models/{model}/summary.json",
        validation="results/models/{model}/validation.csv",
        snapshots="results/models/{model}/snapshots.npz",
    log:
        "logs/train/{model}.log",
    params:
        block=model_settings,
        checkpoints=checkpoint_dir,
    threads: 2
    resources:
        mem_mb=8000,
        runtime=train_runtime,
    message:
        "Training model {wildcards.model}"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/train.py"
