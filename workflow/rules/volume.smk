# Volume datasets (datasets.<name> with kind: volume) for 3-D models: the train jobs of the 3-D runs
# read the ones their models name; `snakemake volume_datasets` builds all of them. Their input
# functions are in common.smk.


wildcard_constraints:
    volume_dataset="|".join(VOLUME_DATASET_SETTINGS) or "(?!)",


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
        **later_stage_settings("registration", "volume_dataset"),
    resources:
        attempt=job_attempt,
        mem_mb=mem_volume_dataset,
        runtime=runtime_volume_dataset,
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
