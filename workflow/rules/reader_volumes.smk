# Reader study of 3-D runs (issue 26): for every volume dataset that reader-study 3-D models learn, a
# blinded kit of its real test volumes and the models' sampled volumes (each model's first seed, as the
# slice kits), and the scoring of the readers' answers by the slice kits' scoring rule. Same output
# names as the slice kits (results/reader_study/<volume dataset>/...); the dataset wildcard of these
# rules takes the volume datasets only. Not part of `all`: a volume kit needs as many real test
# volumes as reader_study asks for, and a small cohort has few; ask for `reader_volume_kits`.
# Needs the 3-D wiring (VOLUME_MODELS, rule sample_volumes) of common.smk and sample.smk; its input
# functions are common.smk's reader_volume_*.


VOLUME_KIT_DATASETS = "|".join(reader_volume_datasets()) or "(?!)"


rule reader_volume_kit:
    """Blinded volume set of one volume dataset (its real test volumes and its 3-D models' sampled
    volumes), the reader page in volume mode and (outside the kit) the answer key."""
    input:
        volumes=reader_volume_input("volumes"),
        table=reader_volume_input("table"),
        grid=reader_volume_input("grid"),
        samples=lambda wildcards: first_runs(rules.sample_volumes.output.volumes, reader_volume_models(wildcards)),
    output:
        kit=directory("results/reader_study/{dataset}/kit"),
        key="results/reader_study/{dataset}/answer_key.tsv",
        summary="results/reader_study/{dataset}/kit_summary.json",
    wildcard_constraints:
        dataset=VOLUME_KIT_DATASETS,
    log:
        "logs/reader_study/{dataset}/kit.log",
    params:
        # Scoring keys (core.settings) are left out: changing them must not rebuild (and reshuffle) the kit.
        study=section_settings("reader_study"),
        models=reader_volume_models,
    resources:
        attempt=job_attempt,
        runtime=runtime_reader_volume_kit,
    message:
        "Building the reader-study volume kit of volume dataset {wildcards.dataset}"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/reader_volume_kit.py"


use rule reader_scores as reader_volume_scores with:
    input:
        key=rules.reader_volume_kit.output.key,
        responses=reader_volume_responses,
    wildcard_constraints:
        dataset=VOLUME_KIT_DATASETS,


rule reader_volume_kits:
    """Target: every volume kit and its scores."""
    input:
        expand(rules.reader_volume_kit.output.summary, dataset=reader_volume_datasets()),
        expand(rules.reader_volume_scores.output.scores, dataset=reader_volume_datasets()),
