rule register:
    """ANTs registration to the template, resampled onto the configured grid, with QC."""
    input:
        ingested="results/ingest/{subject}",
    output:
        directory("results/register/{subject}"),
    log:
        "logs/register/{subject}.log",
    params:
        registration=settings("registration"),
        on_bad_input=config["on_bad_input"],
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
