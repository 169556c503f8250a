"""Hyperparameters of the ``wgan_gp3d`` family (where each comes from: the family's docstring).

The loss and optimiser values are Gulrajani et al.'s Algorithm 1; the networks and the batch are
Kwon et al. 2019's 3-D WGAN-GP baseline (github.com/cyclomon/3dbraingen, Model_WGAN.py and
WGAN_ADNI_train.ipynb), trained there on 64 x 64 x 64 volumes.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_lib.models.families.hparams.fields import hyperparameter

CRITIC_NORMS = ("layer", "none")


@dataclass(frozen=True)
class WGANGP3DHyperparameters:
    latent_dim: int = hyperparameter(1000, "standard normal latent (Kwon et al. 2019's WGAN-GP code: 1000-d)")
    width: int = hyperparameter(64, "channels of the last generator / first critic stage, doubling per stage "
                                    "towards 4^3 (Kwon et al.: 64, so 512 at 4^3 for 64^3 volumes)")
    lr: float = hyperparameter(1e-4, "Adam learning rate (Gulrajani et al., Algorithm 1: alpha = 1e-4)")
    beta1: float = hyperparameter(0.0, "Adam beta1 (Algorithm 1: beta1 = 0)")
    beta2: float = hyperparameter(0.9, "Adam beta2 (Algorithm 1: beta2 = 0.9)")
    batch_size: int = hyperparameter(4, "volumes per step (Kwon et al.: 4 volumes of 64^3; Algorithm 1's "
                                        "m = 64 is for 2-D images)")
    n_critic: int = hyperparameter(5, "critic updates per generator update (Algorithm 1: n_critic = 5)")
    gp_weight: float = hyperparameter(10.0, "weight of the gradient penalty (Algorithm 1 and Kwon et al.: "
                                            "lambda = 10)")
    critic_norm: str = hyperparameter("layer", "the critic's normalisation where Kwon et al. have batch norm: layer "
                                               "(Gulrajani et al.'s advice) or none; batch norm would couple the "
                                               "per-sample gradient penalty", choices=CRITIC_NORMS)
