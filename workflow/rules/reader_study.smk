# Reader study: a blinded kit of real and synthetic slices for radiologists, and scoring of
# their downloaded answers. The kit is shippable as it is; the answer key stays outside.


rule reader_kit:
    """Blinded image set, reader web page and (outside the kit) the answer key."""
    input:
        images=rules.slice_dataset.output.images,
        table=rules.slice_dataset.output.table,
        samples=first_runs(rules.sample.output.samples, reader_study_models()),
        labels=first_runs(rules.sample.output.labels, reader_study_models()),
    output:
        kit=directory("results/reader_study/kit"),
        key="results/reader_study/answer_key.tsv",
        summary="results/reader_study/kit_summary.json",
    log:
        "logs/reader_study/kit.log",
    params:
        # Scoring keys (core.settings) are left out: changing them must not rebuild (and reshuffle) the kit.
        study=section_settings("reader_study"),
        models=reader_study_models(),
    message:
        "Building the reader-study kit"
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
        scores="results/reader_study/scores.json",
        readers="results/reader_study/tables/readers.tsv",
        sources="results/reader_study/tables/sources.tsv",
        models="results/reader_study/tables/models.tsv",
        agreement="results/reader_study/tables/agreement.tsv",
        timing="results/reader_study/tables/timing.tsv",
    log:
        "logs/reader_study/scores.log",
    params:
        positive_class=lookup(dpath="reader_study/positive_class", within=config),
    message:
        "Scoring the reader study"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/reader_scores.py"
