rule register:
    """ANTs registration to the template, resampled onto the configured grid, with QC."""
    input:
        ingested=rules.ingest.output[0],
    output:
        directory("results/register/{subject}"),
    log:
        "logs/register/{subject}.log",
    params:
        registration=section_settings("registration"),
        on_bad_input=lookup(dpath="on_bad_input", within=config),
    # One ITK thread makes registration bit-reproducible; subjects run in parallel instead.
    threads: 1
    resources:
        mem_mb=3000,
        runtime=minutes_per_attempt(30),
    # A subject's small jobs share one cluster job; a group's time limit is the sum of its members'.
    group:
        "subject"
    message:
        "Registering {wildcards.subject} ({params.registration[transform]})"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/register.py"


rule qc_tables:
    """One row per subject: registration outcome, with the reason for failures."""
    input:
        register=per_subject(rules.register.output[0]),
    output:
        registration=report(
            "results/qc/registration.tsv",
            caption="../report/qc_table.rst",
            category="5. Quality control",
            labels={"table": "registration"},
        ),
    log:
        "logs/qc_tables.log",
    message:
        "Collecting QC tables"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/qc_tables.py"
