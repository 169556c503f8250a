"""Hyperparameters of the ``intro_vae`` family: seed 001, section 3.2 (IntroVAE at 128 x 128); widths
follow Huang et al.'s PGGAN-like layout."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_lib.models.families.hparams.fields import hyperparameter


@dataclass(frozen=True)
class IntroVAEHyperparameters:
    latent_dim: int = hyperparameter(256, "size of the latent code")
    m: float = hyperparameter(110.0, "KL margin for generated images (nats)")
    alpha: float = hyperparameter(0.25, "weight of the adversarial KL terms of eqs. (8)-(9)")
    beta: float = hyperparameter(0.5, "weight of the reconstruction terms of eqs. (8)-(9)")
    real_kl_weight: float = hyperparameter(1.0, "weight of the real image's KL in eq. (8) (Huang et al.: 1)")
    recon_reference_size: int = hyperparameter(128, "L_AE = per-pixel MSE x this**2 (= published SSE at 128 px)")
    lr: float = hyperparameter(2e-4, "Adam learning rate")
    batch_size: int = hyperparameter(8, "images per step")
    width: int = hyperparameter(64, "channels at full resolution, doubled at each halving ...")
    max_width: int = hyperparameter(512, "... up to this many")
    loss_form: str = hyperparameter("huang2018", "huang2018, or eq8_9: seed 001's equations 8-9 (one fake term; "
                                                 "the family's docstring)", choices=("huang2018", "eq8_9"))
