"""WGAN with gradient penalty on whole volumes: the adversarial 3-D baseline.

The loss and the training schedule are Gulrajani et al. 2017's ("Improved Training of Wasserstein
GANs", Algorithm 1): the critic minimises E[C(G(z))] - E[C(x)] + lambda * E[(||grad C(x_hat)|| - 1)^2]
at random points x_hat between real and generated volumes, the generator minimises -E[C(G(z))];
lambda = 10, n_critic = 5, Adam with lr 1e-4 and betas (0, 0.9); no weight clipping.

The networks are the 3-D WGAN-GP baseline of Kwon et al. 2019 ("Generation of 3D Brain MRI Using
Auto-Encoding Generative Adversarial Networks", MICCAI; their code, github.com/cyclomon/3dbraingen,
Model_WGAN.py and WGAN_ADNI_train.ipynb, 64^3 ADNI volumes), built from MONAI blocks:
- generator: a 1000-d standard normal latent, a fully connected projection to 512 x 4^3, batch norm
  and ReLU; then per stage a x2 nearest-neighbour upsampling and a 3^3 convolution (no bias) with
  batch norm and ReLU, halving the channels (512, 256, 128, 64 at 64^3); the last stage's
  convolution gives the image channels, then tanh;
- critic: 4^3 convolutions of stride 2 from 64 channels, doubling per stage, LeakyReLU (0.2), no
  normalisation on the first; then a 4^3 convolution without padding from the 4^3 map to one score
  per volume (the critic of the authors' alpha-WGAN, Model_alphaWGAN.py; their WGAN's has stride 2
  and padding 1, i.e. eight scores averaged over a 2^3 map);
- PyTorch's default initialisation, batch 4 volumes.

Deviations, and why:
- The critic has no batch norm: the penalty is on each sample's gradient, which batch statistics
  couple across the batch. Where Kwon et al. put batch norm, this critic has layer norm
  (``critic_norm: layer``, statistics over C x D x H x W per sample, Gulrajani et al.'s advice) or
  nothing (``critic_norm: none``).
- Algorithm 1's schedule (n_critic critic updates per generator update, Adam (0, 0.9) at 1e-4)
  instead of the authors' notebook, which takes five generator updates per critic update, Adam's
  default betas at 2e-4, and a penalty with the norm over the channel axis only.
- Depth follows ``image_size``: one x2 stage per doubling above 4^3, so 64^3 has exactly the
  published four stages and the 32^3 demo three. ``width`` and ``latent_dim`` shrink the networks
  for CPU demos and tests.
- As the 2-D GANs: volumes are trained in [-1, 1] and sampled back to [0, 1]. The step is the
  ``wgan`` family's: ONE critic update on the batch the trainer hands over and, every
  ``n_critic``-th step, one generator update on fresh noise, so each critic update sees a fresh
  real batch of the configured size; the counter of critic updates is a buffer, so a resumed run
  keeps the schedule. The penalty's double backward runs in float32, outside mixed precision.
- Unconditional: it learns the volume distribution; labels are ignored.
- Training snapshots show each sampled volume's middle axial slice (the trainer's grids are 2-D).

Losses per step: ``critic`` (including the weighted penalty), ``wasserstein_estimate``
(E[C(x)] - E[C(G(z))], the critic's estimate of the EM distance), ``gradient_penalty`` (unweighted)
and ``generator`` (-E[C(G(z))]: on generator steps the loss it was updated with, on the others the
same quantity on this step's fake batch before the critic's update).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from monai.networks.blocks import Convolution, UpSample
from torch import nn

from pipeline_lib.core.errors import InputError
from pipeline_lib.models.base import GenerativeModel
from pipeline_lib.models.families.hparams.wgan_gp3d import CRITIC_NORMS, WGANGP3DHyperparameters
from pipeline_lib.models.layers import BASE_SIZE, draw_latent, n_resolution_stages, set_requires_grad, to_signed, to_unit
from pipeline_lib.models.losses import gradient_penalty

LEAKY_RELU = ("leakyrelu", {"negative_slope": 0.2})
#: One group: statistics over all of (C, D, H, W) per sample, i.e. layer norm with a per-channel affine.
LAYER_NORM = ("group", {"num_groups": 1})


class Generator3D(nn.Module):
    """z (N, latent_dim) -> volume (N, C, S, S, S) in [-1, 1]."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int):
        super().__init__()
        stages = n_resolution_stages(image_size)
        self.c0 = width * 2 ** (stages - 1)
        self.project = nn.Linear(latent_dim, self.c0 * BASE_SIZE**3)
        self.project_act = nn.Sequential(nn.BatchNorm3d(self.c0), nn.ReLU())
        blocks: list[nn.Module] = []
        c_in = self.c0
        for stage in range(stages):
            last = stage == stages - 1
            c_out = channels if last else c_in // 2
            blocks += [UpSample(3, scale_factor=2, mode="nontrainable", interp_mode="nearest", align_corners=None),
                       Convolution(3, c_in, c_out, kernel_size=3, bias=False, norm=None if last else "batch",
                                   act="tanh" if last else "relu")]
            c_in = c_out
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(-1, self.c0, BASE_SIZE, BASE_SIZE, BASE_SIZE)
        return self.net(self.project_act(h))


class Critic3D(nn.Module):
    """x (N, C, S, S, S) -> one unbounded score per volume (N,)."""

    def __init__(self, channels: int, image_size: int, width: int, norm: str):
        super().__init__()
        blocks: list[nn.Module] = []
        c_in = channels
        for stage in range(n_resolution_stages(image_size)):
            c_out = width * 2**stage
            stage_norm = LAYER_NORM if stage > 0 and norm == "layer" else None
            blocks.append(Convolution(3, c_in, c_out, strides=2, kernel_size=4, padding=1, norm=stage_norm,
                                      act=LEAKY_RELU, bias=stage_norm is None))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Conv3d(c_in, 1, kernel_size=BASE_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).flatten()


class WGANGP3D(GenerativeModel):
    family = "wgan_gp3d"
    HYPERPARAMETERS = WGANGP3DHyperparameters
    EMA_MODULES = ("generator",)
    spatial_dims: ClassVar[int] = 3

    def __init__(self, image_size: int, channels: int = 1, n_classes: int = 0, **hparams: Any):
        super().__init__(image_size, channels, n_classes, **hparams)
        h = self.hp
        if h.critic_norm not in CRITIC_NORMS:
            raise InputError(f"model family '{self.family}': critic_norm must be one of {CRITIC_NORMS} "
                             f"(batch norm breaks the per-sample gradient penalty), got {h.critic_norm!r}")
        if not isinstance(h.n_critic, int) or h.n_critic < 1:
            raise InputError(f"model family '{self.family}': n_critic must be an integer >= 1, got {h.n_critic!r}")
        self.generator = Generator3D(h.latent_dim, channels, image_size, h.width)
        self.critic = Critic3D(channels, image_size, h.width, h.critic_norm)
        # In the state dict, so checkpoints resume the critic/generator schedule exactly.
        self.register_buffer("critic_updates", torch.zeros((), dtype=torch.long))

    def configure_optimizers(self) -> None:
        h = self.hp
        self.optimizers = {"critic": self.adam(self.critic.parameters(), lr=h.lr, betas=(h.beta1, h.beta2)),
                           "generator": self.adam(self.generator.parameters(), lr=h.lr, betas=(h.beta1, h.beta2))}

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return draw_latent(n, self.hp.latent_dim, "normal", self.device, generator)

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of (||grad_x C(x)|| - 1)^2 at random points between real and fake volumes."""
        return gradient_penalty(self.critic, real, fake)

    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        """One critic update; every ``n_critic``-th call also one generator update."""
        self.train()
        real = to_signed(images)
        with torch.no_grad(), self.autocast():
            fake = self.generator(self.latent(len(real)))
        with self.autocast():
            real_score = self.critic(real).float().mean()
            fake_score = self.critic(fake).float().mean()
        estimate = real_score - fake_score
        penalty = self.gradient_penalty(real, fake)
        critic_loss = -estimate + self.hp.gp_weight * penalty
        self.optimise(critic_loss, self.optimizers["critic"])
        self.critic_updates += 1

        generator_loss = -fake_score
        if int(self.critic_updates) % self.hp.n_critic == 0:
            set_requires_grad(self.critic, False)
            with self.autocast():
                generator_loss = -self.critic(self.generator(self.latent(len(real)))).float().mean()
            self.optimise(generator_loss, self.optimizers["generator"])
            set_requires_grad(self.critic, True)
        return self.loss_values({"critic": critic_loss, "generator": generator_loss,
                                 "wasserstein_estimate": estimate, "gradient_penalty": penalty})

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` volumes (n, C, S, S, S) in [0, 1]."""
        self.eval()
        return to_unit(self.generator(self.latent(n, generator)))

    def snapshot(self, n: int, labels: torch.Tensor | None, generator: torch.Generator,
                 reference: torch.Tensor | None) -> tuple[str, torch.Tensor]:
        """The middle axial (z) slice of each of ``n`` sampled volumes."""
        volumes = self.sample(n, labels=labels, generator=generator)
        return "samples", volumes[..., volumes.shape[-1] // 2]


MODEL = WGANGP3D
