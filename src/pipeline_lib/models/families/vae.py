"""Vanilla VAE of Ungría Hirte et al. (Ungría Hirte et al., section 3.2), after Hou et al.'s DFC-VAE layout.

Encoder: four 4x4 convolutions with stride 2, each followed by batch norm and
LeakyReLU, then two fully connected heads for the mean and log-variance.
Decoder: a fully connected layer back to the smallest feature map, then four
stages of nearest-neighbour upsampling x2 and a 3x3 convolution; the first
three stages carry batch norm + LeakyReLU, the last maps to the image channels
through a sigmoid so that samples lie in [0, 1] as the seed's metrics require.
Loss (eq. 5): KL divergence + recon_weight * H * W * per-pixel squared error,
i.e. the published 0.025 x 128 x 128 scaling at 128 px, averaged over the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pipeline_lib.models.base import GenerativeModel
from pipeline_lib.models.families.hparams.vae import VAEHyperparameters
from pipeline_lib.models.losses import kl_to_standard_normal, reparameterise

N_STAGES = 4  # four stride-2 stages: the smallest feature map is image_size / 16


class ConvEncoder(nn.Module):
    """x (N, C, S, S) -> (mu, logvar), each (N, latent_dim)."""

    def __init__(self, channels: int, image_size: int, latent_dim: int, width: int):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for stage in range(N_STAGES):
            c_out = width * 2**stage
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
                       nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.Flatten())
        flat = c_in * (image_size // 2**N_STAGES) ** 2
        self.mu = nn.Linear(flat, latent_dim)
        self.logvar = nn.Linear(flat, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.mu(h), self.logvar(h)


class UpsampleDecoder(nn.Module):
    """z (N, latent_dim) -> image (N, C, S, S) in [0, 1]."""

    def __init__(self, channels: int, image_size: int, latent_dim: int, width: int):
        super().__init__()
        self.c0 = width * 2 ** (N_STAGES - 1)
        self.s0 = image_size // 2**N_STAGES
        self.fc = nn.Linear(latent_dim, self.c0 * self.s0 * self.s0)
        layers: list[nn.Module] = []
        c_in = self.c0
        for stage in range(N_STAGES - 1):
            c_out = c_in // 2
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="replicate"),
                       nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]
            c_in = c_out
        layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                   nn.Conv2d(c_in, channels, 3, padding=1, padding_mode="replicate"),
                   nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, self.c0, self.s0, self.s0)
        return self.net(h)


class GaussianLatentSampling:
    """Sampling and reconstruction shared by the encoder/decoder families.

    Needs ``self.encoder`` returning (mu, logvar), ``self.decoder`` and
    ``hp.latent_dim``; latents are drawn on the CPU so that a seed
    gives the same samples on any device.
    """

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        self.eval()
        z = torch.randn(n, self.hp.latent_dim, generator=generator, device="cpu").to(self.device)
        return self.decoder(z).float()

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean: the deterministic reconstruction used for the metrics."""
        self.eval()
        mu, _ = self.encoder(images)
        return self.decoder(mu).float()


class VAE(GaussianLatentSampling, GenerativeModel):
    family = "vae"
    can_reconstruct = True
    HYPERPARAMETERS = VAEHyperparameters
    EMA_MODULES = ("encoder", "decoder")

    def __init__(self, image_size: int, channels: int = 1, n_classes: int = 0, **hparams: Any):
        super().__init__(image_size, channels, n_classes, **hparams)
        h = self.hp
        self.encoder = ConvEncoder(channels, image_size, h.latent_dim, h.width)
        self.decoder = UpsampleDecoder(channels, image_size, h.latent_dim, h.width)

    def configure_optimizers(self) -> None:
        self.optimizers = {"vae": self.adam(self.parameters(), lr=self.hp.lr)}

    def reconstruction_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        per_pixel = F.mse_loss(x_hat.float(), x.float(), reduction="none").flatten(1).mean(1)
        return (self.hp.recon_weight * self.image_size**2 * per_pixel).mean()

    def objective(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss of eq. (5) and its two terms on a batch."""
        with self.autocast():
            mu, logvar = self.encoder(images)
            z = reparameterise(mu, logvar)
            x_hat = self.decoder(z)
        recon = self.reconstruction_loss(images, x_hat)
        kl = kl_to_standard_normal(mu, logvar)
        return {"loss": recon + kl, "reconstruction": recon, "kl": kl}

    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        self.train()
        terms = self.objective(images)
        self.optimise(terms["loss"], self.optimizers["vae"])
        return self.loss_values(terms)

    @torch.no_grad()
    def validation_losses(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        self.eval()
        return {name: value.item() for name, value in self.objective(images).items()}



MODEL = VAE
