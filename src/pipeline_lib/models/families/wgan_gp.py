"""WGAN with gradient penalty (Gulrajani et al., "Improved Training of Wasserstein GANs").

Seed 003 (Ballesteros Ramirez, section 6, Table 2) compares against a WGAN-GP
whose scores it quotes from "a similar work" without giving its settings, so the
defaults are Gulrajani et al.'s: lambda = 10, n_critic = 5, Adam with lr 1e-4 and
betas (0, 0.9), batch 64 (their Algorithm 1), and the DCGAN generator/critic
pair of their 64 x 64 experiments (the "baseline" option of their
gan_64x64.py, rather than their much heavier ResNet): 128-d Gaussian latent,
5 x 5 kernels, 64 channels in the last generator / first critic stage, batch
norm + ReLU + tanh in the generator, LeakyReLU (0.2) in the critic with no
normalisation on its first layer, N(0, 0.02) initial weights.

No weight clipping. The critic has no batch norm: the penalty is on each
sample's gradient, which batch statistics would couple across the batch, so, as
Gulrajani et al. recommend, it uses layer norm (``critic_norm: layer``, over
C x H x W) or no normalisation (``critic_norm: none``).

The step, the counter and the loss columns are those of the ``wgan`` family
(one critic update per step, a generator update every ``n_critic``-th step);
there is one more column, ``gradient_penalty`` (unweighted), and ``critic``
includes the weighted penalty.

Change: the penalty's double backward always runs in float32, outside mixed
precision, because float16 gradients of gradients can underflow.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.models.families.dcgan import Architecture
from pipeline_lib.models.families.hparams.wgan_gp import WGANGPHyperparameters
from pipeline_lib.models.families.wgan import WGAN
from pipeline_lib.models.losses import gradient_penalty

CRITIC_NORMS = ("layer", "none")


class WGANGP(WGAN):
    family = "wgan_gp"
    LATENT = "normal"  # Gulrajani et al.'s code draws 128-d standard normal noise
    HYPERPARAMETERS = WGANGPHyperparameters

    def __init__(self, image_size: int, channels: int = 1, n_classes: int = 0, **hparams: Any):
        norm = hparams.get("critic_norm", self.DEFAULTS["critic_norm"])
        if norm not in CRITIC_NORMS:
            raise InputError(f"model family '{self.family}': critic_norm must be one of {CRITIC_NORMS} "
                             f"(batch norm breaks the per-sample gradient penalty), got {norm!r}")
        super().__init__(image_size, channels, n_classes, **hparams)

    def architecture(self) -> Architecture:
        return Architecture(kernel_size=self.hp.kernel_size, tanh_output=True,
                            d_activation="leaky_relu", d_norm=self.hp.critic_norm,
                            d_norm_first_layer=False)

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        h = self.hp
        return self.adam(params, lr=h.lr, betas=(h.beta1, h.beta2))

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor,
                         labels: torch.Tensor | None) -> torch.Tensor:
        """Mean of (||grad_x C(x)|| - 1)^2 at random points between real and fake images."""
        return gradient_penalty(lambda mixed: self.discriminate(mixed, labels), real, fake)

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None,
                    real_source: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, parts = super().critic_loss(real, fake, labels, real_source)
        penalty = self.gradient_penalty(real.detach(), fake, labels)
        return loss + self.hp.gp_weight * penalty, {**parts, "gradient_penalty": penalty}

    def constrain_critic(self) -> None:
        """No weight clipping: the penalty enforces the Lipschitz constraint."""


MODEL = WGANGP
