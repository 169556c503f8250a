# Reader study: a blinded kit of real and synthetic slices for radiologists, and scoring of
# their downloaded answers. The kit is shippable as it is; the answer key stays outside.


rule reader_kit:
    """Blinded image set of one dataset (its real slices and its models' samples), reader web page and
    (outside the kit) the answer key."""
    input:
        images=rules.slice_dataset.output.images,
        table=rules.slice_dataset.output.table,
        samples=reader_kit_runs(rules.sample.output.samples),
        labels=reader_kit_runs(rules.sample.output.labels),
    output:
        kit=directory("results/reader_study/{dataset}/kit"),
        key="results/reader_study/{dataset}/answer_key.tsv",
        summary="results/reader_study/{dataset}/kit_summary.json",
    log:
        "logs/reader_study/{dataset}/kit.log",
    params:
        # Scoring keys (core.settings) are left out: changing them must not rebuild (and reshuffle) the kit.
        study=section_settings("reader_study"),
        models=reader_kit_models,
    resources:
        attempt=job_attempt,
        mem_mb=mem_streamed(with_samples=False),  # reads the images it shows, memory-mapped
        runtime=runtime_reader_kit,
    message:
        "Building the reader-study kit of dataset {wildcards.dataset}"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/reader_kit.py"


rule reader_scores:
    """The papers' confusion tables, accuracy and kappa from the readers' response files."""
    input:
        key=rules.reader_kit.output.key,
        responses=reader_responses,
    output:
        scores="results/reader_study/{dataset}/scores.json",
        readers="results/reader_study/{dataset}/tables/readers.tsv",
        sources="results/reader_study/{dataset}/tables/sources.tsv",
        models="results/reader_study/{dataset}/tables/models.tsv",
        blocks="results/reader_study/{dataset}/tables/blocks.tsv",
        agreement="results/reader_study/{dataset}/tables/agreement.tsv",
        timing="results/reader_study/{dataset}/tables/timing.tsv",
    log:
        "logs/reader_study/{dataset}/scores.log",
    params:
        positive_class=lookup(dpath="reader_study/positive_class", within=config),
    resources:
        attempt=job_attempt,
    message:
        "Scoring the reader study of dataset {wildcards.dataset}"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/reader_scores.py"
