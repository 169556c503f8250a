"""Hyperparameters of the ``ddpm3d`` family (where each comes from: the family's docstring).

The 3-D DDPM has the 2-D DDPM's keys; the values that MONAI's 3-D DDPM tutorial sets differently are
declared again here, the rest (noise schedule, DDIM steps, guidance) are the 2-D family's.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_lib.models.families.hparams.ddpm import DDPMHyperparameters
from pipeline_lib.models.families.hparams.fields import hyperparameter


@dataclass(frozen=True)
class DDPM3DHyperparameters(DDPMHyperparameters):
    unet_channels: list[int] = hyperparameter([64, 64, 128], "UNet channels per level (MONAI 3-D DDPM tutorial)")
    attention_levels: list[bool] = hyperparameter([False, False, True], "attention per level (3-D tutorial)")
    num_res_blocks: int = hyperparameter(2, "residual blocks per level (3-D tutorial)")
    num_head_channels: list[int] = hyperparameter([0, 0, 128], "channels per attention head, per level "
                                                                "(3-D tutorial: one head at the last level)")
    lr: float = hyperparameter(5e-5, "Adam learning rate (3-D tutorial)")
    batch_size: int = hyperparameter(16, "volumes per step (3-D tutorial)")
