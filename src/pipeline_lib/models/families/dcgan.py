"""DCGAN (Radford et al.) in the two variants of the seeds, chosen by the ``preset`` hyperparameter.

``preset: kazuhiro`` (the default) — Kazuhiro et al. (Kazuhiro et al., "Generation of
Artificial Brain Images Using DCGAN"): a 100-d uniform latent, a fully connected
projection, then 4 fractionally strided 5 x 5 convolutions through 256, 128, 64
and 32 feature maps (at 64 px), ReLU and batch norm in every layer, tanh output;
discriminator with LeakyReLU (slope 0.2) in all layers and batch norm in every
layer except the output. The seed gives no optimiser settings; it follows "a
previously described procedure" (Radford et al.), so Radford's values are used:
Adam 2e-4, beta1 0.5, batch 128.

``preset: han`` — Han et al. (Han et al., section 3.2.2 "DCGAN Implementation
Details"): the DCGAN architecture with all filters 4 x 4, half the usual channel
widths (32 instead of 64 in the last generator / first discriminator layer), ELU
in the discriminator and no tanh in the generator; Adam 2e-4, batch 64 (beta1 0.5
from Radford et al., the seed does not state it).

Why Kazuhiro is the default: Kazuhiro et al. is the one paper in the seeds about this
model alone, it specifies the whole network, and its tanh output keeps samples in
range by construction; Han et al. report their DCGAN as the weaker baseline of
their WGAN, which the ``wgan`` family reproduces on Han's architecture anyway.

Changes, and why:
- Depth follows ``image_size`` by default: the projection is always 4 x 4 (Radford) and
  there is one x2 stage per doubling, so 64 px has exactly the published 4 stages and
  128 px one more (widths double towards the projection as in Radford et al.).
  ``stages: 4`` keeps Radford et al.'s four stages at any size instead (the projection
  grows to image_size / 16: 8 x 8 at 128 px); Han et al.'s preset sets it for its
  128 px models, which use "the same DCGAN architecture".
- ``width`` (channels of the last generator / first discriminator stage) is a
  hyperparameter so tests and CPU demos can shrink the networks.
- Images are mapped to [-1, 1] for training; ``sample()`` maps back to [0, 1] and
  clamps, which matters for Han's generator: without a tanh its output is unbounded.
- The discriminator returns logits and the loss applies the sigmoid
  (``BCEWithLogits``) for numerical stability; the generator minimises the
  non-saturating -log D(G(z)) that Goodfellow et al. recommend and DCGAN code uses.
- 5 x 5 stride-2 convolutions use TensorFlow's 'SAME' padding so sizes halve/double exactly.

Options for small cohorts, off by default (neither paper used them): ``diffaugment``, a
DiffAugment policy (Zhao et al. 2020, e.g. ``"color,translation,cutout"``) applied to every
batch the discriminator sees, real and generated, in both updates; and ``r1_gamma``, the
weight gamma of the R1 penalty gamma / 2 * E||grad D(x_real)||^2 (Mescheder et al. 2018) on
the discriminator's real batch on the [-1, 1] scale, taken through the augmentation (as
StyleGAN2-ADA does). R1 is refused on discriminators with batch norm (this family's, wgan's,
cgan's): batch norm couples the per-image gradients it penalises.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from pipeline_lib.core.errors import InputError
from pipeline_lib.models.base import GenerativeModel
from pipeline_lib.models.families.hparams.dcgan import PRESETS as PRESET_VALUES, DCGANHyperparameters
from pipeline_lib.models.layers import (DownBlock, UpBlock, diff_augment, diffaugment_policy, draw_latent,
                                       init_dcgan_weights, network_geometry, set_requires_grad, stride2_padding,
                                       to_signed, to_unit)
from pipeline_lib.models.losses import r1_penalty


@dataclass(frozen=True)
class Architecture:
    """The choices that distinguish one published DCGAN-style network from another."""

    kernel_size: int
    tanh_output: bool          # False: linear generator output (Han et al.)
    d_activation: str          # "leaky_relu" | "elu"
    d_norm: str                # "batch" | "layer" | "none"
    d_norm_first_layer: bool   # Radford et al. leave the discriminator's input layer unnormalised


class Generator(nn.Module):
    """z (N, latent_dim [+ cond_dim]) -> image (N, C, S, S) in [-1, 1] (unbounded without tanh)."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int,
                 kernel_size: int, tanh_output: bool = True, cond_dim: int = 0, stages: int | None = None):
        super().__init__()
        stages, self.base = network_geometry(image_size, stages)
        self.c0 = width * 2 ** (stages - 1)
        self.project = nn.Linear(latent_dim + cond_dim, self.c0 * self.base**2, bias=False)
        self.project_act = nn.Sequential(nn.BatchNorm2d(self.c0), nn.ReLU())
        blocks: list[nn.Module] = []
        c_in = self.c0
        for _ in range(stages - 1):
            blocks.append(UpBlock(c_in, c_in // 2, kernel_size, norm="batch", activation="relu"))
            c_in //= 2
        padding, output_padding = stride2_padding(kernel_size)
        blocks.append(nn.ConvTranspose2d(c_in, channels, kernel_size, stride=2, padding=padding,
                                         output_padding=output_padding))
        if tanh_output:
            blocks.append(nn.Tanh())
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(-1, self.c0, self.base, self.base)
        return self.net(self.project_act(h))


class Discriminator(nn.Module):
    """x (N, C [+ extra_channels], S, S) -> one unbounded score per image (N,): a logit or a critic value."""

    def __init__(self, channels: int, image_size: int, width: int, arch: Architecture,
                 extra_channels: int = 0, stages: int | None = None):
        super().__init__()
        stages, base = network_geometry(image_size, stages)
        blocks: list[nn.Module] = []
        c_in = channels + extra_channels
        for stage in range(stages):
            c_out = width * 2**stage
            norm = arch.d_norm if stage > 0 or arch.d_norm_first_layer else "none"
            blocks.append(DownBlock(c_in, c_out, arch.kernel_size, norm=norm,
                                    activation=arch.d_activation))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in * base**2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # reshape (not view): channels_last feature maps are not contiguous in NCHW order
        return self.head(self.features(x).flatten(1)).squeeze(1)


KAZUHIRO = Architecture(kernel_size=5, tanh_output=True, d_activation="leaky_relu",
                        d_norm="batch", d_norm_first_layer=True)
HAN = Architecture(kernel_size=4, tanh_output=False, d_activation="elu",
                   d_norm="batch", d_norm_first_layer=False)


class DCGAN(GenerativeModel):
    family = "dcgan"
    #: Latent prior; Radford et al. and both seeds use a uniform one.
    LATENT: ClassVar[str] = "uniform"
    #: preset -> (architecture, published hyperparameters); a config's own keys override the latter.
    PRESETS: ClassVar[dict[str, tuple[Architecture, dict[str, Any]]]] = {
        "kazuhiro": (KAZUHIRO, PRESET_VALUES["kazuhiro"]), "han": (HAN, PRESET_VALUES["han"])}
    HYPERPARAMETERS = DCGANHyperparameters
    EMA_MODULES = ("generator",)

    @classmethod
    def resolve_hparams(cls, given: dict[str, Any]):
        """The chosen preset's published values, overridden by ``given``."""
        if "preset" not in cls.DEFAULTS:  # subclasses with one fixed architecture
            return super().resolve_hparams(given)
        preset = given.get("preset", cls.DEFAULTS["preset"])
        if preset not in cls.PRESETS:
            raise InputError(f"model family '{cls.family}': unknown preset '{preset}'; "
                             f"known: {sorted(cls.PRESETS)}")
        hp = super().resolve_hparams(given)  # rejects unknown keys
        return dataclasses.replace(hp, **{**cls.PRESETS[preset][1], **given})

    def __init__(self, image_size: int, channels: int = 1, n_classes: int = 0, **hparams: Any):
        super().__init__(image_size, channels, n_classes, **hparams)
        arch = self.architecture()
        h = self.hp
        try:
            network_geometry(image_size, h.stages)
        except ValueError as error:
            raise InputError(f"model family '{self.family}': stages: {error}") from None
        self.generator = Generator(h.latent_dim, channels, image_size, h.width,
                                   arch.kernel_size, arch.tanh_output, cond_dim=self.cond_dim(), stages=h.stages)
        self.discriminator = Discriminator(channels, image_size, h.width, arch,
                                           extra_channels=self.extra_d_channels(), stages=h.stages)
        self.apply(init_dcgan_weights)
        self.augment_ops = checked_gan_aids(self.family, h, self.discriminator)

    def architecture(self) -> Architecture:
        base, _ = self.PRESETS[self.hp.preset]
        return Architecture(self.hp.kernel_size, base.tanh_output, base.d_activation,
                            base.d_norm, base.d_norm_first_layer)

    # Hooks for the conditional subclass: the unconditional model ignores labels.
    def cond_dim(self) -> int:
        return 0

    def extra_d_channels(self) -> int:
        return 0

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.generator(z)

    def discriminate(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.discriminator(x)

    def check_labels(self, labels: torch.Tensor | None, n: int) -> None:
        """Unconditional: nothing to check."""

    # -- training -----------------------------------------------------------
    def configure_optimizers(self) -> None:
        h = self.hp
        betas = (h.beta1, h.beta2)
        self.optimizers = {
            "discriminator": self.adam(self.discriminator.parameters(), lr=h.lr, betas=betas),
            "generator": self.adam(self.generator.parameters(), lr=h.lr, betas=betas),
        }

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return draw_latent(n, self.hp.latent_dim, self.LATENT, self.device, generator)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """What the discriminator sees of a batch: ``x`` through the DiffAugment policy (if any)."""
        return diff_augment(x, self.augment_ops)

    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        """One discriminator update on real vs fake, then one generator update on the same fakes."""
        self.train()
        self.check_labels(labels, len(images))
        real = to_signed(images)
        z = self.latent(len(real))
        gamma = self.hp.r1_gamma
        if gamma:
            real = real.detach().requires_grad_(True)
        with self.autocast():
            fake = self.generate(z, labels)
            real_in = self.augment(real)
            # Real and fake go through separate forward passes, so batch norm sees pure batches (Radford).
            real_logits = self.discriminate(real_in, labels)
            fake_logits = self.discriminate(self.augment(fake.detach()), labels)
            d_loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                      + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        extra = {}
        if gamma:
            penalty = r1_penalty(real_logits, real, self.scaler)
            d_loss = d_loss + gamma / 2 * penalty
            extra["r1"] = penalty
        self.optimise(d_loss, self.optimizers["discriminator"])

        set_requires_grad(self.discriminator, False)
        with self.autocast():
            g_logits = self.discriminate(self.augment(fake), labels)
            g_loss = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))
        self.optimise(g_loss, self.optimizers["generator"])
        set_requires_grad(self.discriminator, True)
        return self.loss_values({"discriminator": d_loss, "generator": g_loss,
                                 "d_real": torch.sigmoid(real_logits.float()).mean(),
                                 "d_fake": torch.sigmoid(fake_logits.float()).mean(), **extra})

    # -- inference ----------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        self.eval()
        self.check_labels(labels, n)
        return to_unit(self.generate(self.latent(n, generator), labels))


def checked_gan_aids(family: str, hp: Any, discriminator: nn.Module) -> tuple[str, ...]:
    """The DiffAugment operations of ``hp`` (a GAN family's hyperparameters); bad policies, a negative R1 weight and R1 on a
    discriminator with batch norm are InputErrors. Batch norm mixes the images of a batch, so the
    gradient R1 takes of one real image's score depends on the others (as wgan_gp's penalty)."""
    try:
        ops = diffaugment_policy(hp.diffaugment)
    except ValueError as exc:
        raise InputError(f"model family '{family}': {exc}") from exc
    gamma = hp.r1_gamma
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma < 0:
        raise InputError(f"model family '{family}': r1_gamma must be a number >= 0, got {gamma!r}")
    if gamma and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules()):
        raise InputError(f"model family '{family}': r1_gamma needs a discriminator without batch norm "
                         f"(batch norm couples the per-image gradients R1 penalises); this family's has it, "
                         f"so use r1_gamma: 0 or a family whose critic has no batch norm (wgan_gp, stylegan)")
    return ops


MODEL = DCGAN
