"""Latent diffusion model (Rombach et al. 2022) as Pinaya et al. 2022 apply it to brain MRI, on MONAI.

Two stages, one model, one checkpoint chain: the first ``autoencoder_steps``
trainer steps train MONAI's ``AutoencoderKL``; every later step trains a
``DiffusionModelUNet`` (the ``ddpm`` family's denoiser) on the frozen
autoencoder's latents. Counters of both stages' updates are buffers of the
model and every optimiser exists from the start, so a checkpoint taken in
either stage, or exactly at the boundary, resumes into the same run.

Stage 1 (autoencoder), per step, as in MONAI's 2-D LDM tutorial
(Project-MONAI/tutorials, generation/2d_ldm/2d_ldm_tutorial.ipynb):
L1 reconstruction + ``kl_weight`` x KL of the latent posterior (summed over the
latent, mean over the batch) + ``perceptual.weight`` x a perceptual distance
+ ``adversarial_weight`` x the least-squares adversarial loss of MONAI's
``PatchDiscriminator`` (from step ``adversarial_start`` on); the discriminator
is updated on the reconstructions and the real batch with the same weight.
Stage 2 (diffusion): the latent scale factor 1 / std(z) is computed once, on
the first stage-2 batch (Rombach et al., section 4.3.2 and appendix D.1; the
tutorial does it on one batch too), then the UNet is trained with the DDPM loss
on scaled latents z = scale x E(x) (a draw from the posterior, as the
tutorial's ``encode_stage_2_inputs``). The encoder is frozen then, so on the
CPU the posterior's moments of each image are kept once computed
(:data:`POSTERIOR_CACHE_MB`; a batch with a new image is encoded whole, as
without the cache, so the numbers do not depend on it); a fresh posterior
draw is taken every step as before. Samples: DDIM in latent space (``ddim_steps``), decoded.
``reconstruct`` decodes the posterior mean.

Defaults (2-D values from the tutorial, which Pinaya et al.'s group wrote
alongside their 3-D UK Biobank model): autoencoder channels (128, 128, 256),
3 latent channels, 2 residual blocks, no attention; Adam 1e-4 (autoencoder),
5e-4 (discriminator); KL weight 1e-6; perceptual weight 0.001; adversarial
weight 0.01 with a 3-layer, 64-channel patch discriminator; UNet channels
(128, 256, 512), attention at levels 2 and 3 (256 and 512 channels per head),
2 residual blocks, Adam 1e-4; T = 1000, linear betas 0.0015 to 0.0195; batch 64.
The tutorial trains the autoencoder 100 epochs of 125 batches (12,500 steps,
adversarial terms from epoch 12: step 1,375) and the UNet 200 epochs.
Class conditioning and guidance are the ``ddpm`` family's (class embedding,
dropout 0.15, guidance scale 4.0).

Deviations, and why:
- Perceptual network: the tutorial's LPIPS/AlexNet needs weights that cannot be
  downloaded here. ``perceptual.backbone: inception`` (default) uses the stem of
  the offline FID Inception (the layers the ``dfc_vae`` family taps) with
  LPIPS's distance without its learnt weights (features unit-normalised over
  channels, squared differences averaged over positions, summed over layers;
  Zhang et al. 2018's "baseline"); ``none`` drops the term. The model's
  summary records which one ran.
- Latents are not clipped to [-1, 1] while sampling (Rombach et al.; the
  tutorial's scheduler keeps DDPM's image-space clipping on).
- Training length is in trainer steps, not epochs: ``budget.steps`` covers both
  stages and must exceed ``autoencoder_steps``.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, ClassVar

import torch
from torch.nn import functional as F

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.resources import POSTERIOR_CACHE_MB
from pipeline_lib.models.base import GenerativeModel
from pipeline_lib.models.families.ddpm import BETA_SCHEDULES, Denoiser, check_labels
from pipeline_lib.models.families.dfc_vae import (build_feature_network, drop_feature_net,
                                                 fill_feature_net, weights_as_text)
from pipeline_lib.models.families.hparams.ldm import LDMHyperparameters, LDMPerceptual

PERCEPTUAL_BACKBONES = ("inception", "none")
log = logging.getLogger(__name__)


def lpips_baseline(features_a: list[torch.Tensor], features_b: list[torch.Tensor]) -> torch.Tensor:
    """Per-image perceptual distance: for every layer, features unit-normalised over channels,
    squared differences summed over channels and averaged over positions; summed over layers."""
    total = 0.0
    for a, b in zip(features_a, features_b):
        a = a.float() / (a.float().pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
        b = b.float() / (b.float().pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
        total = total + (a - b).pow(2).sum(dim=1).mean(dim=(1, 2))
    return total


def kl_of_posterior(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over the latent, mean over the batch (the tutorial's form)."""
    mu, sigma = z_mu.float(), z_sigma.float()
    per_image = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2)) - 1).flatten(1).sum(1)
    return per_image.mean()


class LDM(GenerativeModel):
    family = "ldm"
    can_reconstruct = True
    HYPERPARAMETERS = LDMHyperparameters
    EMA_MODULES: ClassVar[tuple[str, ...]] = ("denoiser",)

    def __init__(self, image_size: int, channels: int = 1, n_classes: int = 0, **hparams: Any):
        super().__init__(image_size, channels, n_classes, **hparams)
        from monai.networks.nets import AutoencoderKL, PatchDiscriminator

        self.conditional = n_classes > 0
        h, where = self.hp, f"models.<{self.family} model>"
        ae_channels = [int(c) for c in h.ae_channels]
        if any(c % int(h.ae_norm_num_groups) for c in ae_channels):
            raise InputError(f"{where}: every entry of ae_channels must be a multiple of ae_norm_num_groups")
        self.downsampling = 2 ** (len(ae_channels) - 1)
        if image_size % (self.downsampling * 2 ** (len(h.unet_channels) - 1)):
            raise InputError(f"{where}: image_size {image_size} must be divisible by the autoencoder's "
                             f"{self.downsampling}x reduction times the UNet's halvings")
        if int(h.autoencoder_steps) < 1:
            raise InputError(f"{where}: autoencoder_steps must be at least 1")
        attention, nonlocal_attention = self.autoencoder_attention(len(ae_channels))
        self.autoencoder = AutoencoderKL(
            spatial_dims=self.spatial_dims, in_channels=channels, out_channels=channels, channels=ae_channels,
            latent_channels=int(h.latent_channels), num_res_blocks=int(h.ae_num_res_blocks),
            attention_levels=attention, norm_num_groups=int(h.ae_norm_num_groups),
            with_encoder_nonlocal_attn=nonlocal_attention, with_decoder_nonlocal_attn=nonlocal_attention)
        self.discriminator = None
        if h.adversarial_weight > 0:
            self.discriminator = PatchDiscriminator(spatial_dims=self.spatial_dims, num_layers_d=int(h.disc_layers),
                                                    channels=int(h.disc_channels), in_channels=channels,
                                                    out_channels=1)
        self.denoiser = Denoiser(int(h.latent_channels), h, n_classes, clip_sample=False, where=where,
                                 spatial_dims=self.spatial_dims, n_covariates=self.n_covariates)
        self.register_buffer("autoencoder_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("unet_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("latent_scale", torch.zeros(()))
        self._posterior_cache: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
        self._posterior_cache_of = (-1, 0)  # (autoencoder updates, bytes held) it was filled at
        # new weights (a checkpoint, a weights file) make the kept moments stale
        self.register_load_state_dict_post_hook(lambda module, keys: module.forget_posteriors())
        self._warned_untrained = False
        self._setup_perceptual(h.perceptual, where)

    def _setup_perceptual(self, choice: LDMPerceptual, where: str) -> None:
        if choice.backbone not in PERCEPTUAL_BACKBONES:
            raise InputError(f"{where}.perceptual.backbone must be one of {PERCEPTUAL_BACKBONES}, "
                             f"got {choice.backbone!r}")
        self.perceptual_net = None
        if choice.backbone == "inception" and choice.weight > 0:
            net, path = build_feature_network("inception", choice.weights)
            self.perceptual_net = net
            self.perceptual_weights_file = path.name
            # Frozen and reloadable: kept out of checkpoints and weight files, as in dfc_vae.
            self.register_state_dict_post_hook(drop_feature_net)
            self.register_load_state_dict_pre_hook(fill_feature_net)

    def autoencoder_attention(self, levels: int) -> tuple[list[bool], bool]:
        """(attention per level, attention in the encoder's and decoder's middle): none in the 2-D
        tutorial."""
        return [False] * levels, False

    @classmethod
    def resolve_hparams(cls, given: dict[str, Any]):
        hp = super().resolve_hparams(given)
        if hp.beta_schedule not in BETA_SCHEDULES:
            raise InputError(f"{cls.family}: beta_schedule must be one of {BETA_SCHEDULES}")
        return weights_as_text(hp)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """(channels, *spatial) of one image's latent: each side reduced by the autoencoder's halvings."""
        return (int(self.hp.latent_channels), *[self.image_size // self.downsampling] * self.spatial_dims)

    # -- stages -------------------------------------------------------------------------------
    @property
    def in_autoencoder_stage(self) -> bool:
        return int(self.autoencoder_updates) < int(self.hp.autoencoder_steps)

    def check_budget(self, steps: int | None) -> None:
        """Called by the trainer: a step budget must leave steps for the diffusion stage."""
        if steps is not None and steps <= int(self.hp.autoencoder_steps):
            raise InputError(f"models.<{self.family} model>: the budget ({steps} steps) must exceed autoencoder_steps "
                             f"({self.hp.autoencoder_steps}): both stages count towards it")

    def schedule_position(self, step: int, total_steps: int | None) -> tuple[int, int | None]:
        """Stage 1 is steps 1..autoencoder_steps, stage 2 the rest of the budget."""
        first = int(self.hp.autoencoder_steps)
        if step <= first:
            return step, first
        return step - first, None if total_steps is None else total_steps - first

    def ema_modules(self) -> tuple[str, ...]:
        """The UNet is averaged from its first update on; the autoencoder it decodes with is not
        (its latents would no longer match the ones the UNet learnt)."""
        return self.EMA_MODULES if int(self.unet_updates) > 0 else ()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.perceptual_net is not None:
            self.perceptual_net.eval()
        if not self.in_autoencoder_stage:
            self.autoencoder.eval()  # frozen during the diffusion stage
        return self

    def configure_optimizers(self) -> None:
        h = self.hp
        self.optimizers = {"autoencoder": self.adam(self.autoencoder.parameters(), lr=h.ae_lr),
                           "unet": self.adam(self.denoiser.parameters(), lr=h.lr)}
        if self.discriminator is not None:
            self.optimizers["discriminator"] = self.adam(self.discriminator.parameters(), lr=h.disc_lr)

    # -- training -----------------------------------------------------------------------------
    def perceptual_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.perceptual_net(x)
        return lpips_baseline(self.perceptual_net(x_hat), target).mean()

    def adversarial_on(self) -> bool:
        return self.discriminator is not None and int(self.autoencoder_updates) >= int(self.hp.adversarial_start)

    def autoencoder_step(self, images: torch.Tensor) -> dict[str, float]:
        h = self.hp
        with self.autocast():
            recon, z_mu, z_sigma = self.autoencoder(images)
        l1 = F.l1_loss(recon.float(), images.float())
        kl = kl_of_posterior(z_mu, z_sigma)
        loss = l1 + h.kl_weight * kl
        out = {"reconstruction": l1, "kl": kl}
        if self.perceptual_net is not None:
            perceptual = self.perceptual_loss(images, recon)
            loss = loss + h.perceptual.weight * perceptual
            out["perceptual"] = perceptual
        adversarial = self.adversarial_on()
        if adversarial:
            with self.autocast():
                generator_adv = least_squares(self.discriminator(recon.contiguous())[-1], True, False)
            loss = loss + h.adversarial_weight * generator_adv
            out["generator_adversarial"] = generator_adv
        self.optimise(loss, self.optimizers["autoencoder"], inputs=list(self.autoencoder.parameters()))
        if adversarial:
            with self.autocast():
                d_fake = least_squares(self.discriminator(recon.detach().contiguous())[-1], False, True)
                d_real = least_squares(self.discriminator(images.contiguous())[-1], True, True)
                d_loss = h.adversarial_weight * (d_fake + d_real) / 2
            self.optimise(d_loss, self.optimizers["discriminator"])
            out["discriminator"] = (d_fake + d_real) / 2
        self.autoencoder_updates += 1
        return self.loss_values({"stage": 1.0, "loss": loss, **out})

    @torch.no_grad()
    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_mu, z_sigma) of a batch from the frozen encoder. On the CPU each image's moments are kept,
        keyed by its bytes, while they fit :data:`POSTERIOR_CACHE_MB` and the autoencoder does not
        change: a batch whose images are all kept is not encoded. A batch with a new image is encoded
        whole, as without the cache (an image's moments do not depend on its batch-mates at a given
        batch size, so kept and fresh moments are the same numbers; an image alone would differ in the
        last bits, and take five times longer)."""
        if images.device.type != "cpu":
            with self.autocast():
                mu, sigma = self.autoencoder.encode(images)
            return mu.float(), sigma.float()
        updates = int(self.autoencoder_updates)
        if self._posterior_cache_of[0] != updates:
            self.forget_posteriors()
            self._posterior_cache_of = (updates, 0)
        keys = [hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=16).digest() for image in images]
        kept = [self._posterior_cache.get(key) for key in keys]
        if all(k is not None for k in kept):
            return torch.stack([mu for mu, _ in kept]), torch.stack([sigma for _, sigma in kept])
        with self.autocast():
            mu, sigma = self.autoencoder.encode(images)
        mu, sigma = mu.float(), sigma.float()
        size = 2 * mu[0].numel() * 4
        for key, image_mu, image_sigma in zip(keys, mu, sigma):
            held = self._posterior_cache_of[1]
            if key not in self._posterior_cache and held + size <= POSTERIOR_CACHE_MB * 1024 * 1024:
                self._posterior_cache[key] = (image_mu.clone(), image_sigma.clone())
                self._posterior_cache_of = (updates, held + size)
        return mu, sigma

    def forget_posteriors(self) -> None:
        self._posterior_cache.clear()
        self._posterior_cache_of = (-1, 0)

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled latents of a batch: a posterior draw times the latent scale factor."""
        return self.autoencoder.sampling(*self.posterior(images)) * self.latent_scale

    def diffusion_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        if float(self.latent_scale) == 0.0:
            z = self.autoencoder.sampling(*self.posterior(images))
            self.latent_scale.fill_(1.0 / z.std().item())
        z = self.latents(images)
        labels = self.denoiser.training_labels(labels, len(images), images.device)
        with self.autocast():
            loss = self.denoiser.loss(z, labels)
        self.optimise(loss, self.optimizers["unet"])
        self.unet_updates += 1
        return self.loss_values({"stage": 2.0, "loss": loss, "diffusion": loss})

    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        labels = check_labels(self, labels, len(images))
        self.train()
        if self.in_autoencoder_stage:
            return self.autoencoder_step(images)
        return self.diffusion_step(images, labels)

    @torch.no_grad()
    def validation_losses(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        """Stage 1: L1 reconstruction (of the posterior mean) and KL; stage 2: the diffusion loss."""
        labels = check_labels(self, labels, len(images))
        self.eval()
        if int(self.unet_updates) == 0:
            with self.autocast():
                z_mu, z_sigma = self.autoencoder.encode(images)
                recon = self.autoencoder.decode(z_mu)
            return {"reconstruction": F.l1_loss(recon.float(), images.float()).item(),
                    "kl": kl_of_posterior(z_mu, z_sigma).item()}
        with self.autocast():
            return {"diffusion": self.denoiser.loss(self.latents(images), labels).item()}

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        self.eval()
        labels = check_labels(self, labels, n)
        if int(self.unet_updates) == 0 and not self._warned_untrained:
            # A minutes budget can end inside the autoencoder stage: say so rather than pass noise off as samples.
            log.warning("%s: the diffusion stage has not run (%d of %d autoencoder steps done); samples are "
                        "decoded noise", self.family, int(self.autoencoder_updates), int(self.hp.autoencoder_steps))
            self._warned_untrained = True
        scale = float(self.latent_scale) or 1.0  # 0 before the diffusion stage starts
        with self.autocast():
            z = self.denoiser.sample((n, *self.latent_shape), labels, generator, self.device)
            x = self.autoencoder.decode(z / scale)
        return x.float().clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean (deterministic)."""
        self.eval()
        with self.autocast():
            return self.autoencoder.reconstruct(images).float().clamp(0, 1)

    def snapshot(self, n: int, labels: torch.Tensor | None, generator: torch.Generator,
                 reference: torch.Tensor | None) -> tuple[str, torch.Tensor]:
        """Reconstructions of held-out slices while only the autoencoder has trained, samples after."""
        if int(self.unet_updates) == 0 and reference is not None:
            return "reconstructions", self.reconstruct(reference)
        return "samples", self.sample(n, labels=labels, generator=generator)

    def perceptual_summary(self) -> dict[str, Any]:
        """Which perceptual network stage 1 used, for reports (LPIPS/AlexNet in the tutorial)."""
        backbone = self.hp.perceptual.backbone if self.perceptual_net is not None else "none"
        return {"backbone": backbone, "substitute": True, "published": "LPIPS on AlexNet (MONAI's LDM tutorial)",
                "weights_file": getattr(self, "perceptual_weights_file", None)}


def least_squares(logits: torch.Tensor, real: bool, for_discriminator: bool) -> torch.Tensor:
    """MONAI's PatchAdversarialLoss(criterion="least_squares"): mean (logit - target)^2, target 1 or 0."""
    from monai.losses import PatchAdversarialLoss

    return PatchAdversarialLoss(criterion="least_squares")(logits.float(), target_is_real=real,
                                                          for_discriminator=for_discriminator)


MODEL = LDM
