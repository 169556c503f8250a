rule register:
    """Brain extraction, ANTs registration to the template on the configured grid, and the QC gate."""
    input:
        ingested=rules.ingest.output[0],
    output:
        directory("results/register/{subject}"),
    log:
        "logs/register/{subject}.log",
    params:
        registration=section_settings_set("registration", "voxel_size"),
        preprocessing=section_settings_set("preprocessing", "brain_extraction_sequence"),
        on_bad_input=lookup(dpath="on_bad_input", within=config),
    # One ITK thread makes registration bit-reproducible; subjects run in parallel instead.
    threads: 1
    # Measured (bench/results/registration_time.md): deepbet + Affine of a 1 mm head, 1 thread,
    # peaks at about 2.2 GB and takes 1-2 minutes; the limits leave room for larger inputs.
    resources:
        attempt=job_attempt,
        mem_mb=mem_register,
        runtime=minutes_per_attempt(30),
    # A batch of subjects' small jobs share one cluster job; a group's time limit is the sum of its
    # members' that run one after another.
    group:
        subject_batch
    message:
        "Registering {wildcards.subject} ({params.registration[transform]})"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/register.py"


rule register_batch:
    """With execution.subject_batches: the registration of a batch of subjects in one job, each
    subject under its own guard, into the folder its own register job would write."""
    input:
        ingested=rules.ingest_batch.output.manifest,
    output:
        manifest="results/batches/register/{batch}.subjects.tsv",
    log:
        "logs/register_batch/{batch}.log",
    params:
        ingested=batch_folders(rules.ingest.output[0]),
        folders=batch_folders(rules.register.output[0]),
        registration=section_settings_set("registration", "voxel_size"),
        preprocessing=section_settings_set("preprocessing", "brain_extraction_sequence"),
        on_bad_input=lookup(dpath="on_bad_input", within=config),
    threads: 1
    resources:
        attempt=job_attempt,
        mem_mb=mem_register_batch,
        runtime=batch_minutes_per_attempt(30),
    group:
        subject_batch_group
    message:
        "Registering the subjects of batch {wildcards.batch} ({params.registration[transform]})"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/register_batch.py"


SUBJECT_BATCH_MANIFESTS[str(rules.register.output[0])] = rules.register_batch.output.manifest


rule qc_tables:
    """One row per subject: registration outcome (ok, flagged, failed, skipped), with reasons and
    the registration QC numbers."""
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
    resources:
        mem_mb=mem_per_subject_table,
        runtime=runtime_per_subject_table,
    message:
        "Collecting QC tables"
    conda:
        "../../envs/imaging.yaml"
    script:
        "../scripts/qc_tables.py"
