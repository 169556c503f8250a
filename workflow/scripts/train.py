from pipeline_lib.core.guard import guard_run_job
from pipeline_lib.core.jobs import start_job

start_job(snakemake.log[0], snakemake.threads)


def work():
    from pathlib import Path
    from pipeline_lib.core.settings import RUNTIME, TrainerSettings, block_part
    from pipeline_lib.imaging.augmentation import open_training_split
    from pipeline_lib.models.training import train_job

    model = snakemake.wildcards.model
    # params hold what changes the model (rerun triggers); runtime keys come from the config.
    runtime = block_part(snakemake.config["models"][model], TrainerSettings, RUNTIME)
    train_job(
        model,
        {**runtime, **snakemake.params.block},
        Path(snakemake.input.images),
        Path(snakemake.input.table),
        weights=Path(snakemake.output.weights),
        losses=Path(snakemake.output.losses),
        summary=Path(snakemake.output.summary),
        validation=Path(snakemake.output.validation),
        snapshots=Path(snakemake.output.snapshots),
        checkpoint_root=Path(snakemake.params.checkpoints),
        threads=snakemake.threads,
        # on-the-fly augmented datasets: the train split drawn from the volumes' slabs (None otherwise)
        train_split=open_training_split(Path(snakemake.input.images), Path(snakemake.input.table),
                                        Path(snakemake.input.volumes), Path(snakemake.input.volume_index),
                                        snakemake.params.block.get("condition_on")) if snakemake.input.volumes else None,
        # a 3-D run: its volume dataset's grid (none for a slice dataset)
        grid=Path(snakemake.input.grid) if snakemake.input.grid else None,
    )


guard_run_job(snakemake, work, stage="training")
