"""Denoising diffusion probabilistic model (Ho et al. 2020) on MONAI's 2-D ``DiffusionModelUNet``.

Training is DDPM's: a slice x0 in [-1, 1], a timestep t ~ U{0, ..., T-1} and noise
eps ~ N(0, I) give x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (MONAI's
``DDPMScheduler.add_noise``), and the UNet is trained to predict eps with a mean
squared error (Ho et al.'s L_simple). Sampling is DDIM (Song et al. 2021, MONAI's
``DDIMScheduler``) with eta = 0, so a seed gives the same images, in
``ddim_steps`` steps instead of T.

Defaults and where they come from:
- UNet: MONAI's 2-D DDPM tutorial (Project-MONAI/tutorials,
  generation/2d_ddpm/2d_ddpm_tutorial.ipynb, MedNIST at 64 px): channels
  (128, 256, 256), attention at the 2nd and 3rd levels, one residual block
  per level, 256 channels per attention head; 32 normalisation groups (MONAI's
  default). The same group's brain-MRI work (Pinaya et al. 2022, "Brain imaging
  generation with latent diffusion models") runs this UNet in an autoencoder's
  latent space: that is the ``ldm`` family.
- Noise schedule: T = 1000 steps, betas linear from 1e-4 to 0.02, epsilon
  prediction (Ho et al. 2020, section 4; MONAI's ``DDPMScheduler`` defaults,
  which the tutorial uses).
- Optimiser: Adam, learning rate 2.5e-5, batch 64 (the tutorial).
- Class conditioning (``condition_on``): the UNet's class embedding with one
  extra "no class" entry; during training a label is replaced by it with
  probability ``class_dropout`` = 0.15, and samples use classifier-free guidance
  eps = eps_none + ``guidance_scale`` (eps_class - eps_none) with scale 4.0
  (Ho and Salimans 2022; 0.15 and 4.0 are the values of MONAI's 2-D
  classifier-free guidance tutorial, generation/classifier_free_guidance/).

Deviations, and why:
- Intensities are mapped to [-1, 1] (Ho et al.), the range that DDPM's
  ``clip_sample`` assumes; the MONAI tutorial feeds [0, 1]. Samples are mapped
  back to [0, 1] and clamped.
- The tutorial samples with all 1000 DDPM steps; DDIM with ``ddim_steps`` = 50
  is our default (Song et al. show 50 DDIM steps close to the full chain), and
  the step count is a hyperparameter (bench/diffusion.py times it).
- The CFG tutorial conditions through cross-attention on a scalar class value;
  the class embedding the UNet provides for discrete labels is used instead.
- Ho et al. sample from an exponential moving average of the weights (decay
  0.9999); here that is the trainer's ``ema_decay`` (off unless configured, as
  in the tutorial).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from pipeline_lib.core.errors import InputError
from pipeline_lib.models.base import GenerativeModel
from pipeline_lib.models.families.hparams.ddpm import DDPMHyperparameters
from pipeline_lib.models.layers import to_signed, to_unit

BETA_SCHEDULES = ("linear_beta", "scaled_linear_beta")


def build_unet(in_channels: int, h: DDPMHyperparameters | Any, n_classes: int, where: str,
               spatial_dims: int = 2, n_covariates: int = 0) -> nn.Module:
    """MONAI's DiffusionModelUNet (2-D for images, 3-D for volumes) from the hyperparameters
    ``unet_channels``, ``attention_levels``, ``num_res_blocks``, ``num_head_channels`` and
    ``norm_num_groups`` (checked here, so a bad value is an InputError naming the key rather than an
    error deep inside MONAI). With ``n_covariates`` K the UNet takes them as Pinaya et al. (2022) do:
    K constant channels beside the input and a (1, K) cross-attention context at every attention
    block (its middle block always has one)."""
    from monai.networks.nets import DiffusionModelUNet

    channels = [int(c) for c in h.unet_channels]
    attention = [bool(a) for a in h.attention_levels]
    groups = int(h.norm_num_groups)
    if not channels or len(attention) != len(channels):
        raise InputError(f"{where}: attention_levels needs one entry per entry of unet_channels, "
                         f"got {len(attention)} for {len(channels)}")
    if any(c % groups for c in channels):
        raise InputError(f"{where}: every entry of unet_channels must be a multiple of norm_num_groups ({groups}), "
                         f"got {channels}")
    heads = h.num_head_channels
    heads = [int(v) for v in heads] if isinstance(heads, (list, tuple)) else int(heads)
    conditioning = {"with_conditioning": True, "cross_attention_dim": n_covariates} if n_covariates else {}
    return DiffusionModelUNet(
        spatial_dims=spatial_dims, in_channels=in_channels + n_covariates, out_channels=in_channels,
        channels=channels, attention_levels=attention, num_res_blocks=int(h.num_res_blocks),
        num_head_channels=heads, norm_num_groups=groups, num_class_embeds=n_classes + 1 if n_classes else None,
        **conditioning)


def build_schedulers(h: DDPMHyperparameters | Any, clip_sample: bool, where: str):
    """(DDPM scheduler for training, DDIM scheduler for sampling) on the same noise schedule."""
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

    if h.beta_schedule not in BETA_SCHEDULES:
        raise InputError(f"{where}: beta_schedule must be one of {BETA_SCHEDULES}, got {h.beta_schedule!r}")
    steps, ddim = int(h.num_train_timesteps), int(h.ddim_steps)
    if not 1 <= ddim <= steps:
        raise InputError(f"{where}: ddim_steps must lie in 1..num_train_timesteps ({steps}), got {ddim}")
    args = {"num_train_timesteps": steps, "schedule": h.beta_schedule,
            "beta_start": float(h.beta_start), "beta_end": float(h.beta_end)}
    return DDPMScheduler(clip_sample=clip_sample, **args), DDIMScheduler(clip_sample=clip_sample, **args)


class Denoiser(nn.Module):
    """The diffusion process around one UNet: DDPM training loss, DDIM sampling, guidance.

    Shared by ``ddpm`` (on images), ``ddpm3d`` (on volumes: ``spatial_dims`` = 3) and ``ldm`` (on an
    autoencoder's latents). ``n_classes`` > 0 makes it class-conditional, with label ``n_classes`` as
    "no class". ``n_covariates`` K > 0 makes it conditional on K continuous values per image, scaled
    to [0, 1] (the ``labels`` are then float, (B, K)): always given, so no guidance (Pinaya et al.
    sample their UK Biobank model with the covariates, without classifier-free guidance).
    """

    def __init__(self, in_channels: int, h: DDPMHyperparameters | Any, n_classes: int, clip_sample: bool, where: str,
                 spatial_dims: int = 2, n_covariates: int = 0):
        super().__init__()
        if n_classes and n_covariates:
            raise InputError(f"{where}: condition on class labels or on covariates, not both")
        self.unet = build_unet(in_channels, h, n_classes, where, spatial_dims, n_covariates)
        self.n_classes, self.n_covariates = n_classes, n_covariates
        self.class_dropout, self.guidance_scale = float(h.class_dropout), float(h.guidance_scale)
        self.ddim_steps = int(h.ddim_steps)
        # Schedulers hold no learnt state (plain tensors, not buffers): kept out of the module tree.
        object.__setattr__(self, "schedulers", build_schedulers(h, clip_sample, where))

    def training_labels(self, labels: torch.Tensor | None, n: int, device) -> torch.Tensor | None:
        """Labels with a share ``class_dropout`` replaced by "no class" (classifier-free guidance);
        covariates unchanged."""
        if self.n_covariates:
            return labels
        if not self.n_classes:
            return None
        dropped = torch.rand(n, device=device) < self.class_dropout
        return torch.where(dropped, torch.full_like(labels, self.n_classes), labels)

    def loss(self, x0: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """L_simple: MSE between drawn noise and the UNet's prediction of it from x_t."""
        ddpm, _ = self.schedulers
        noise = torch.randn_like(x0)
        t = torch.randint(0, ddpm.num_train_timesteps, (x0.shape[0],), device=x0.device).long()
        prediction = self.predict(ddpm.add_noise(x0, noise, t), t, labels)
        return F.mse_loss(prediction.float(), noise.float())

    def predict(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The UNet's noise prediction for x_t at levels ``t``: class labels through its class
        embedding, covariates (B, K) as K constant input channels and a cross-attention context."""
        if not self.n_covariates:
            return self.unet(x=x, timesteps=t, class_labels=labels)
        values = labels.to(x.dtype)
        channels = values.view(*values.shape, *[1] * (x.ndim - 2)).expand(-1, -1, *x.shape[2:])
        return self.unet(x=torch.cat([x, channels], dim=1), timesteps=t, context=values[:, None, :])

    def predict_noise(self, x: torch.Tensor, t: int, labels: torch.Tensor | None) -> torch.Tensor:
        steps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        if self.n_covariates:
            return self.predict(x, steps, labels)
        if labels is None or self.guidance_scale == 1.0:
            return self.unet(x=x, timesteps=steps, class_labels=labels)
        none = torch.full_like(labels, self.n_classes)
        both = self.unet(x=torch.cat([x, x]), timesteps=torch.cat([steps, steps]),
                         class_labels=torch.cat([none, labels]))
        eps_none, eps_class = both.chunk(2)
        return eps_none + self.guidance_scale * (eps_class - eps_none)

    @torch.no_grad()
    def sample(self, shape: tuple[int, ...], labels: torch.Tensor | None, generator: torch.Generator | None,
               device: torch.device, steps: int | None = None) -> torch.Tensor:
        """DDIM (eta = 0) from noise drawn on the CPU, so a seed gives the same result on any device."""
        _, ddim = self.schedulers
        ddim.set_timesteps(steps or self.ddim_steps)
        x = torch.randn(shape, generator=generator, device="cpu").to(device)
        timesteps = [int(t) for t in ddim.timesteps]
        for t, t_prev in zip(timesteps, timesteps[1:] + [-1]):
            x = ddim_step(ddim, self.predict_noise(x, t, labels).float(), t, t_prev, x)
        return x


def ddim_step(ddim, noise: torch.Tensor, t: int, t_prev: int, x: torch.Tensor) -> torch.Tensor:
    """x at noise level ``t_prev`` from x at level ``t`` and the predicted noise (DDIM, eta = 0; Song
    et al. 2021, eq. 12), with ``t_prev`` = -1 for the clean image.

    MONAI's ``DDIMScheduler.step`` takes the previous level as t - T // N, while its
    ``set_timesteps`` spaces the N levels by linspace(T - 1, 0, N): the two drift apart (when the
    last call tells the UNet t = 0, the chain is at level 50 for N = 5 and at level 102 for
    N = 300). Taking ``t_prev`` from the next entry of ``timesteps`` keeps every call's t equal to
    the sample's noise level.
    """
    from monai.networks.schedulers.ddim import DDIMPredictionType

    if ddim.prediction_type != DDIMPredictionType.EPSILON:
        raise ValueError(f"ddim_step needs a noise-predicting scheduler, got {ddim.prediction_type!r}")
    alpha_t = ddim.alphas_cumprod[t]
    alpha_prev = ddim.alphas_cumprod[t_prev] if t_prev >= 0 else ddim.final_alpha_cumprod
    clean = (x - (1 - alpha_t) ** 0.5 * noise) / alpha_t ** 0.5
    if ddim.clip_sample:
        clean = clean.clamp(*ddim.clip_sample_values)
    return alpha_prev ** 0.5 * clean + (1 - alpha_prev) ** 0.5 * noise


def check_labels(model: GenerativeModel, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """Class indices for a conditional model (default: 0, 1, ... in turn), covariates (n, K) scaled to
    [0, 1] for a covariate-conditional one (default: every value 0.5, the middle of the training
    range); None for an unconditional one."""
    if model.n_covariates:
        return check_covariates(model, labels, n)
    if not model.conditional:
        if labels is not None:
            raise InputError(f"model family '{model.family}' was trained without condition_on: it takes no labels")
        return None
    if labels is None:
        return (torch.arange(n) % model.n_classes).to(model.device)
    labels = torch.as_tensor(labels, device=model.device).long().view(-1)
    if labels.numel() != n or (n and (int(labels.min()) < 0 or int(labels.max()) >= model.n_classes)):
        raise InputError(f"model family '{model.family}': need {n} class indices in [0, {model.n_classes}), "
                         f"got {labels.tolist()[:10]}")
    return labels


def check_covariates(model: GenerativeModel, values: torch.Tensor | None, n: int) -> torch.Tensor:
    k = model.n_covariates
    if values is None:
        return torch.full((n, k), 0.5, device=model.device)
    values = torch.as_tensor(values, device=model.device, dtype=torch.float32)
    if values.shape != (n, k) or not bool(torch.isfinite(values).all()):
        raise InputError(f"model family '{model.family}' conditions on {k} covariate(s): need {n} x {k} finite "
                         f"values, got shape {tuple(values.shape)}")
    return values


class DDPM(GenerativeModel):
    family = "ddpm"
    HYPERPARAMETERS = DDPMHyperparameters
    EMA_MODULES: ClassVar[tuple[str, ...]] = ("denoiser",)

    def __init__(self, image_size: int, channels: int = 1, n_classes: int = 0, **hparams: Any):
        super().__init__(image_size, channels, n_classes, **hparams)
        self.conditional = n_classes > 0  # optional conditioning: decided by condition_on, per model
        levels = len(self.hp.unet_channels)
        if image_size % 2 ** (levels - 1):
            raise InputError(f"{self.family}: image_size {image_size} is not divisible by 2^{levels - 1} "
                             f"(one halving per level after the first of unet_channels)")
        self.denoiser = Denoiser(channels, self.hp, n_classes, clip_sample=True,
                                 where=f"models.<{self.family} model>", spatial_dims=self.spatial_dims,
                                 n_covariates=self.n_covariates)

    def configure_optimizers(self) -> None:
        self.optimizers = {"unet": self.adam(self.denoiser.parameters(), lr=self.hp.lr)}

    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        self.train()
        labels = self.denoiser.training_labels(check_labels(self, labels, len(images)), len(images), images.device)
        with self.autocast():
            loss = self.denoiser.loss(to_signed(images), labels)
        self.optimise(loss, self.optimizers["unet"])
        return self.loss_values({"loss": loss})

    @torch.no_grad()
    def validation_losses(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        """L_simple on held-out slices with their labels (no dropout to "no class")."""
        self.eval()
        with self.autocast():
            return {"loss": self.denoiser.loss(to_signed(images), check_labels(self, labels, len(images))).item()}

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        self.eval()
        labels = check_labels(self, labels, n)
        with self.autocast():
            x = self.denoiser.sample((n, self.channels, *[self.image_size] * self.spatial_dims), labels, generator,
                                     self.device)
        return to_unit(x)


MODEL = DDPM
