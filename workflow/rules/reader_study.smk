# Reader study (issue 5): a blinded kit of real and synthetic slices for radiologists, and
# scoring of their downloaded answers. The kit is shippable as it is; the answer key stays outside.

from pipeline_lib.reader_scoring import response_files

# Keys that only matter for scoring: changing them must not rebuild (and reshuffle) the kit.
READER_SCORING_KEYS = ("responses_dir", "positive_class")


def reader_study_models():
    """The models in the kit: reader_study.models, or every configured model."""
    chosen = config["reader_study"].get("models")
    if chosen is None:
        return MODELS
    unknown = sorted(set(chosen) - set(MODELS))
    if unknown:
        raise ValueError(f"reader_study.models names unknown model(s): {', '.join(unknown)}")
    return sorted(chosen)


def reader_kit_settings():
    return {k: v for k, v in settings("reader_study").items() if k not in READER_SCORING_KEYS}


def reader_responses(wildcards):
    """Every response CSV in the responses folder: a new or changed file reruns the scoring."""
    return [str(p) for p in response_files(config["reader_study"]["responses_dir"])]


rule reader_kit:
    """Blinded image set, reader web page and (outside the kit) the answer key."""
    input:
        images="results/slices/images.npy",
        table="results/slices/slices.tsv",
        samples=expand("results/samples/{model}/samples.npy", model=reader_study_models()),
        labels=expand("results/samples/{model}/labels.tsv", model=reader_study_models()),
    output:
        kit=directory("results/reader_study/kit"),
        key="results/reader_study/answer_key.tsv",
        summary="results/reader_study/kit_summary.json",
    log:
        "logs/reader_study/kit.log",
    params:
        study=reader_kit_settings(),
        models=reader_study_models(),
    message:
        "Building the reader-study kit"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/reader_kit.py"


rule reader_scores:
    """Seed-style confusion tables, accuracy and kappa from the readers' response files."""
    input:
        key="results/reader_study/answer_key.tsv",
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
        positive_class=config["reader_study"]["positive_class"],
    message:
        "Scoring the reader study"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/reader_scores.py"
