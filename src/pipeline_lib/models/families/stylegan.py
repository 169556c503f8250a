"""Style-based GAN as modified by Ungría Hirte et al. (Ungría Hirte et al., sections 2.5, 3.2), after Karras et al. 2019.

Generator: a mapping network of ``mapping_layers`` (2) fully connected layers
turns z (512) into a style vector w (512); the synthesis network starts from a
learned constant 4 x 4 input and, at every resolution, applies two 3x3
convolutions (the first after nearest-neighbour upsampling x2). Every
synthesis layer adds per-pixel Gaussian noise with a learned per-channel scale,
a bias and LeakyReLU, then adaptive instance normalisation (seed eq. 10):
instance-normalised features times a style scale plus a style bias, both
produced from w by that layer's own affine map. A 1x1 convolution maps the
last features to the image channels.

Discriminator (critic), in the PGGAN style: 1x1 "from image" convolution,
then per resolution two 3x3 convolutions with LeakyReLU and average pooling
down to 4 x 4, a minibatch standard deviation feature map, a 3x3 convolution
and two fully connected layers giving one unbounded score. No normalisation
layers, as a gradient penalty requires.

Objective, chosen by ``loss_form``. Ungría Hirte et al., section 2.5, equations 11-12:

    (11)  L_D = E_x[D(x)] - E_z[D(G(z))]
    (12)  L_G = E_z[D(G(z))]

both minimised, so the seed's D scores *fakeness*. Our critic C scores realness (C = -D, the
same game with D negated), so eq. (11) is E[C(G(z))] - E[C(x)] and eq. (12) is -E[C(G(z))];
the logged ``critic`` and ``generator`` losses are exactly those values.

- ``loss_form: wgan_gp_drift`` (default; PGGAN/StyleGAN code): eq. (11) plus
  ``gradient_penalty`` x E[(|grad C(x_hat)| - 1)^2] at random interpolates x_hat (Gulrajani
  et al.; 0 disables it) plus PGGAN's ``drift`` x E[C(x)^2] that keeps scores from drifting;
  the generator minimises eq. (12).
- ``loss_form: eq11_12``: equations 11 and 12 as printed, nothing added: ``gradient_penalty``
  and ``drift`` resolve to 0 (setting either to anything else is an error). The seed names no
  Lipschitz constraint (no weight clipping, no penalty), so the critic's scores are unbounded
  and long runs may diverge; the form is there so a preset can follow the paper, and the
  default stays the stabilised one.

One critic and one generator update per batch, as in PGGAN and StyleGAN.

Seed 001's modifications, kept: 2-layer 512 -> 512 mapping, no progressive
growing, no mixing regularisation, He-normal initialisation of all weights,
Adam with learning rate 1e-4. Choices the seed leaves open, and why:
- Adam betas (0.0, 0.99): those of the PGGAN/StyleGAN code the seed adopted.
- Widths follow PGGAN's fmap_base=8192 / fmap_max=512 rule: ``width`` (512)
  channels up to 32 x 32, halved for every doubling above that (256 at 64 px,
  128 at 128 px). A small ``width`` gives a cheap CPU demo.
- Equalised learning rate, blur and truncation are left out (the seed asks for
  He-normal initialisation instead); per-layer noise scales start at zero and
  style scales at one, as in StyleGAN, since He-normal has no meaning for them.
- The generator ends in a sigmoid so samples lie in [0, 1]; the critic sees
  images rescaled to [-1, 1].

Options for small cohorts, off by default (not in the seed): ``diffaugment`` (a DiffAugment
policy, Zhao et al. 2020, on every batch the critic sees, real and generated, gradient
penalty included) and ``r1_gamma`` (R1 penalty gamma / 2 * E||grad D(x_real)||^2, Mescheder et
al. 2018; StyleGAN2's regulariser, with gamma on the [-1, 1] scale and the gradient taken through
the augmentation to the real batch, as StyleGAN2-ADA). The generator's EMA
that StyleGAN2-ADA samples from is the trainer's ``ema_decay``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pipeline_lib.core.errors import InputError
from pipeline_lib.models.base import GenerativeModel
from pipeline_lib.models.families.dcgan import checked_gan_aids
from pipeline_lib.models.families.hparams.stylegan import StyleGANHyperparameters
from pipeline_lib.models.layers import diff_augment
from pipeline_lib.models.losses import gradient_penalty, r1_penalty


def resolution_width(resolution: int, width: int) -> int:
    """Channels at a resolution: ``width`` up to 32 x 32, halved per doubling above (PGGAN's rule)."""
    return max(1, width * 32 // max(resolution, 32))


def he_normal_(module: nn.Module) -> None:
    """He-normal weights and zero biases for every convolution and fully connected layer."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class MappingNetwork(nn.Module):
    """z (N, latent_dim) -> w (N, mapping_dim): normalised z through fully connected LeakyReLU layers."""

    def __init__(self, latent_dim: int, mapping_dim: int, n_layers: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_layers):
            layers += [nn.Linear(latent_dim if i == 0 else mapping_dim, mapping_dim), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # StyleGAN normalises z to unit root-mean-square before mapping.
        z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        return self.net(z)


class StyledLayerEpilogue(nn.Module):
    """Noise with a learned per-channel scale, bias, LeakyReLU, then AdaIN with a style from w."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.noise_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.style = nn.Linear(w_dim, 2 * channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(x + self.noise_scale * noise + self.bias, 0.2)
        scale, shift = self.style(w).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return (1 + scale) * F.instance_norm(x) + shift


class SynthesisBlock(nn.Module):
    """One resolution: (upsample x2 +) 3x3 conv + epilogue, 3x3 conv + epilogue.

    The first block has no upsampling and no first convolution: its input is the learned constant.
    """

    def __init__(self, c_in: int, c_out: int, w_dim: int, first: bool):
        super().__init__()
        self.first = first
        self.conv1 = None if first else nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.epilogue1 = StyledLayerEpilogue(c_out, w_dim)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.epilogue2 = StyledLayerEpilogue(c_out, w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        if not self.first:
            x = self.conv1(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = self.epilogue1(x, w, noise[0])
        return self.epilogue2(self.conv2(x), w, noise[1])


class StyleGenerator(nn.Module):
    """z (N, latent_dim) -> image (N, C, S, S) in [0, 1]."""

    def __init__(self, channels: int, image_size: int, latent_dim: int, mapping_dim: int,
                 mapping_layers: int, width: int):
        super().__init__()
        self.mapping = MappingNetwork(latent_dim, mapping_dim, mapping_layers)
        self.resolutions = [2**k for k in range(2, int(math.log2(image_size)) + 1)]
        widths = [resolution_width(r, width) for r in self.resolutions]
        self.blocks = nn.ModuleList(
            SynthesisBlock(widths[max(i - 1, 0)], widths[i], mapping_dim, first=i == 0)
            for i in range(len(widths)))
        self.to_image = nn.Conv2d(widths[-1], channels, 1)
        he_normal_(self)
        for block in self.blocks:
            for epilogue in (block.epilogue1, block.epilogue2):
                nn.init.zeros_(epilogue.style.bias)  # style scale starts at 1 (the "1 +" above), shift at 0
        # Created after the He-normal pass: a learned input, initialised to ones as in StyleGAN.
        self.constant = nn.Parameter(torch.ones(1, widths[0], 4, 4))

    def noise_shapes(self, n: int) -> list[tuple[int, int, int, int]]:
        """One single-channel noise map per synthesis layer (two per resolution)."""
        return [(n, 1, r, r) for r in self.resolutions for _ in range(2)]

    def forward(self, z: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        w = self.mapping(z)
        x = self.constant.expand(z.shape[0], -1, -1, -1)
        for i, block in enumerate(self.blocks):
            x = block(x, w, (noise[2 * i], noise[2 * i + 1]))
        return torch.sigmoid(self.to_image(x))


class MinibatchStddev(nn.Module):
    """Appends one feature map: the mean over features and pixels of the across-batch standard deviation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = (x.float().var(dim=0, unbiased=False) + 1e-8).sqrt().mean().to(x.dtype)
        return torch.cat([x, std.expand(x.shape[0], 1, x.shape[2], x.shape[3])], dim=1)


class Critic(nn.Module):
    """Image (N, C, S, S) in [0, 1] -> unbounded score (N,)."""

    def __init__(self, channels: int, image_size: int, width: int):
        super().__init__()
        resolutions = [2**k for k in range(int(math.log2(image_size)), 2, -1)]  # S ... 8
        c = resolution_width(image_size, width)
        layers: list[nn.Module] = [nn.Conv2d(channels, c, 1), nn.LeakyReLU(0.2)]
        for r in resolutions:
            c_next = resolution_width(r // 2, width)
            layers += [nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.2),
                       nn.Conv2d(c, c_next, 3, padding=1), nn.LeakyReLU(0.2), nn.AvgPool2d(2)]
            c = c_next
        layers += [MinibatchStddev(), nn.Conv2d(c + 1, c, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten(),
                   nn.Linear(c * 4 * 4, c), nn.LeakyReLU(0.2), nn.Linear(c, 1)]
        self.net = nn.Sequential(*layers)
        he_normal_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(2 * x - 1).squeeze(1)


class StyleGAN(GenerativeModel):
    family = "stylegan"
    HYPERPARAMETERS = StyleGANHyperparameters
    #: Terms eq11_12 leaves out; they resolve to 0 under that form.
    EXTRA_TERMS = ("gradient_penalty", "drift")
    EMA_MODULES = ("generator",)

    def __init__(self, image_size: int, channels: int = 1, n_classes: int = 0, **hparams: Any):
        super().__init__(image_size, channels, n_classes, **hparams)
        h = self.hp
        self.generator = StyleGenerator(channels, image_size, h.latent_dim, h.mapping_dim,
                                        h.mapping_layers, h.width)
        self.critic = Critic(channels, image_size, h.width)
        self.augment_ops = checked_gan_aids(self.family, h, self.critic)

    @classmethod
    def resolve_hparams(cls, given: dict[str, Any]):
        """Defaults overridden by ``given``; under ``loss_form: eq11_12`` the penalty and drift are 0."""
        hp = super().resolve_hparams(given)
        if hp.loss_form != "eq11_12":
            return hp
        for key in cls.EXTRA_TERMS:
            if given.get(key, 0):
                raise InputError(f"models.<stylegan model>.{key}: loss_form eq11_12 is the seed's "
                                 f"equations 11-12 without {key}; leave {key} unset or 0, "
                                 f"or use loss_form wgan_gp_drift (got {given[key]!r})")
        return dataclasses.replace(hp, **dict.fromkeys(cls.EXTRA_TERMS, 0.0))

    def configure_optimizers(self) -> None:
        h = self.hp
        betas = (h.beta1, h.beta2)
        self.optimizers = {"generator": self.adam(self.generator.parameters(), lr=h.lr, betas=betas),
                           "critic": self.adam(self.critic.parameters(), lr=h.lr, betas=betas)}

    def generate(self, n: int, generator: torch.Generator | None = None, on_cpu: bool = False) -> torch.Tensor:
        """Images from fresh latents and noise; drawn on the CPU (reproducible anywhere) when asked."""
        device = self.device

        def randn(*shape):
            if on_cpu:
                return torch.randn(*shape, generator=generator, device="cpu").to(device)
            return torch.randn(*shape, device=device)

        z = randn(n, self.hp.latent_dim)
        noise = [randn(*shape) for shape in self.generator.noise_shapes(n)]
        return self.generator(z, noise)

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """E[(||grad_x D(x_hat)|| - 1)^2] at random points between real and generated images."""
        def critic(x: torch.Tensor) -> torch.Tensor:
            with self.autocast():
                return self.critic(x)

        return gradient_penalty(critic, real, fake, self.scaler)

    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        """One critic update, then one generator update."""
        self.train()
        h = self.hp
        n = images.shape[0]
        with torch.no_grad(), self.autocast():
            fake = self.augment(self.generate(n).float())
        if h.r1_gamma:
            images = images.detach().requires_grad_(True)
        real = self.augment(images)
        with self.autocast():
            d_real = self.critic(real).float()
            d_fake = self.critic(fake).float()
        wasserstein = d_real.mean() - d_fake.mean()
        critic_loss = critic_objective(d_real, d_fake, h.drift)
        penalty = torch.zeros((), device=images.device)
        if h.gradient_penalty > 0:
            penalty = self.gradient_penalty(real.detach(), fake)
            critic_loss = critic_loss + h.gradient_penalty * penalty
        extra = {}
        if h.r1_gamma:
            # The critic reads [0, 1] images and rescales them (Critic.forward): gamma is on [-1, 1].
            r1 = r1_penalty(d_real, images, self.scaler, input_scale=0.5)
            critic_loss = critic_loss + h.r1_gamma / 2 * r1
            extra["r1"] = r1
        self.optimise(critic_loss, self.optimizers["critic"])

        with self.autocast():
            generator_loss = generator_objective(self.critic(self.augment(self.generate(n))).float())
        # `inputs` spares computing critic gradients the generator step would throw away.
        self.optimise(generator_loss, self.optimizers["generator"], inputs=list(self.generator.parameters()))
        return self.loss_values({"critic": critic_loss, "generator": generator_loss,
                                 "gradient_penalty": penalty, "wasserstein_estimate": wasserstein, **extra})

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """What the critic sees of a batch in [0, 1]: ``x`` through the DiffAugment policy (if any)."""
        return diff_augment(x, self.augment_ops, brightness_range=0.5)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        self.eval()
        return self.generate(n, generator=generator, on_cpu=True).float()


def critic_objective(c_real: torch.Tensor, c_fake: torch.Tensor, drift: float = 0.0) -> torch.Tensor:
    """Eq. (11) in the critic's terms (D = -C): E[C(G(z))] - E[C(x)], plus ``drift`` x E[C(x)^2]."""
    return -(c_real.mean() - c_fake.mean()) + drift * c_real.pow(2).mean()


def generator_objective(c_fake: torch.Tensor) -> torch.Tensor:
    """Eq. (12) in the critic's terms (D = -C): -E[C(G(z))]."""
    return -c_fake.mean()


MODEL = StyleGAN
