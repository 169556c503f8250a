"""Hyperparameters of the ``ldm3d`` family: MONAI's 3-D LDM tutorial (where each comes from: the
family's docstring).

The 3-D latent diffusion model has the 2-D ``ldm``'s keys; every value that MONAI's 3-D LDM tutorial
(Project-MONAI/tutorials, generation/3d_ldm/3d_ldm_tutorial.ipynb: BraTS FLAIR at 96 x 96 x 64, batch
2) sets is declared again here, plus the autoencoder's attention (the 2-D tutorial has none) and the
fake-3-D share of the perceptual term.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_lib.models.families.hparams.fields import hyperparameter
from pipeline_lib.models.families.hparams.ldm import LDMHyperparameters, LDMPerceptual

#: Training volumes per epoch of the tutorial (the Decathlon BraTS "training" section) / its batch of 2.
TUTORIAL_BATCHES_PER_EPOCH = 388 // 2


@dataclass(frozen=True)
class LDM3DPerceptual(LDMPerceptual):
    fake_3d_ratio: float = hyperparameter(0.2, "share of each axis's slices the 2-D perceptual network sees "
                                               "(tutorial: MONAI's fake-3-D perceptual loss)")


@dataclass(frozen=True)
class LDM3DHyperparameters(LDMHyperparameters):
    autoencoder_steps: int = hyperparameter(100 * TUTORIAL_BATCHES_PER_EPOCH,
                                            "stage-1 steps (3-D tutorial: 100 epochs x 194 batches)")
    ae_channels: list[int] = hyperparameter([32, 64, 64], "autoencoder channels per level (3-D tutorial)")
    ae_attention_levels: list[bool] = hyperparameter([False, False, True], "autoencoder attention per level "
                                                                           "(3-D tutorial)")
    ae_nonlocal_attention: bool = hyperparameter(True, "attention block in the encoder's and decoder's middle "
                                                       "(MONAI's default, which the 3-D tutorial keeps)")
    latent_channels: int = hyperparameter(3, "latent channels (3-D tutorial; Pinaya et al. 2022)")
    ae_num_res_blocks: int = hyperparameter(1, "autoencoder residual blocks per level (3-D tutorial)")
    ae_norm_num_groups: int = hyperparameter(16, "autoencoder group-norm groups (3-D tutorial)")
    ae_lr: float = hyperparameter(1e-4, "autoencoder Adam learning rate (3-D tutorial)")
    kl_weight: float = hyperparameter(1e-6, "weight of the latent KL (3-D tutorial)")
    perceptual: LDM3DPerceptual = hyperparameter(LDM3DPerceptual(), "the perceptual term of stage 1, on slices "
                                                                    "of the three planes")
    adversarial_weight: float = hyperparameter(0.01, "adversarial weight (3-D tutorial; 0 disables the "
                                                     "discriminator)")
    adversarial_start: int = hyperparameter(6 * TUTORIAL_BATCHES_PER_EPOCH,
                                            "first adversarial step (3-D tutorial: after 6 warm-up epochs)")
    disc_lr: float = hyperparameter(1e-4, "discriminator Adam learning rate (3-D tutorial)")
    disc_channels: int = hyperparameter(32, "patch discriminator channels (3-D tutorial)")
    disc_layers: int = hyperparameter(3, "patch discriminator layers (3-D tutorial)")
    unet_channels: list[int] = hyperparameter([32, 64, 64], "UNet channels per level (3-D tutorial)")
    attention_levels: list[bool] = hyperparameter([False, True, True], "UNet attention per level (3-D tutorial)")
    num_res_blocks: int = hyperparameter(1, "UNet residual blocks per level (3-D tutorial)")
    num_head_channels: list[int] = hyperparameter([0, 64, 64], "channels per attention head, per level "
                                                                "(3-D tutorial)")
    beta_schedule: str = hyperparameter("scaled_linear_beta", "noise schedule (3-D tutorial)")
    lr: float = hyperparameter(1e-4, "UNet Adam learning rate (3-D tutorial)")
    batch_size: int = hyperparameter(2, "volumes per step (3-D tutorial)")
