"""Wasserstein GAN of Han et al. (Han et al., section 3.2.2 "WGAN Implementation Details").

"We use the same DCGAN architecture for WGAN training": the networks are those of
the ``dcgan`` family's ``han`` preset (4 x 4 filters, half channel widths, ELU in
the critic, no tanh in the generator), with the critic's sigmoid removed. Training
follows Arjovsky et al.'s Algorithm 1 with the seed's values: RMSprop at 5e-5,
batch 64; weight clipping at 0.01 and n_critic = 5 are Arjovsky et al.'s defaults,
which the seed does not change.

What one ``training_step`` is: ONE critic update on the batch the trainer hands
over, and every ``n_critic``-th step also one generator update (on fresh noise).
So each critic iteration sees a fresh real mini-batch of the published size, as
in Algorithm 1 — splitting one batch into n_critic pieces would shrink the batch
(to 1-2 images at batch 8, breaking batch norm), and reusing one batch n_critic
times would let the critic fit that batch. A budget of N steps therefore means N
critic and N / n_critic generator updates; the step costs about as much compute
as a DCGAN step. A counter of critic updates is part of the weights (a buffer),
so an interrupted run resumes on the same schedule.

Losses per step: ``critic`` (E[C(fake)] - E[C(real)], minimised by the critic),
``wasserstein_estimate`` (its negative, the critic's estimate of the EM distance),
and ``generator`` (-E[C(G(z))]): on generator steps the loss the generator was
updated with, on the other steps the same quantity on this step's fake batch
before the critic's update — so both players' curves have a value at every step.

Change: Arjovsky et al.'s schedule of 100 critic iterations during the first 25
generator iterations is left out (Han et al. do not mention it).

``diffaugment`` and ``r1_gamma`` work as in the ``dcgan`` family (off by default): the
critic sees every real and generated batch through the DiffAugment policy, and the
R1 penalty, taken through the augmentation, adds to the critic's loss (column ``r1``); like
dcgan's, this critic has batch norm, so R1 is refused here and allowed on ``wgan_gp``.
"""

from __future__ import annotations

from typing import Any

import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.models.families.dcgan import DCGAN, HAN, Architecture
from pipeline_lib.models.families.hparams.wgan import WGANHyperparameters
from pipeline_lib.models.layers import set_requires_grad, to_signed
from pipeline_lib.models.losses import r1_penalty


class WGAN(DCGAN):
    family = "wgan"
    HYPERPARAMETERS = WGANHyperparameters

    def __init__(self, image_size: int, channels: int = 1, n_classes: int = 0, **hparams: Any):
        super().__init__(image_size, channels, n_classes, **hparams)
        n_critic = self.hp.n_critic
        if not isinstance(n_critic, int) or n_critic < 1:
            raise InputError(f"model family '{self.family}': n_critic must be an integer >= 1, got {n_critic!r}")
        # In the state dict, so checkpoints resume the critic/generator schedule exactly.
        self.register_buffer("critic_updates", torch.zeros((), dtype=torch.long))
        # From the first step on: a first RMSprop step on the unconstrained N(0, 0.02) weights
        # fills its running average with large squared gradients and stalls the critic for
        # hundreds of steps (measured), and Arjovsky et al. never evaluate an unclipped critic.
        self.constrain_critic()

    def architecture(self) -> Architecture:
        return HAN

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(params, lr=self.hp.lr)

    def configure_optimizers(self) -> None:
        self.optimizers = {"critic": self.make_optimizer(self.discriminator.parameters()),
                           "generator": self.make_optimizer(self.generator.parameters())}

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None,
                    real_source: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss the critic minimises, named parts to report); ``real`` and ``fake`` are the
        batches as the critic sees them (augmented), ``fake`` carries no gradient. With R1,
        ``real_source`` is the un-augmented real batch ``real`` was computed from (with
        ``requires_grad``): the penalty is taken through the augmentation."""
        gamma = self.hp.r1_gamma
        with self.autocast():
            real_scores = self.discriminate(real, labels)
            real_score = real_scores.float().mean()
            fake_score = self.discriminate(fake, labels).float().mean()
        estimate = real_score - fake_score
        parts = {"wasserstein_estimate": estimate, "fake_score": fake_score}
        loss = -estimate
        if gamma:
            parts["r1"] = r1_penalty(real_scores, real_source, self.scaler)
            loss = loss + gamma / 2 * parts["r1"]
        return loss, parts

    @torch.no_grad()
    def constrain_critic(self) -> None:
        """Weight clipping keeps the critic (roughly) Lipschitz."""
        c = self.hp.clip_value
        for p in self.discriminator.parameters():
            p.clamp_(-c, c)

    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        """One critic update; every ``n_critic``-th call also one generator update."""
        self.train()
        self.check_labels(labels, len(images))
        real = to_signed(images)
        if self.hp.r1_gamma:
            real = real.detach().requires_grad_(True)
        with torch.no_grad(), self.autocast():
            fake = self.generate(self.latent(len(real)), labels)
        loss, parts = self.critic_loss(self.augment(real), self.augment(fake), labels, real)
        self.optimise(loss, self.optimizers["critic"])
        self.constrain_critic()
        self.critic_updates += 1

        generator_loss = -parts.pop("fake_score")
        if int(self.critic_updates) % self.hp.n_critic == 0:
            generator_loss = self.generator_update(len(real), labels)
        return self.loss_values({"critic": loss, "generator": generator_loss, **parts})

    def generator_update(self, n: int, labels: torch.Tensor | None) -> torch.Tensor:
        set_requires_grad(self.discriminator, False)
        with self.autocast():
            loss = -self.discriminate(self.augment(self.generate(self.latent(n), labels)), labels).float().mean()
        self.optimise(loss, self.optimizers["generator"])
        set_requires_grad(self.discriminator, True)
        return loss.detach()


MODEL = WGAN
