"""Hyperparameters of the ``wgan_gp`` family (Gulrajani et al., Algorithm 1)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_lib.models.families.hparams.dcgan import diffaugment_option, r1_option, stages_option
from pipeline_lib.models.families.hparams.fields import hyperparameter


@dataclass(frozen=True)
class WGANGPHyperparameters:
    latent_dim: int = hyperparameter(128, "standard normal latent (Gulrajani et al.'s code: 128-d)")
    width: int = hyperparameter(64, "channels of the last generator / first critic stage")
    kernel_size: int = hyperparameter(5, "filter size of every (transposed) convolution")
    stages: int | None = stages_option()
    lr: float = hyperparameter(1e-4, "Adam learning rate (Gulrajani et al., Algorithm 1: alpha = 1e-4)")
    beta1: float = hyperparameter(0.0, "Adam beta1 (Algorithm 1: beta1 = 0)")
    beta2: float = hyperparameter(0.9, "Adam beta2 (Algorithm 1: beta2 = 0.9)")
    batch_size: int = hyperparameter(64, "images per step (Algorithm 1: m = 64)")
    n_critic: int = hyperparameter(5, "critic updates per generator update (Algorithm 1: n_critic = 5)")
    gp_weight: float = hyperparameter(10.0, "weight of the gradient penalty (Algorithm 1: lambda = 10)")
    critic_norm: str = hyperparameter("layer", "the critic's normalisation: layer or none (batch norm breaks "
                                               "the per-sample gradient penalty)")
    diffaugment: str | None = diffaugment_option()
    r1_gamma: float = r1_option()
