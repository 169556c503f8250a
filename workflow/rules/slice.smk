rule slice_dataset:
    """One slice dataset: filter volumes on labels, normalise, select and fit slices along the dataset's
    axis, split train/test by subject (over the cohort), augment training volumes if asked; flagged
    registrations stay out unless registration.on_poor_fit is keep."""
    input:
        registered=per_subject_of_dataset(rules.register.output[0]),
        subjects=rules.discover_inputs.output.subjects,
    output:
        images="results/slices/{dataset}/images.npy",
        table="results/slices/{dataset}/slices.tsv",
        # the training volumes' slabs for augmentation.mode on_the_fly (no volume otherwise)
        volumes="results/slices/{dataset}/volumes.npy",
        volume_index="results/slices/{dataset}/volumes.json",
    log:
        "logs/slice_dataset/{dataset}.log",
    params:
        dataset=slice_settings,
        **later_stage_settings("registration", "slice_dataset"),
    resources:
        attempt=job_attempt,
        mem_mb=mem_slice_dataset,
        runtime=runtime_slice_dataset,
    message:
        "Slicing registered volumes into the 2-D dataset {wildcards.dataset}"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/slice_dataset.py"
