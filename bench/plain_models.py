"""Plain, standalone PyTorch versions of the pipeline's model families, for benchmarking only.

Each class re-implements one family's published architecture (same layers,
channel widths, optimiser and loss as ``pipeline_lib.models.families.<family>``) the way
a straightforward training script would: networks as ``nn.Sequential`` /
small modules, optimisers created up front, and one ``step(x, y)`` method
holding the body of a plain training loop. Nothing here imports
``pipeline_lib``, so it is an independent reference; ``train_throughput.py``
checks that parameter counts and shapes agree with ours.

Where the canonical reference code of an algorithm does something the
pipeline avoids, the plain version keeps the canonical habit (noted per
class): the PyTorch DCGAN example computes discriminator gradients during the
generator update, for instance. The mathematics of every update is the same.

Images come in as (N, C, S, S) in [0, 1]; ``step`` returns a dict of floats
(``loss.item()``), as a loop that logs its losses would.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


# --------------------------------------------------------------------------- VAE / DFC-VAE
class PlainVAE(nn.Module):
    """Seed 001's vanilla VAE: 4 x (conv 4x4 s2, BN, LReLU) encoder; (upsample, conv 3x3, BN, LReLU) decoder."""

    def __init__(self, size: int, latent_dim: int = 200, width: int = 32, lr: float = 1e-4,
                 recon_weight: float = 0.025, channels: int = 1, **_):
        super().__init__()
        self.size, self.recon_weight = size, recon_weight
        s0, c_top = size // 16, width * 8
        self.enc = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width * 2, 4, 2, 1), nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2),
            nn.Conv2d(width * 2, width * 4, 4, 2, 1), nn.BatchNorm2d(width * 4), nn.LeakyReLU(0.2),
            nn.Conv2d(width * 4, c_top, 4, 2, 1), nn.BatchNorm2d(c_top), nn.LeakyReLU(0.2),
            nn.Flatten())
        self.fc_mu = nn.Linear(c_top * s0 * s0, latent_dim)
        self.fc_logvar = nn.Linear(c_top * s0 * s0, latent_dim)
        self.fc_dec = nn.Linear(latent_dim, c_top * s0 * s0)
        self.dec = nn.Sequential(
            nn.Unflatten(1, (c_top, s0, s0)),
            nn.Upsample(scale_factor=2), nn.Conv2d(c_top, c_top // 2, 3, 1, 1, padding_mode="replicate"),
            nn.BatchNorm2d(c_top // 2), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(c_top // 2, c_top // 4, 3, 1, 1, padding_mode="replicate"),
            nn.BatchNorm2d(c_top // 4), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(c_top // 4, c_top // 8, 3, 1, 1, padding_mode="replicate"),
            nn.BatchNorm2d(c_top // 8), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(c_top // 8, channels, 3, 1, 1, padding_mode="replicate"),
            nn.Sigmoid())
        self.lr = lr

    def make_optimizer(self) -> None:
        self.opt = torch.optim.Adam(self.parameters(), lr=self.lr)

    def recon_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        return self.recon_weight * self.size**2 * F.mse_loss(x_hat, x)

    def step(self, x: torch.Tensor, y=None) -> dict[str, float]:
        h = self.enc(x)
        mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        x_hat = self.dec(self.fc_dec(z))
        recon = self.recon_loss(x, x_hat)
        kl = kl_standard_normal(mu, logvar)
        loss = recon + kl
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}


def vgg16_to_relu3_1() -> nn.Sequential:
    """VGG16 (configuration D) features up to relu3_1, as torchvision lays them out (indices 0-11)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
        nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(inplace=True))


class PlainDFCVAE(PlainVAE):
    """The VAE with Hou et al.'s VGG16 relu1_1/relu2_1/relu3_1 perceptual loss (frozen, random weights here)."""

    TAPS = (1, 6, 11)

    def __init__(self, size: int, perceptual_weight: float = 2e-9, feature_scale: float = 255.0, **kw):
        super().__init__(size, **kw)
        self.vgg = vgg16_to_relu3_1().eval()
        for p in self.vgg.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.scale = perceptual_weight * feature_scale**2

    def make_optimizer(self) -> None:
        params = [p for p in self.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(params, lr=self.lr)

    def train(self, mode: bool = True):
        super().train(mode)
        if hasattr(self, "vgg"):
            self.vgg.eval()
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x.repeat(1, 3, 1, 1) - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.vgg):
            h = layer(h)
            if i in self.TAPS:
                out.append(h)
        return out

    def recon_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.features(x)
        pred = self.features(x_hat)
        total = sum(((p - t) ** 2).sum() for p, t in zip(pred, target))
        return self.scale * total / x.shape[0]


# --------------------------------------------------------------------------- IntroVAE
class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.proj = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.bn1(self.conv1(x)), 0.2)
        h = self.bn2(self.conv2(h))
        return F.leaky_relu(h + (x if self.proj is None else self.proj(x)), 0.2)


class PlainIntroVAE(nn.Module):
    """Huang et al.'s IntroVAE with the PGGAN-style residual encoder/generator (Ungría Hirte et al.'s settings).

    Same update order as Huang et al.'s algorithm 1: encoder step, then the
    generator step with the updated encoder. Plain habit kept: the encoder
    loss's backward also fills (unused) generator gradients.
    """

    def __init__(self, size: int, latent_dim: int = 256, m: float = 110.0, alpha: float = 0.25,
                 beta: float = 0.5, recon_reference_size: int = 128, lr: float = 2e-4, width: int = 64,
                 max_width: int = 512, channels: int = 1, **_):
        super().__init__()
        n = int(math.log2(size // 4))
        w = [min(width * 2**i, max_width) for i in range(n)]
        enc = [nn.Conv2d(channels, w[0], 5, 1, 2, bias=False), nn.BatchNorm2d(w[0]), nn.LeakyReLU(0.2),
               nn.AvgPool2d(2)]
        for a, b in zip(w[:-1], w[1:]):
            enc += [ResBlock(a, b), nn.AvgPool2d(2)]
        enc += [ResBlock(w[-1], w[-1]), nn.Flatten(), nn.Linear(w[-1] * 16, 2 * latent_dim)]
        self.encoder = nn.Sequential(*enc)
        dec = [nn.Linear(latent_dim, w[-1] * 16), nn.LeakyReLU(0.2), nn.Unflatten(1, (w[-1], 4, 4)),
               ResBlock(w[-1], w[-1])]
        for a, b in zip(w[::-1][:-1], w[::-1][1:]):
            dec += [nn.Upsample(scale_factor=2), ResBlock(a, b)]
        dec += [nn.Upsample(scale_factor=2), ResBlock(w[0], w[0]), nn.Conv2d(w[0], channels, 5, 1, 2),
                nn.Sigmoid()]
        self.decoder = nn.Sequential(*dec)
        self.latent_dim, self.m, self.alpha, self.beta = latent_dim, m, alpha, beta
        self.recon_scale = recon_reference_size**2
        self.lr = lr

    def make_optimizer(self) -> None:
        self.opt_e = torch.optim.Adam(self.encoder.parameters(), lr=self.lr)
        self.opt_g = torch.optim.Adam(self.decoder.parameters(), lr=self.lr)

    def kl(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return kl_standard_normal(mu, logvar), mu, logvar

    def step(self, x: torch.Tensor, y=None) -> dict[str, float]:
        kl_real, mu, logvar = self.kl(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        x_rec = self.decoder(z)
        x_fake = self.decoder(torch.randn(x.shape[0], self.latent_dim, device=x.device))
        kl_rec = self.kl(x_rec.detach())[0]
        kl_fake = self.kl(x_fake.detach())[0]
        recon = self.recon_scale * F.mse_loss(x_rec, x)
        loss_e = kl_real + self.alpha * (F.relu(self.m - kl_rec) + F.relu(self.m - kl_fake)) + self.beta * recon
        self.opt_e.zero_grad()
        loss_e.backward(retain_graph=True)
        self.opt_e.step()

        loss_g = self.alpha * (self.kl(x_rec)[0] + self.kl(x_fake)[0]) + self.beta * recon
        self.opt_g.zero_grad()
        # The encoder's weights changed in place above, so the generator's backward must stop at its own weights.
        loss_g.backward(inputs=list(self.decoder.parameters()))
        self.opt_g.step()
        return {"encoder": loss_e.item(), "generator": loss_g.item(), "recon": recon.item()}


# --------------------------------------------------------------------------- StyleGAN
def style_width(res: int, width: int) -> int:
    return max(1, width * 32 // max(res, 32))


class AdaINLayer(nn.Module):
    def __init__(self, c: int, w_dim: int):
        super().__init__()
        self.noise_strength = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.affine = nn.Linear(w_dim, 2 * c)

    def forward(self, x, w, noise):
        x = F.leaky_relu(x + self.noise_strength * noise + self.bias, 0.2)
        ys, yb = self.affine(w)[:, :, None, None].chunk(2, dim=1)
        return (1 + ys) * F.instance_norm(x) + yb


class PlainStyleGAN(nn.Module):
    """Seed 001's StyleGAN variant: 2-layer mapping, constant input, AdaIN + noise, PGGAN critic, WGAN-GP + drift.

    Plain habit kept: the generator's backward also computes (unused) critic gradients.
    """

    def __init__(self, size: int, latent_dim: int = 512, mapping_dim: int = 512, mapping_layers: int = 2,
                 width: int = 512, lr: float = 1e-4, beta1: float = 0.0, beta2: float = 0.99,
                 gradient_penalty: float = 10.0, drift: float = 0.001, channels: int = 1, **_):
        super().__init__()
        mapping = []
        for i in range(mapping_layers):
            mapping += [nn.Linear(latent_dim if i == 0 else mapping_dim, mapping_dim), nn.LeakyReLU(0.2)]
        self.mapping = nn.Sequential(*mapping)
        self.res = [2**k for k in range(2, int(math.log2(size)) + 1)]
        ws = [style_width(r, width) for r in self.res]
        self.const = nn.Parameter(torch.ones(1, ws[0], 4, 4))
        # Block 0 starts from the constant: no upsampling and no first convolution.
        self.up_convs = nn.ModuleList(nn.Conv2d(ws[i - 1], ws[i], 3, 1, 1, bias=False) for i in range(1, len(ws)))
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 3, 1, 1, bias=False) for c in ws)
        self.styles = nn.ModuleList(AdaINLayer(c, mapping_dim) for c in ws for _ in range(2))
        self.to_rgb = nn.Conv2d(ws[-1], channels, 1)
        c = style_width(size, width)
        critic = [nn.Conv2d(channels, c, 1), nn.LeakyReLU(0.2)]
        for r in self.res[::-1][:-1]:
            c2 = style_width(r // 2, width)
            critic += [nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(c, c2, 3, 1, 1),
                       nn.LeakyReLU(0.2), nn.AvgPool2d(2)]
            c = c2
        self.critic_body = nn.Sequential(*critic)
        self.critic_head = nn.Sequential(nn.Conv2d(c + 1, c, 3, 1, 1), nn.LeakyReLU(0.2), nn.Flatten(),
                                         nn.Linear(c * 16, c), nn.LeakyReLU(0.2), nn.Linear(c, 1))
        for mod in self.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
        for s in self.styles:
            nn.init.zeros_(s.affine.bias)
        self.latent_dim, self.gp, self.drift = latent_dim, gradient_penalty, drift
        self.lr, self.betas = lr, (beta1, beta2)

    def g_parameters(self):
        return [*self.mapping.parameters(), self.const, *self.up_convs.parameters(), *self.convs.parameters(),
                *self.styles.parameters(), *self.to_rgb.parameters()]

    def d_parameters(self):
        return [*self.critic_body.parameters(), *self.critic_head.parameters()]

    def make_optimizer(self) -> None:
        self.opt_g = torch.optim.Adam(self.g_parameters(), lr=self.lr, betas=self.betas)
        self.opt_d = torch.optim.Adam(self.d_parameters(), lr=self.lr, betas=self.betas)

    def generate(self, n: int, device) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, device=device)
        w = self.mapping(z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8))
        x = self.const.expand(n, -1, -1, -1)
        for i, r in enumerate(self.res):
            if i > 0:
                x = self.up_convs[i - 1](F.interpolate(x, scale_factor=2, mode="nearest"))
            x = self.styles[2 * i](x, w, torch.randn(n, 1, r, r, device=device))
            x = self.styles[2 * i + 1](self.convs[i](x), w, torch.randn(n, 1, r, r, device=device))
        return torch.sigmoid(self.to_rgb(x))

    def critic(self, x: torch.Tensor) -> torch.Tensor:
        h = self.critic_body(2 * x - 1)
        std = (h.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        h = torch.cat([h, std.expand(h.shape[0], 1, h.shape[2], h.shape[3])], dim=1)
        return self.critic_head(h).squeeze(1)

    def step(self, x: torch.Tensor, y=None) -> dict[str, float]:
        n = x.shape[0]
        with torch.no_grad():
            fake = self.generate(n, x.device)
        d_real, d_fake = self.critic(x), self.critic(fake)
        wdist = d_real.mean() - d_fake.mean()
        eps = torch.rand(n, 1, 1, 1, device=x.device)
        mixed = (eps * x + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.critic(mixed).sum(), mixed, create_graph=True)
        penalty = (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
        d_loss = -wdist + self.drift * d_real.pow(2).mean() + self.gp * penalty
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()

        g_loss = -self.critic(self.generate(n, x.device)).mean()
        self.opt_g.zero_grad()
        g_loss.backward()
        self.opt_g.step()
        return {"critic": d_loss.item(), "generator": g_loss.item(), "penalty": penalty.item()}


# --------------------------------------------------------------------------- DCGAN family
def same_padding(k: int) -> tuple[int, int]:
    return (k - 1) // 2, k % 2


def dcgan_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def dcgan_generator(size: int, latent: int, width: int, k: int, tanh: bool, channels: int,
                    cond: int = 0) -> nn.Sequential:
    """FC projection to 4x4, BN + ReLU, fractionally strided convs halving the width, (tanh) output."""
    stages = int(math.log2(size // 4))
    c = width * 2 ** (stages - 1)
    p, op = same_padding(k)
    layers = [nn.Linear(latent + cond, c * 16, bias=False), nn.Unflatten(1, (c, 4, 4)),
              nn.BatchNorm2d(c), nn.ReLU()]
    for _ in range(stages - 1):
        layers += [nn.ConvTranspose2d(c, c // 2, k, 2, p, op, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU()]
        c //= 2
    layers.append(nn.ConvTranspose2d(c, channels, k, 2, p, op))
    if tanh:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def dcgan_discriminator(size: int, width: int, k: int, act: str, norm: str, norm_first: bool,
                        channels: int) -> nn.Sequential:
    """Strided convs doubling the width (norm + activation), then a linear score."""
    stages = int(math.log2(size // 4))
    layers: list[nn.Module] = []
    c_in = channels
    for s in range(stages):
        c = width * 2**s
        use_norm = norm != "none" and (s > 0 or norm_first)
        layers.append(nn.Conv2d(c_in, c, k, 2, (k - 1) // 2, bias=not use_norm))
        if use_norm:
            layers.append(nn.BatchNorm2d(c) if norm == "batch" else nn.GroupNorm(1, c))
        layers.append(nn.LeakyReLU(0.2) if act == "leaky_relu" else nn.ELU())
        c_in = c
    layers += [nn.Flatten(), nn.Linear(c_in * 16, 1), nn.Flatten(0)]
    return nn.Sequential(*layers)


DCGAN_PRESETS = {
    "kazuhiro": dict(kernel_size=5, tanh=True, act="leaky_relu", norm_first=True),
    "han": dict(kernel_size=4, tanh=False, act="elu", norm_first=False),
}


class PlainDCGAN(nn.Module):
    """Radford et al.'s DCGAN (Kazuhiro or Han preset), trained like the PyTorch DCGAN example.

    Plain habit kept (as in that example): the generator's backward also
    computes the discriminator's gradients, which the next discriminator step zeroes.
    """

    def __init__(self, size: int, preset: str = "kazuhiro", latent_dim: int = 100, width: int = 32,
                 kernel_size: int | None = None, lr: float = 2e-4, beta1: float = 0.5, beta2: float = 0.999,
                 channels: int = 1, n_classes: int = 0, **_):
        super().__init__()
        p = DCGAN_PRESETS[preset]
        k = kernel_size or p["kernel_size"]
        self.n_classes, self.size = n_classes, size
        cond_channels = 1 if n_classes else 0
        self.G = dcgan_generator(size, latent_dim, width, k, p["tanh"], channels, cond=n_classes)
        self.D = dcgan_discriminator(size, width, k, p["act"], "batch", p["norm_first"], channels + cond_channels)
        self.apply(dcgan_init)
        if n_classes:
            self.label_maps = nn.Embedding(n_classes, size * size)  # N(0, 1), as in the conditional model
        self.latent_dim, self.lr, self.betas = latent_dim, lr, (beta1, beta2)

    def make_optimizer(self) -> None:
        self.opt_d = torch.optim.Adam([*self.D.parameters(), *self.label_params()], lr=self.lr, betas=self.betas)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=self.lr, betas=self.betas)

    def label_params(self):
        return list(self.label_maps.parameters()) if self.n_classes else []

    def g(self, z, y):
        if self.n_classes:
            z = torch.cat([z, F.one_hot(y, self.n_classes).float()], dim=1)
        return self.G(z)

    def d(self, x, y):
        if self.n_classes:
            x = torch.cat([x, self.label_maps(y).view(-1, 1, self.size, self.size)], dim=1)
        return self.D(x)

    def step(self, x: torch.Tensor, y=None) -> dict[str, float]:
        real = x * 2 - 1
        z = torch.rand(x.shape[0], self.latent_dim, device=x.device) * 2 - 1
        fake = self.g(z, y)
        self.opt_d.zero_grad()
        out_real = self.d(real, y)
        out_fake = self.d(fake.detach(), y)
        d_loss = (F.binary_cross_entropy_with_logits(out_real, torch.ones_like(out_real))
                  + F.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake)))
        d_loss.backward()
        self.opt_d.step()

        self.opt_g.zero_grad()
        out = self.d(fake, y)
        g_loss = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        g_loss.backward()
        self.opt_g.step()
        return {"d": d_loss.item(), "g": g_loss.item(), "d_real": torch.sigmoid(out_real).mean().item(),
                "d_fake": torch.sigmoid(out_fake).mean().item()}


class PlainWGAN(nn.Module):
    """Arjovsky et al.'s WGAN on Han's DCGAN networks; one step = one critic iteration.

    As in Algorithm 1 (and its reference code): RMSprop, clipping after every
    critic update, a generator update after every ``n_critic`` critic
    iterations with the critic frozen; each critic iteration gets a fresh batch.
    """

    def __init__(self, size: int, latent_dim: int = 100, width: int = 32, lr: float = 5e-5,
                 n_critic: int = 5, clip_value: float = 0.01, channels: int = 1, **_):
        super().__init__()
        self.G = dcgan_generator(size, latent_dim, width, 4, False, channels)
        self.D = dcgan_discriminator(size, width, 4, "elu", "batch", False, channels)
        self.apply(dcgan_init)
        self.latent_dim, self.lr, self.n_critic, self.clip = latent_dim, lr, n_critic, clip_value
        self.iteration = 0
        self.clip_critic()

    def make_optimizer(self) -> None:
        self.opt_d = torch.optim.RMSprop(self.D.parameters(), lr=self.lr)
        self.opt_g = torch.optim.RMSprop(self.G.parameters(), lr=self.lr)

    def noise(self, n: int, device) -> torch.Tensor:
        return torch.rand(n, self.latent_dim, device=device) * 2 - 1

    @torch.no_grad()
    def clip_critic(self) -> None:
        for p in self.D.parameters():
            p.clamp_(-self.clip, self.clip)

    def critic_loss(self, real, fake):
        return -(self.D(real).mean() - self.D(fake).mean())

    def step(self, x: torch.Tensor, y=None) -> dict[str, float]:
        real = x * 2 - 1
        with torch.no_grad():
            fake = self.G(self.noise(x.shape[0], x.device))
        d_loss = self.critic_loss(real, fake)
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()
        self.clip_critic()
        self.iteration += 1
        out = {"critic": d_loss.item()}
        if self.iteration % self.n_critic == 0:
            for p in self.D.parameters():
                p.requires_grad_(False)
            g_loss = -self.D(self.G(self.noise(x.shape[0], x.device))).mean()
            self.opt_g.zero_grad()
            g_loss.backward()
            self.opt_g.step()
            for p in self.D.parameters():
                p.requires_grad_(True)
            out["generator"] = g_loss.item()
        return out


class PlainWGANGP(PlainWGAN):
    """Gulrajani et al.'s WGAN-GP with their DCGAN baseline networks (layer-normalised critic), Adam(0, 0.9)."""

    def __init__(self, size: int, latent_dim: int = 128, width: int = 64, kernel_size: int = 5,
                 lr: float = 1e-4, beta1: float = 0.0, beta2: float = 0.9, n_critic: int = 5,
                 gp_weight: float = 10.0, critic_norm: str = "layer", channels: int = 1, **_):
        nn.Module.__init__(self)
        self.G = dcgan_generator(size, latent_dim, width, kernel_size, True, channels)
        self.D = dcgan_discriminator(size, width, kernel_size, "leaky_relu", critic_norm, False, channels)
        self.apply(dcgan_init)
        self.latent_dim, self.lr, self.n_critic, self.gp = latent_dim, lr, n_critic, gp_weight
        self.betas = (beta1, beta2)
        self.iteration = 0

    def make_optimizer(self) -> None:
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=self.lr, betas=self.betas)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=self.lr, betas=self.betas)

    def noise(self, n: int, device) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=device)

    def clip_critic(self) -> None:
        pass

    def critic_loss(self, real, fake):
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
        mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.D(mixed).sum(), mixed, create_graph=True)
        penalty = ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
        return super().critic_loss(real, fake) + self.gp * penalty


# --------------------------------------------------------------------------- cVAE
class PlainCVAE(nn.Module):
    """Seed 003's fully connected conditional VAE with the log-cosh reconstruction loss."""

    def __init__(self, size: int, n_classes: int, latent_dim: int = 256, hidden_sizes=(1024, 512),
                 lr: float = 3e-4, channels: int = 1, **_):
        super().__init__()
        n_pix = channels * size * size
        h1, h2 = hidden_sizes
        self.enc = nn.Sequential(nn.Linear(n_pix + n_classes, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU())
        self.fc_mu, self.fc_logvar = nn.Linear(h2, latent_dim), nn.Linear(h2, latent_dim)
        self.dec = nn.Sequential(nn.Linear(latent_dim + n_classes, h2), nn.ReLU(), nn.Linear(h2, h1), nn.ReLU(),
                                 nn.Linear(h1, n_pix), nn.Sigmoid())
        self.n_classes, self.lr = n_classes, lr

    def make_optimizer(self) -> None:
        self.opt = torch.optim.Adam(self.parameters(), lr=self.lr)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        c = F.one_hot(y, self.n_classes).float()
        h = self.enc(torch.cat([x.flatten(1), c], dim=1))
        mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        x_hat = self.dec(torch.cat([z, c], dim=1)).view_as(x)
        d = (x_hat - x).abs()
        recon = (d + F.softplus(-2 * d) - math.log(2.0)).flatten(1).sum(1).mean()  # log cosh, overflow-free
        kl = kl_standard_normal(mu, logvar)
        loss = recon + kl
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.item(), "recon": recon.item(), "kl": kl.item()}


# --------------------------------------------------------------------------- DDPM (MONAI tutorial)
class PlainDDPM(nn.Module):
    """The training loop of MONAI's 2-D DDPM tutorial (generation/2d_ddpm/2d_ddpm_tutorial.ipynb):
    a ``DiffusionModelUNet``, a ``DDPMScheduler`` and a ``DiffusionInferer``; per batch, random noise
    and timesteps, the inferer's noise prediction, an MSE loss, Adam (torch's default kernel, as in
    the tutorial). The tutorial feeds images in [0, 1]; the pipeline maps them to [-1, 1] first (one
    element-wise operation, kept out of this loop as the tutorial has none)."""

    def __init__(self, size: int, unet_channels=(128, 256, 256), attention_levels=(False, True, True),
                 num_res_blocks: int = 1, num_head_channels=256, norm_num_groups: int = 32,
                 num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 lr: float = 2.5e-5, channels: int = 1, **_):
        super().__init__()
        from monai.inferers import DiffusionInferer
        from monai.networks.nets import DiffusionModelUNet
        from monai.networks.schedulers import DDPMScheduler

        self.model = DiffusionModelUNet(spatial_dims=2, in_channels=channels, out_channels=channels,
                                        channels=tuple(unet_channels), attention_levels=tuple(attention_levels),
                                        num_res_blocks=num_res_blocks, num_head_channels=num_head_channels,
                                        norm_num_groups=norm_num_groups)
        self.scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_start=beta_start,
                                       beta_end=beta_end)
        self.inferer = DiffusionInferer(self.scheduler)
        self.lr = lr

    def make_optimizer(self) -> None:
        self.opt = torch.optim.Adam(params=self.model.parameters(), lr=self.lr)

    def step(self, x: torch.Tensor, y=None) -> dict[str, float]:
        self.opt.zero_grad(set_to_none=True)
        noise = torch.randn_like(x)
        timesteps = torch.randint(0, self.scheduler.num_train_timesteps, (x.shape[0],), device=x.device).long()
        noise_pred = self.inferer(inputs=x, diffusion_model=self.model, noise=noise, timesteps=timesteps)
        loss = F.mse_loss(noise_pred.float(), noise.float())
        loss.backward()
        self.opt.step()
        return {"loss": loss.item()}


#: family name -> plain class (cgan is the conditional DCGAN: PlainDCGAN with n_classes)
PLAIN = {
    "vae": PlainVAE, "dfc_vae": PlainDFCVAE, "intro_vae": PlainIntroVAE, "stylegan": PlainStyleGAN,
    "dcgan": PlainDCGAN, "cgan": PlainDCGAN, "wgan": PlainWGAN, "wgan_gp": PlainWGANGP, "cvae": PlainCVAE,
    "ddpm": PlainDDPM,
}


def build_plain(family: str, size: int, hparams: dict, n_classes: int = 0) -> nn.Module:
    """The plain model of ``family`` with the same hyperparameters as the pipeline's config block."""
    kw = {k: v for k, v in hparams.items() if k not in ("batch_size", "perceptual")}
    if family in ("cgan", "cvae"):
        kw["n_classes"] = n_classes
    return PLAIN[family](size, **kw)
