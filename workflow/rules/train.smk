rule train:
    """Train one model with one seed; resumes from results/checkpoints/{model}/seed{seed}/ after a kill.
    A 3-D run (VOLUME_RUNS) reads its volume dataset: volumes.npy and volumes.tsv as images and table,
    and its grid.json (no slabs)."""
    input:
        images=model_slices("images"),
        table=model_slices("table"),
        volumes=model_slices("volumes"),
        volume_index=model_slices("volume_index"),
        grid=model_slices("grid"),
        family=model_family_source,
    output:
        weights=f"results/models/{RUN}/weights.pt",
        losses=report(
            f"results/models/{RUN}/losses.csv",
            caption="../report/losses.rst",
            category="4. Training",
            subcategory="{model}",
            labels={"model": "{model}", "seed": "{seed}"},
        ),
        summary=f"results/models/{RUN}/summary.json",
        validation=f"results/models/{RUN}/validation.csv",
        snapshots=f"results/models/{RUN}/snapshots.npz",
    log:
        f"logs/train/{RUN}.log",
    params:
        block=model_settings,
        checkpoints=checkpoint_dir,
    threads: 2
    resources:
        attempt=job_attempt,
        mem_mb=mem_train,
        runtime=train_runtime,
    message:
        "Training model {wildcards.model} (seed {wildcards.seed})"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/train.py"
