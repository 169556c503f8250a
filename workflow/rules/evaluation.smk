# Evaluation beyond pixel metrics: a feature space learnt from the real slices (domain network),
# a memorization audit, conditioning accuracy and augmentation utility.
# Settings: config["evaluation"][domain|memorization|conditioning|utility]; a block left out of
# the config takes the library's defaults, which equal the schema's.
# The CNNs here are tiny: one torch thread each. Measured on a loaded 2-core machine, two
# threads made their training 9x slower (OpenMP threads waiting on each other).


EVALUATION_CONFIG = {
    key: canonical(config.get("evaluation", {}).get(key, {}))
    for key in ("domain", "memorization", "conditioning", "utility")
}
# The slice-table column each model is conditioned on ("" = unconditional).
MODEL_CONDITION = {name: block.get("condition_on") or "" for name, block in config["models"].items()}
# What the report reads, by kind.
EVALUATION_OUTPUTS = {
    "domain_network": "results/domain/network.json",
    "domain_original": "results/metrics/original.domain.json",
    "domain": expand("results/metrics/{model}.domain.json", model=MODELS),
    "memorization": expand("results/memorization/{model}.json", model=MODELS),
    "galleries": expand("results/memorization/{model}.png", model=MODELS),
    "conditioning": expand("results/conditioning/{model}.json", model=MODELS),
    "utility": expand("results/utility/{model}.json", model=MODELS),
}


rule evaluation_beyond_fid:
    """Target: every evaluation output of every model."""
    input:
        **EVALUATION_OUTPUTS,


rule domain_network:
    """Train the domain network on the real training slices; held-out quality in network.json."""
    input:
        images="results/slices/images.npy",
        table="results/slices/slices.tsv",
    output:
        network="results/domain/network.pt",
        summary="results/domain/network.json",
    log:
        "logs/domain/network.log",
    params:
        settings=EVALUATION_CONFIG["domain"],
    threads: 1
    message:
        "Training the domain feature network"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/domain_network.py"


rule domain_metrics:
    """Fréchet distance and PRDC of one model's samples in the domain feature space."""
    input:
        network="results/domain/network.pt",
        samples="results/samples/{model}/samples.npy",
        images="results/slices/images.npy",
        table="results/slices/slices.tsv",
    output:
        "results/metrics/{model}.domain.json",
    log:
        "logs/domain/{model}.log",
    params:
        settings=EVALUATION_CONFIG["domain"],
    threads: 1
    message:
        "Domain-feature metrics of model {wildcards.model}"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/domain_metrics.py"


rule domain_metrics_original:
    """The reference row: real test slices against the training slices, in the domain feature space."""
    input:
        network="results/domain/network.pt",
        images="results/slices/images.npy",
        table="results/slices/slices.tsv",
    output:
        "results/metrics/original.domain.json",
    log:
        "logs/domain/original.log",
    params:
        settings=EVALUATION_CONFIG["domain"],
    threads: 1
    message:
        "Domain-feature metrics of the real test slices"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/domain_metrics.py"


rule memorization_audit:
    """Nearest training slice of every sample (pixels and domain features), copy fractions, gallery."""
    input:
        network="results/domain/network.pt",
        samples="results/samples/{model}/samples.npy",
        images="results/slices/images.npy",
        table="results/slices/slices.tsv",
    output:
        audit="results/memorization/{model}.json",
        gallery="results/memorization/{model}.png",
    log:
        "logs/memorization/{model}.log",
    params:
        settings=EVALUATION_CONFIG["memorization"],
    threads: 2
    message:
        "Memorization audit of model {wildcards.model}"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/memorization_audit.py"


rule conditioning_accuracy:
    """A real-trained classifier checks the class of a conditional model's samples."""
    input:
        samples="results/samples/{model}/samples.npy",
        labels="results/samples/{model}/labels.tsv",
        images="results/slices/images.npy",
        table="results/slices/slices.tsv",
    output:
        "results/conditioning/{model}.json",
    log:
        "logs/conditioning/{model}.log",
    params:
        settings=EVALUATION_CONFIG["conditioning"],
        condition_on=lambda wildcards: MODEL_CONDITION[wildcards.model],
    threads: 1
    message:
        "Conditioning accuracy of model {wildcards.model}"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/conditioning_accuracy.py"


rule augmentation_utility:
    """Classifiers trained on real, synthetic and real + synthetic slices, tested on real test slices."""
    input:
        network="results/domain/network.pt",
        samples="results/samples/{model}/samples.npy",
        labels="results/samples/{model}/labels.tsv",
        images="results/slices/images.npy",
        table="results/slices/slices.tsv",
    output:
        "results/utility/{model}.json",
    log:
        "logs/utility/{model}.log",
    params:
        settings=EVALUATION_CONFIG["utility"],
        condition_on=lambda wildcards: MODEL_CONDITION[wildcards.model],
    threads: 1
    message:
        "Augmentation utility of model {wildcards.model}"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/augmentation_utility.py"
