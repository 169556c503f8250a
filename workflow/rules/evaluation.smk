# Evaluation in learnt feature spaces: a domain network trained on the real slices (domain
# Fréchet distance and PRDC), a memorization audit, conditioning accuracy, augmentation utility, and
# MONAI's MS-SSIM diversity with SSIM/PSNR of reconstructions, and the samples' grey levels.
# Each rule names its library function (params: **rule_job(...)); scripts/rule_job.py runs it (core/rule_jobs.py).
# The CNNs here are tiny: one torch thread each. Measured on a loaded 2-core machine, two
# threads made their training 9x slower (OpenMP threads waiting on each other).


rule domain_network:
    """Train the domain network on a dataset's real training slices; held-out quality in network.json."""
    input:
        images=rules.slice_dataset.output.images,
        table=rules.slice_dataset.output.table,
    output:
        network="results/domain/{dataset}/network.pt",
        summary="results/domain/{dataset}/network.json",
    log:
        "logs/domain/{dataset}/network.log",
    params:
        **rule_job("pipeline_lib.evaluation.domain_features.domain_network_job"),
        settings=section_settings("evaluation.domain"),
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=mem_streamed(),
        runtime=runtime_domain_network,
    message:
        "Training the domain feature network of dataset {wildcards.dataset}"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/rule_job.py"


rule domain_metrics:
    """Fréchet distance and PRDC of one model's samples in the domain feature space."""
    input:
        network=model_domain_network,
        samples=rules.sample.output.samples,
        images=model_slices("images"),
        table=model_slices("table"),
    output:
        f"results/metrics/{RUN}.domain.json",
    log:
        f"logs/domain/{RUN}.log",
    params:
        **rule_job("pipeline_lib.evaluation.domain_features.domain_metrics_job"),
        settings=section_settings("evaluation.domain"),
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=mem_streamed(),
        runtime=runtime_domain_metrics,
    message:
        "Domain-feature metrics of model {wildcards.model} (seed {wildcards.seed})"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/rule_job.py"


rule domain_metrics_original:
    """The reference row: real test slices against the training slices, in the domain feature space."""
    input:
        network=rules.domain_network.output.network,
        images=rules.slice_dataset.output.images,
        table=rules.slice_dataset.output.table,
    output:
        "results/metrics/original/{dataset}.domain.json",
    log:
        "logs/domain/original/{dataset}.log",
    params:
        **rule_job("pipeline_lib.evaluation.domain_features.domain_metrics_job"),
        settings=section_settings("evaluation.domain"),
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=mem_streamed(),
        runtime=runtime_domain_metrics,
    message:
        "Domain-feature metrics of the real test slices of dataset {wildcards.dataset}"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/rule_job.py"


rule memorization_audit:
    """Nearest training slice of every sample (pixels and domain features), copy fractions, gallery."""
    input:
        network=model_domain_network,
        samples=rules.sample.output.samples,
        images=model_slices("images"),
        table=model_slices("table"),
    output:
        audit=f"results/memorization/{RUN}.json",
        gallery=report(
            f"results/memorization/{RUN}.png",
            caption="../report/memorization_gallery.rst",
            category="3. Memorization",
            subcategory="{model}",
            labels={"model": "{model}", "seed": "{seed}"},
        ),
    log:
        f"logs/memorization/{RUN}.log",
    params:
        **rule_job("pipeline_lib.evaluation.memorization.memorization_job"),
        settings=section_settings("evaluation.memorization"),
    threads: 2
    resources:
        attempt=job_attempt,
        mem_mb=mem_streamed(),
        runtime=runtime_memorization,
    message:
        "Memorization audit of model {wildcards.model} (seed {wildcards.seed})"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/rule_job.py"


rule conditioning_accuracy:
    """A real-trained classifier checks the class of a conditional model's samples."""
    input:
        samples=rules.sample.output.samples,
        labels=rules.sample.output.labels,
        images=model_slices("images"),
        table=model_slices("table"),
    output:
        f"results/conditioning/{RUN}.json",
    log:
        f"logs/conditioning/{RUN}.log",
    params:
        **rule_job("pipeline_lib.evaluation.conditioning.conditioning_job"),
        settings=section_settings("evaluation.conditioning"),
        condition_on=model_condition,
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=mem_streamed(),
        runtime=runtime_conditioning,
    message:
        "Conditioning accuracy of model {wildcards.model} (seed {wildcards.seed})"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/rule_job.py"


rule augmentation_utility:
    """Classifiers trained on real, synthetic and real + synthetic slices, tested on real test slices."""
    input:
        network=model_domain_network,
        samples=rules.sample.output.samples,
        labels=rules.sample.output.labels,
        images=model_slices("images"),
        table=model_slices("table"),
    output:
        f"results/utility/{RUN}.json",
    log:
        f"logs/utility/{RUN}.log",
    params:
        **rule_job("pipeline_lib.evaluation.augmentation_utility.utility_job"),
        settings=section_settings("evaluation.utility"),
        condition_on=model_condition,
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=mem_streamed(),
        runtime=runtime_utility,
    message:
        "Augmentation utility of model {wildcards.model} (seed {wildcards.seed})"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/rule_job.py"


rule diversity_metrics:
    """MS-SSIM between pairs of a model's samples; SSIM, MS-SSIM, PSNR of its reconstructions (MONAI)."""
    input:
        samples=rules.sample.output.samples,
        reconstructions=rules.sample.output.reconstructions,
        images=model_slices("images"),
        table=model_slices("table"),
    output:
        f"results/metrics/{RUN}.diversity.json",
    log:
        f"logs/diversity/{RUN}.log",
    params:
        **rule_job("pipeline_lib.evaluation.diversity.model_diversity_job"),
        settings=section_settings("evaluation.diversity"),
        sampling=section_settings("sampling"),
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=mem_streamed(held=diversity_pair_images()),
        runtime=runtime_diversity,
    message:
        "Diversity and reconstruction similarity of model {wildcards.model} (seed {wildcards.seed})"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/rule_job.py"


rule diversity_original:
    """The reference: MS-SSIM between pairs of real test slices."""
    input:
        images=rules.slice_dataset.output.images,
        table=rules.slice_dataset.output.table,
    output:
        "results/metrics/original/{dataset}.diversity.json",
    log:
        "logs/diversity/original/{dataset}.log",
    params:
        **rule_job("pipeline_lib.evaluation.diversity.original_diversity_job"),
        settings=section_settings("evaluation.diversity"),
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=mem_streamed(held=diversity_pair_images()),
        runtime=runtime_diversity,
    message:
        "Diversity of the real test slices of dataset {wildcards.dataset}"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/rule_job.py"


rule intensity_statistics:
    """Grey levels of one model's samples against its training slices: Wasserstein distance of the
    intensity histograms, mean, contrast (std) and share of background."""
    input:
        samples=rules.sample.output.samples,
        images=model_slices("images"),
        table=model_slices("table"),
    output:
        f"results/intensity/{RUN}.json",
    log:
        f"logs/intensity/{RUN}.log",
    params:
        **rule_job("pipeline_lib.evaluation.intensity.intensity_job"),
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=mem_streamed(),
        runtime=runtime_intensity,
    message:
        "Intensity statistics of model {wildcards.model} (seed {wildcards.seed})"
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/rule_job.py"


rule evaluation_beyond_fid:
    """Target: every evaluation output of every model."""
    input:
        per_dataset(rules.domain_network.output.summary),
        per_dataset(rules.domain_metrics_original.output[0]),
        per_model(rules.domain_metrics.output[0]),
        per_model(rules.memorization_audit.output.audit),
        per_model(rules.conditioning_accuracy.output[0]),
        per_model(rules.augmentation_utility.output[0]),
        per_dataset(rules.diversity_original.output[0]),
        per_model(rules.diversity_metrics.output[0]),
        per_model(rules.intensity_statistics.output[0]),
