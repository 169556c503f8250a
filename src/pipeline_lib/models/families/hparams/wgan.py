"""Hyperparameters of the ``wgan`` family (Han et al. section 3.2.2; Arjovsky et al., Algorithm 1)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_lib.models.families.hparams.dcgan import diffaugment_option, r1_option, stages_option
from pipeline_lib.models.families.hparams.fields import hyperparameter


@dataclass(frozen=True)
class WGANHyperparameters:
    latent_dim: int = hyperparameter(100, "DCGAN's uniform 100-d latent (same architecture as Han's DCGAN)")
    width: int = hyperparameter(32, "Han et al.: half the usual DCGAN channel widths")
    stages: int | None = stages_option()
    lr: float = hyperparameter(5e-5, "Han et al. section 3.2.2: RMSprop, 5.0e-5")
    batch_size: int = hyperparameter(64, "Han et al. section 3.2.2")
    n_critic: int = hyperparameter(5, "critic updates per generator update (Arjovsky et al., Algorithm 1)")
    clip_value: float = hyperparameter(0.01, "critic weights clipped to this (Arjovsky et al., Algorithm 1)")
    diffaugment: str | None = diffaugment_option()
    r1_gamma: float = r1_option()
