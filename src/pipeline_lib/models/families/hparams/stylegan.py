"""Hyperparameters of the ``stylegan`` family: seed 001, section 3.2 (modified Style-Based GAN); betas,
widths and drift from the PGGAN/StyleGAN code."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_lib.models.families.hparams.dcgan import diffaugment_option, r1_option
from pipeline_lib.models.families.hparams.fields import hyperparameter


@dataclass(frozen=True)
class StyleGANHyperparameters:
    latent_dim: int = hyperparameter(512, "size of the latent z")
    mapping_dim: int = hyperparameter(512, "size of the intermediate latent w")
    mapping_layers: int = hyperparameter(2, "layers of the mapping network")
    width: int = hyperparameter(512, "channels up to 32 x 32 (fmap_max), halved per doubling above")
    lr: float = hyperparameter(1e-4, "Adam learning rate")
    beta1: float = hyperparameter(0.0, "Adam beta1")
    beta2: float = hyperparameter(0.99, "Adam beta2")
    gradient_penalty: float = hyperparameter(10.0, "WGAN-GP weight; 0 gives the plain Wasserstein objective")
    drift: float = hyperparameter(0.001, "PGGAN's epsilon_drift on E[D(x)^2]")
    batch_size: int = hyperparameter(16, "not stated in the seed; StyleGAN's minibatch at 128 px")
    diffaugment: str | None = diffaugment_option()
    r1_gamma: float = r1_option()
    loss_form: str = hyperparameter("wgan_gp_drift", "wgan_gp_drift, or eq11_12: the seed's equations 11-12, "
                                                     "no penalty, no drift", choices=("wgan_gp_drift", "eq11_12"))
