"""Introspective VAE (IntroVAE) of Ungría Hirte et al. (Ungría Hirte et al., sections 2.4 and 3.2), after Huang et al. 2018.

The encoder doubles as the discriminator: it is trained to give real images a
posterior close to the prior (small KL) and generated images a posterior far
from it (KL pushed above a margin ``m``), while the generator is trained to
make its reconstructions and its samples from the prior look "real" to the
encoder (small KL) and to reconstruct the input.

Two loss forms, chosen by ``loss_form``; L_REG is the KL divergence of an
encoding to N(0, I), x_r = G(z ~ E(x)) the reconstruction, x_p = G(z_p ~ N(0, I))
a sample from the prior, L_AE the reconstruction error (below).

``loss_form: huang2018`` (default; Huang et al. 2018, eqs. 11-12 and algorithm 1),
two fake terms, the reconstruction x_r counted as a fake as well as the sample x_p:

    L_E = L_REG(E(x)) + alpha * ([m - L_REG(E(ng(x_r)))]^+ + [m - L_REG(E(ng(x_p)))]^+) + beta * L_AE
    L_G = alpha * (L_REG(E(x_r)) + L_REG(E(x_p))) + beta * L_AE

``loss_form: eq8_9`` (Ungría Hirte et al., section 2.4, equations 8 and 9 as printed), one
fake term, the sample x' = G(z) from the prior:

    (8)  L_E(x, z) = L_KL(E(x)) + [m - L_KL(E(x'))]^+ + L_rec(x, G(E(x)))
    (9)  L_G(z)    = L_KL(E(G(z))) + L_rec(x, G(E(x)))

    here:  L_E = L_REG(E(x)) + alpha * [m - L_REG(E(ng(x_p)))]^+ + beta * L_AE
           L_G = alpha * L_REG(E(x_p)) + beta * L_AE

  Weights: section 3.2 says the "L_KL terms in the loss functions (8,9) were scaled by 0.25
  and L_rec terms by 0.5". Those values (m = 110, 0.25, 0.5 at 128 px) are Huang et al.'s
  alpha and beta, which weight the adversarial KL terms only and leave the real image's KL
  at 1, so we read the seed the same way: ``alpha`` on the fake image's KL terms, ``beta`` on
  both L_rec terms (the seed does not say otherwise; scaling the real KL too would be
  ``alpha`` x L_REG(E(x)) and change the prior's pull on real encodings fourfold).
  ``real_kl_weight`` (default 1, Huang et al.) weights L_REG(E(x)) in L_E; 0.25 is the seed's
  words read literally ("L_KL terms ... scaled by 0.25", the real one included).

``ng`` stops the gradient, so the encoder's adversarial terms never train the
generator; L_E updates only the encoder, L_G only the generator, and L_G uses
the encoder *after* its update, as in Huang et al.'s algorithm 1. The hinge is
applied to the batch-mean KL, as in their code.

Published values (Ungría Hirte et al., section 3.2, 128 x 128 images): m = 110, latent
dimension 256, KL (adversarial) terms x 0.25 (``alpha``), reconstruction terms
x 0.5 (``beta``), Adam with learning rate 2e-4, batch size 8.

Networks, as Huang et al. describe them: PGGAN-like encoder and generator built
from residual blocks (two 3x3 convolutions with batch norm and LeakyReLU plus
a skip connection, a 1x1 convolution where the width changes). The encoder
halves the resolution by average pooling down to 4 x 4 and ends in a fully
connected layer giving mean and log-variance; the generator mirrors it with
nearest-neighbour upsampling followed by convolutions. The number of stages
follows ``image_size`` (log2(image_size / 4)); stage widths double from
``width`` up to ``max_width``.

Changes and why:
- The generator ends in a sigmoid so that samples lie in [0, 1], as the seed's
  metrics require (Huang et al.'s output is unbounded).
- Reconstruction loss scale. ``m`` is a KL value in nats, so it only has a
  meaning relative to the reconstruction term it is balanced against. Huang et
  al. use the per-image *sum* of squared errors, which at the seed's 128 px is
  128 * 128 * (per-pixel mean squared error). Here L_AE is the per-pixel mean
  squared error times ``recon_reference_size ** 2`` (default 128), i.e. exactly
  the published loss at 128 px, and at 32 or 64 px the same balance between
  reconstruction and KL, so the published ``m`` keeps its meaning. Set
  ``recon_reference_size`` to the image size to get the plain per-image sum of
  squared errors instead (then ``m`` should be re-tuned; a guide is to put it
  a little above the ``kl_real`` the model logs).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pipeline_lib.models.base import GenerativeModel
from pipeline_lib.models.families.hparams.intro_vae import IntroVAEHyperparameters
from pipeline_lib.models.losses import kl_to_standard_normal, reparameterise
from pipeline_lib.models.families.vae import GaussianLatentSampling


def stage_widths(image_size: int, width: int, max_width: int) -> list[int]:
    """Channels of each encoder stage, from full resolution down to 8 x 8 (one per halving to 4 x 4)."""
    n_stages = int(math.log2(image_size // 4))
    return [min(width * 2**i, max_width) for i in range(n_stages)]


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and LeakyReLU, plus a (projected) identity skip."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class IntroEncoder(nn.Module):
    """x (N, C, S, S) -> (mu, logvar), each (N, latent_dim); also the discriminator."""

    def __init__(self, channels: int, widths: list[int], latent_dim: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 5, padding=2, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.LeakyReLU(0.2), nn.AvgPool2d(2)]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [ResidualBlock(c_in, c_out), nn.AvgPool2d(2)]
        layers += [ResidualBlock(widths[-1], widths[-1]), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(widths[-1] * 4 * 4, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.features(x)).chunk(2, dim=1)
        return mu, logvar


class IntroGenerator(nn.Module):
    """z (N, latent_dim) -> image (N, C, S, S) in [0, 1]; the encoder's mirror image."""

    def __init__(self, channels: int, widths: list[int], latent_dim: int):
        super().__init__()
        self.c0 = widths[-1]
        self.fc = nn.Sequential(nn.Linear(latent_dim, self.c0 * 4 * 4), nn.LeakyReLU(0.2))
        layers: list[nn.Module] = [ResidualBlock(self.c0, self.c0)]
        for c_in, c_out in zip(widths[::-1][:-1], widths[::-1][1:]):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), ResidualBlock(c_in, c_out)]
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), ResidualBlock(widths[0], widths[0]),
                   nn.Conv2d(widths[0], channels, 5, padding=2), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, self.c0, 4, 4))


class IntroVAE(GaussianLatentSampling, GenerativeModel):
    family = "intro_vae"
    can_reconstruct = True
    HYPERPARAMETERS = IntroVAEHyperparameters
    EMA_MODULES = ("encoder", "decoder")

    def __init__(self, image_size: int, channels: int = 1, n_classes: int = 0, **hparams: Any):
        super().__init__(image_size, channels, n_classes, **hparams)
        h = self.hp
        widths = stage_widths(image_size, h.width, h.max_width)
        self.encoder = IntroEncoder(channels, widths, h.latent_dim)
        self.decoder = IntroGenerator(channels, widths, h.latent_dim)

    def configure_optimizers(self) -> None:
        lr = self.hp.lr
        self.optimizers = {"encoder": self.adam(self.encoder.parameters(), lr=lr),
                           "generator": self.adam(self.decoder.parameters(), lr=lr)}

    def reconstruction_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Per-pixel squared error scaled to a ``recon_reference_size``-squared image, mean over the batch."""
        per_pixel = F.mse_loss(x_hat.float(), x.float(), reduction="none").flatten(1).mean(1)
        return (self.hp.recon_reference_size ** 2 * per_pixel).mean()

    def fakes(self, x_rec: torch.Tensor, x_fake: torch.Tensor) -> list[torch.Tensor]:
        """The images the encoder is taught to call fake: reconstruction and prior sample (huang2018)
        or the prior sample x' = G(z) alone (eq8_9)."""
        return [x_rec, x_fake] if self.hp.loss_form == "huang2018" else [x_fake]

    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        """One encoder update (eq. 8) followed by one generator update (eq. 9), in ``loss_form``."""
        self.train()
        h = self.hp
        with self.autocast():
            mu, logvar = self.encoder(images)
            z = reparameterise(mu, logvar)
            x_rec = self.decoder(z)
            z_prior = torch.randn(images.shape[0], h.latent_dim, device=images.device)
            x_fake = self.decoder(z_prior)
            fakes = self.fakes(x_rec, x_fake)
            kl_fakes = [kl_to_standard_normal(*self.encoder(x.detach())) for x in fakes]
        kl_real = kl_to_standard_normal(mu, logvar)
        recon = self.reconstruction_loss(images, x_rec)
        loss_e = encoder_loss(kl_real, kl_fakes, recon, h.m, h.alpha, h.beta, h.real_kl_weight)
        # The graph through the generator is reused by L_G, hence retain_graph;
        # `inputs` keeps the encoder loss from leaving gradients on the generator.
        self.optimise(loss_e, self.optimizers["encoder"],
                      inputs=list(self.encoder.parameters()), retain_graph=True)

        with self.autocast():
            kl_fakes_g = [kl_to_standard_normal(*self.encoder(x)) for x in fakes]
        loss_g = generator_loss(kl_fakes_g, recon, h.alpha, h.beta)
        self.optimise(loss_g, self.optimizers["generator"], inputs=list(self.decoder.parameters()))
        names = ["kl_rec", "kl_fake"] if len(fakes) == 2 else ["kl_fake"]
        return self.loss_values({"encoder": loss_e, "generator": loss_g, "reconstruction": recon,
                                 "kl_real": kl_real, **dict(zip(names, kl_fakes))})

    @torch.no_grad()
    def validation_losses(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        """The autoencoding terms (L_AE and the real images' KL): the adversarial terms measure the
        encoder against the generator and have no held-out meaning."""
        self.eval()
        with self.autocast():
            mu, logvar = self.encoder(images)
            x_rec = self.decoder(reparameterise(mu, logvar))
        return {"reconstruction": self.reconstruction_loss(images, x_rec).item(),
                "kl_real": kl_to_standard_normal(mu, logvar).item()}



def encoder_loss(kl_real: torch.Tensor, kl_fakes: list[torch.Tensor], recon: torch.Tensor,
                 m: float, alpha: float, beta: float, real_kl_weight: float = 1.0) -> torch.Tensor:
    """L_E = real_kl_weight * L_REG(E(x)) + alpha * sum over fakes of [m - L_REG(E(fake))]^+ + beta * L_AE.

    With the one fake x' = G(z) this is Ungría Hirte et al.'s eq. (8); with the reconstruction
    and the prior sample, Huang et al.'s encoder loss."""
    hinge = F.relu(m - kl_fakes[0])
    for kl in kl_fakes[1:]:
        hinge = hinge + F.relu(m - kl)
    return real_kl_weight * kl_real + alpha * hinge + beta * recon


def generator_loss(kl_fakes: list[torch.Tensor], recon: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """L_G = alpha * sum over fakes of L_REG(E(fake)) + beta * L_AE (eq. (9) with the one fake G(z))."""
    return alpha * sum(kl_fakes[1:], kl_fakes[0]) + beta * recon


MODEL = IntroVAE
