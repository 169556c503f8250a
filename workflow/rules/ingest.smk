checkpoint discover_inputs:
    """Find subjects in a folder or sample sheet and give each a salted pseudonym."""
    input:
        input_source(),
    output:
        linkage="private/linkage.tsv",
        subjects="results/inputs/subjects.tsv",
    log:
        "logs/discover_inputs.log",
    params:
        salt_fingerprint=salt_fingerprint(),
    message:
        "Discovering input subjects"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/discover_inputs.py"


rule ingest:
    """DICOM -> NIfTI (dcm2niix), validation, reorientation to RAS, PHI-free metadata."""
    input:
        subject_source_input,
    output:
        directory("results/ingest/{subject}"),
    log:
        "logs/ingest/{subject}.log",
    params:
        source=subject_source,
        format=subject_format,
        on_bad_input=lookup(dpath="on_bad_input", within=config),
    resources:
        runtime=minutes_per_attempt(10),
    # A subject's small jobs share one cluster job; a group's time limit is the sum of its members'.
    group:
        "subject"
    message:
        "Ingesting {wildcards.subject}"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/ingest.py"
