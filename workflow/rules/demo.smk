rule demo_cohort:
    """Synthetic phantom cohort from the MNI152 template (NIfTI, DICOM series, one corrupt file)."""
    output:
        sheet=DEMO_SHEET,
    log:
        "logs/demo_cohort.log",
    params:
        demo=section_settings("demo"),
    message:
        "Building the synthetic demo cohort ({params.demo[n_subjects]} phantoms)"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/demo_cohort.py"
