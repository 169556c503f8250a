"""Hyperparameters of the ``vae`` family (Ungría Hirte et al. §3.2, after Hou et al.'s DFC-VAE layout)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_lib.models.families.hparams.fields import hyperparameter


@dataclass(frozen=True)
class VAEHyperparameters:
    latent_dim: int = hyperparameter(200, "size of the latent code (Ungría Hirte et al. §3.2)")
    width: int = hyperparameter(32, "channels of the first encoder stage (32-64-128-256 as in Hou et al.)")
    lr: float = hyperparameter(1e-4, "Adam learning rate (Ungría Hirte et al. §3.2)")
    batch_size: int = hyperparameter(64, "images per step (Ungría Hirte et al. §3.2)")
    recon_weight: float = hyperparameter(0.025, "multiplied by H * W (Ungría Hirte et al.: 0.025 x 128 x 128)")
