# Volume datasets (datasets.<name> with kind: volume) for 3-D models; `snakemake volume_datasets`
# builds them. Nothing else asks for them yet, so the 2-D pipeline's DAG is unchanged.

from pipeline_lib.core.volumes import volume_dataset_mb, volume_dataset_params, volume_dataset_settings

VOLUME_DATASET_SETTINGS = volume_dataset_settings(config)


wildcard_constraints:
    volume_dataset="|".join(VOLUME_DATASET_SETTINGS) or "(?!)",


def per_subject_of_volume_dataset(pattern):
    """Input function: ``pattern`` over every discovered subject, once the volume dataset's label
    filters are known to fit the discovered labels (as per_subject_of_dataset for slice datasets)."""

    def expand_checked(wildcards):
        subjects = discovered()
        filters = VOLUME_DATASET_SETTINGS[wildcards.volume_dataset].filters
        check_filters_against_subjects(wildcards.volume_dataset, filters, subjects.reset_index(),
                                       config["input"].get("layout", "auto"))
        return expand(pattern, subject=sorted(subjects.index))

    return expand_checked


def volume_settings(wildcards):
    """Only this volume dataset's settings: changing one rebuilds only it."""
    return volume_dataset_params(VOLUME_DATASET_SETTINGS[wildcards.volume_dataset])


def mem_volume_dataset(wildcards, attempt):
    box = VOLUME_DATASET_SETTINGS[wildcards.volume_dataset].box
    return resources.request_mb(volume_dataset_mb(registration_grid(), box), attempt)


rule volume_dataset:
    """One volume dataset: filter volumes on labels, normalise, resample and box them on one grid,
    split train/test by subject exactly as the slice datasets; written volume by volume (memory flat
    in the cohort); flagged registrations stay out unless registration.on_poor_fit is keep."""
    input:
        registered=per_subject_of_volume_dataset(rules.register.output[0]),
        subjects=rules.discover_inputs.output.subjects,
    output:
        volumes="results/volumes/{volume_dataset}/volumes.npy",
        table="results/volumes/{volume_dataset}/volumes.tsv",
        grid="results/volumes/{volume_dataset}/grid.json",
    log:
        "logs/volume_dataset/{volume_dataset}.log",
    params:
        dataset=volume_settings,
        on_poor_fit=lookup(dpath="registration/on_poor_fit", within=config),
    resources:
        mem_mb=mem_volume_dataset,
    message:
        "Building the volume dataset {wildcards.volume_dataset} from the registered volumes"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/volume_dataset.py"


rule volume_datasets:
    """Every volume dataset of the config (none: nothing to do)."""
    input:
        expand(rules.volume_dataset.output.volumes, volume_dataset=list(VOLUME_DATASET_SETTINGS)),
