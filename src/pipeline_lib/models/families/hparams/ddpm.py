"""Hyperparameters of the ``ddpm`` family (where each comes from: the family's docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_lib.models.families.hparams.fields import hyperparameter


@dataclass(frozen=True)
class DDPMHyperparameters:
    unet_channels: list[int] = hyperparameter([128, 256, 256], "UNet channels per level (MONAI 2-D DDPM tutorial)")
    attention_levels: list[bool] = hyperparameter([False, True, True], "attention per level (tutorial)")
    num_res_blocks: int = hyperparameter(1, "residual blocks per level (tutorial)")
    num_head_channels: int = hyperparameter(256, "channels per attention head (tutorial)")
    norm_num_groups: int = hyperparameter(32, "group-norm groups (MONAI default)")
    num_train_timesteps: int = hyperparameter(1000, "diffusion steps T (Ho et al.; tutorial)")
    beta_schedule: str = hyperparameter("linear_beta", "noise schedule (Ho et al.)")
    beta_start: float = hyperparameter(1e-4, "first beta (Ho et al.)")
    beta_end: float = hyperparameter(0.02, "last beta (Ho et al.)")
    ddim_steps: int = hyperparameter(50, "DDIM sampling steps (our choice, Song et al.; the tutorial samples "
                                         "1000 DDPM steps)")
    lr: float = hyperparameter(2.5e-5, "Adam learning rate (tutorial)")
    batch_size: int = hyperparameter(64, "images per step (tutorial)")
    class_dropout: float = hyperparameter(0.15, "probability a label is dropped in training (MONAI "
                                                "classifier-free guidance tutorial)")
    guidance_scale: float = hyperparameter(4.0, "classifier-free guidance scale (MONAI classifier-free "
                                                "guidance tutorial)")
