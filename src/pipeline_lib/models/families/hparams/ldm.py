"""Hyperparameters of the ``ldm`` family: MONAI's 2-D LDM tutorial (where each comes from: the family's
docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_lib.models.families.hparams.ddpm import DDPMHyperparameters
from pipeline_lib.models.families.hparams.fields import hyperparameter


@dataclass(frozen=True)
class LDMPerceptual:
    backbone: str = hyperparameter("inception", "inception (the FID Inception's stem, offline) or none")
    weights: str | None = hyperparameter(None, "its weights file; null = the file the pipeline provides")
    weight: float = hyperparameter(0.001, "weight of the perceptual term (tutorial)")


@dataclass(frozen=True)
class LDMHyperparameters:
    autoencoder_steps: int = hyperparameter(12500, "stage-1 steps (tutorial: 100 epochs x 125 batches)")
    ae_channels: list[int] = hyperparameter([128, 128, 256], "autoencoder channels per level (tutorial)")
    latent_channels: int = hyperparameter(3, "latent channels (tutorial; Pinaya et al. 2022)")
    ae_num_res_blocks: int = hyperparameter(2, "autoencoder residual blocks per level (tutorial)")
    ae_norm_num_groups: int = hyperparameter(32, "autoencoder group-norm groups (MONAI default)")
    ae_lr: float = hyperparameter(1e-4, "autoencoder Adam learning rate (tutorial)")
    kl_weight: float = hyperparameter(1e-6, "weight of the latent KL (tutorial)")
    perceptual: LDMPerceptual = hyperparameter(LDMPerceptual(), "the perceptual term of stage 1")
    adversarial_weight: float = hyperparameter(0.01, "adversarial weight (tutorial; 0 disables the discriminator)")
    adversarial_start: int = hyperparameter(1375, "first adversarial step (tutorial: after 11 warm-up epochs "
                                                  "of 125 batches)")
    disc_lr: float = hyperparameter(5e-4, "discriminator Adam learning rate (tutorial)")
    disc_channels: int = hyperparameter(64, "patch discriminator channels (tutorial)")
    disc_layers: int = hyperparameter(3, "patch discriminator layers (tutorial)")
    unet_channels: list[int] = hyperparameter([128, 256, 512], "UNet channels per level (tutorial)")
    attention_levels: list[bool] = hyperparameter([False, True, True], "UNet attention per level (tutorial)")
    num_res_blocks: int = hyperparameter(2, "UNet residual blocks per level (tutorial)")
    num_head_channels: list[int] = hyperparameter([0, 256, 512], "channels per attention head, per level (tutorial)")
    norm_num_groups: int = hyperparameter(32, "UNet group-norm groups (MONAI default)")
    num_train_timesteps: int = hyperparameter(1000, "diffusion steps T (tutorial)")
    beta_schedule: str = hyperparameter("linear_beta", "noise schedule (tutorial)")
    beta_start: float = hyperparameter(0.0015, "first beta (tutorial)")
    beta_end: float = hyperparameter(0.0195, "last beta (tutorial)")
    ddim_steps: int = hyperparameter(50, "DDIM sampling steps (our choice, as ddpm)")
    lr: float = hyperparameter(1e-4, "UNet Adam learning rate (tutorial)")
    batch_size: int = hyperparameter(64, "images per step (tutorial)")
    class_dropout: float = hyperparameter(DDPMHyperparameters.class_dropout, "as the ddpm family's")
    guidance_scale: float = hyperparameter(DDPMHyperparameters.guidance_scale, "as the ddpm family's")
