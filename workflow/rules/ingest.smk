checkpoint discover_inputs:
    """Find subjects in a folder or sample sheet, give each a salted pseudonym and stage it as
    private/staging/<pseudonym>/input; every odd entry of the tree is listed with its reason."""
    input:
        source=input_source(),
    output:
        linkage="private/linkage.tsv",
        ignored_private="private/qc/ignored.tsv",
        staging=directory("private/staging"),
        subjects="results/inputs/subjects.tsv",
        ignored="results/inputs/ignored.tsv",
    log:
        "logs/discover_inputs.log",
    params:
        fingerprint=discovery_fingerprint(),
    message:
        "Discovering input subjects"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/discover_inputs.py"


rule ingest:
    """DICOM -> NIfTI (dcm2niix), validation, reorientation to RAS, PHI-free metadata."""
    input:
        staged=staged_input,
    output:
        directory("results/ingest/{subject}"),
    log:
        "logs/ingest/{subject}.log",
    params:
        staged=staged_link,
        format=subject_format,
        kind=subject_kind,
        ingest=section_settings("ingest"),
        sequences=subject_sequences,
        reference=subject_reference,
        on_bad_input=lookup(dpath="on_bad_input", within=config),
    resources:
        attempt=job_attempt,
        mem_mb=mem_ingest,
        runtime=minutes_per_attempt(10),
    # A batch of subjects' small jobs share one cluster job; a group's time limit is the sum of its
    # members' that run one after another.
    group:
        subject_batch
    message:
        "Ingesting {wildcards.subject}"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/ingest.py"


rule ingest_batch:
    """With execution.subject_batches: the ingest of a batch of subjects in one job, each subject
    under its own guard, into the folder its own ingest job would write; the manifest lists them."""
    input:
        staged=batch_staged_inputs,
    output:
        manifest="results/batches/ingest/{batch}.subjects.tsv",
    log:
        "logs/ingest_batch/{batch}.log",
    params:
        subjects=batch_ingest_params,
        ingest=section_settings("ingest"),
        on_bad_input=lookup(dpath="on_bad_input", within=config),
    resources:
        attempt=job_attempt,
        mem_mb=mem_ingest_batch,
        runtime=batch_minutes_per_attempt(10),
    group:
        subject_batch_group
    message:
        "Ingesting the subjects of batch {wildcards.batch}"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/ingest_batch.py"


SUBJECT_BATCH_MANIFESTS[str(rules.ingest.output[0])] = rules.ingest_batch.output.manifest


rule ingest_qc:
    """One row per subject (ingest outcome and reason) and per ignored entry of the input tree;
    a private copy adds the source paths for the data steward."""
    input:
        ingest=per_subject(rules.ingest.output[0]),
        ignored=rules.discover_inputs.output.ignored,
        linkage=rules.discover_inputs.output.linkage,
        ignored_private=rules.discover_inputs.output.ignored_private,
    output:
        table=report(
            "results/qc/ingest.tsv",
            caption="../report/qc_table.rst",
            category="5. Quality control",
            labels={"table": "ingest"},
        ),
        private="private/qc/ingest.tsv",
    log:
        "logs/ingest_qc.log",
    resources:
        mem_mb=mem_per_subject_table,
        runtime=runtime_per_subject_table,
    message:
        "Collecting the ingest QC table"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/ingest_qc.py"
