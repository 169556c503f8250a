rule slice_dataset:
    """Normalise, drop top/bottom slices, resize, split train/test by subject; flagged registrations
    stay out unless registration.on_poor_fit is keep."""
    input:
        registered=per_subject(rules.register.output[0]),
        subjects=rules.discover_inputs.output.subjects,
    output:
        images="results/slices/images.npy",
        table="results/slices/slices.tsv",
    log:
        "logs/slice_dataset.log",
    params:
        slicing=section_settings("slicing"),
        on_poor_fit=lookup(dpath="registration/on_poor_fit", within=config),
    message:
        "Slicing registered volumes into a 2-D dataset"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/slice_dataset.py"
