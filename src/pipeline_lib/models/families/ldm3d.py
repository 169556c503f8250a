"""Latent diffusion model on whole volumes (Pinaya et al. 2022): the ``ldm`` family with MONAI's
``AutoencoderKL``, ``PatchDiscriminator`` and ``DiffusionModelUNet`` built with ``spatial_dims=3``.

It learns a volume dataset's (N, C, S, S, S) volumes (``datasets.<name>: {kind: volume}``,
core/volumes.py) exactly as ``ldm`` learns slices: two stages in one model and one checkpoint chain
(the first ``autoencoder_steps`` trainer steps train the autoencoder with L1 + KL + perceptual +
adversarial losses, every later step the UNet on the frozen autoencoder's scaled latents), samples
by the repository's DDIM sampler (ddpm.py's ``Denoiser``) in latent space, then decoded; optional
class conditioning with classifier-free guidance as in ``ddpm``/``ddpm3d``. The latent of an
S-voxel cube is (``latent_channels``, S/f, S/f, S/f) with f = 2^(levels of ``ae_channels`` - 1)
(``latent_shape``).

Defaults and where they come from (MONAI's 3-D LDM tutorial, Project-MONAI/tutorials,
generation/3d_ldm/3d_ldm_tutorial.ipynb, BraTS FLAIR volumes at 2.4 x 2.4 x 2.2 mm cropped to
96 x 96 x 64, which Pinaya et al.'s group wrote beside their UK Biobank model):
- Autoencoder: channels (32, 64, 64) (a 4x reduction a side), 3 latent channels, one residual block
  per level, 16 normalisation groups, attention at the third level and in the middle of encoder and
  decoder (MONAI's default there); Adam 1e-4. Loss: L1 + 1e-6 x KL + 0.001 x perceptual + 0.01 x the
  least-squares patch-adversarial loss of a 3-layer, 32-channel ``PatchDiscriminator`` (Adam 1e-4),
  adversarial terms from epoch 6. 100 epochs of 194 batches of 2 volumes: 19,400 steps,
  adversarial from step 1,164.
- Diffusion: UNet channels (32, 64, 64), attention at levels 2 and 3 with 64 channels per head, one
  residual block per level; T = 1000, "scaled linear" betas 0.0015 to 0.0195; Adam 1e-4, batch 2;
  the tutorial trains it 150 epochs (29,100 steps). The latent scale factor is 1 / std of the first
  diffusion batch's latents (Rombach et al.; the tutorial's ``scale_factor``).
- Class conditioning: the ``ddpm`` family's class embedding, dropout 0.15 and guidance scale 4.0.

Deviations, and why:
- Perceptual term: the tutorial's ``PerceptualLoss(spatial_dims=3, network_type="squeeze",
  is_fake_3d=True, fake_3d_ratio=0.2)`` needs LPIPS/SqueezeNet weights that cannot be downloaded
  here. The same fake-3-D scheme (for each of the three axes, a random 20 % of the batch's slices
  through it, the 2-D distance on them, summed over the axes) runs with the ``ldm`` family's
  offline substitute: the FID Inception's stem with LPIPS's unweighted distance
  (``perceptual.backbone: inception``, its weights file ``perceptual.weights``, or the one the
  pipeline builds offline; a missing file is an error naming it); ``none`` drops the term.
- Volumes are cubic (S a side, a power of two): the tutorial's 96 x 96 x 64 is not expressible;
  S must be divisible by the autoencoder's reduction times the UNet's halvings (16 by default).
- Sampling: DDIM with ``ddim_steps`` = 50 instead of the tutorial's 1000 DDPM steps (as ``ldm``;
  the UK Biobank model's MONAI bundle samples with 50 DDIM steps too); latents are not clipped.
- Training length is in trainer steps, not epochs; ``budget.steps`` covers both stages.
- Training snapshots show the middle axial slice of each reconstructed or sampled volume.

Continuous covariates (``condition_on_covariates``; Pinaya et al. condition on age, sex, ventricular
and brain volume): each scaled to [0, 1] over the training split, given to the UNet as constant
channels beside the latent and as its cross-attention context (ddpm.py's ``Denoiser``), always, so
without guidance (docs/VOLUMES.md, "conditioning on covariates").
"""

from __future__ import annotations

from typing import ClassVar

import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.models.families.hparams.ldm3d import LDM3DHyperparameters
from pipeline_lib.models.families.ldm import LDM


def plane_slices(volumes: torch.Tensor, axis: int) -> torch.Tensor:
    """(N, C, X, Y, Z) -> every slice through spatial ``axis`` (2, 3 or 4) as a (N x S, C, A, B) batch."""
    moved = volumes.movedim(axis, 1)
    return moved.reshape(-1, *moved.shape[2:])


class LDM3D(LDM):
    family = "ldm3d"
    HYPERPARAMETERS = LDM3DHyperparameters
    spatial_dims: ClassVar[int] = 3
    takes_covariates: ClassVar[bool] = True

    def __init__(self, image_size: int, channels: int = 1, n_classes: int = 0, **hparams):
        super().__init__(image_size, channels, n_classes, **hparams)
        ratio = float(self.hp.perceptual.fake_3d_ratio)
        if not 0 < ratio <= 1:
            raise InputError(f"models.<{self.family} model>.perceptual.fake_3d_ratio must lie in (0, 1], got {ratio}")

    def autoencoder_attention(self, levels: int) -> tuple[list[bool], bool]:
        attention = [bool(a) for a in self.hp.ae_attention_levels]
        if len(attention) != levels:
            raise InputError(f"models.<{self.family} model>: ae_attention_levels needs one entry per entry of "
                             f"ae_channels, got {len(attention)} for {levels}")
        return attention, bool(self.hp.ae_nonlocal_attention)

    def perceptual_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Fake 3-D (MONAI's ``is_fake_3d``): per axis, the 2-D distance on a random ``fake_3d_ratio``
        of the batch's slices through it (the same slices of input and reconstruction), summed."""
        ratio = float(self.hp.perceptual.fake_3d_ratio)
        total = x.new_zeros(())
        for axis in (2, 3, 4):
            real, reconstructed = plane_slices(x, axis), plane_slices(x_hat, axis)
            chosen = torch.randperm(len(real))[: max(1, int(len(real) * ratio))].to(x.device)
            total = total + super().perceptual_loss(real[chosen], reconstructed[chosen])
        return total

    def snapshot(self, n: int, labels: torch.Tensor | None, generator: torch.Generator,
                 reference: torch.Tensor | None) -> tuple[str, torch.Tensor]:
        """The middle axial (z) slice of each reconstructed (stage 1) or sampled volume."""
        kind, volumes = super().snapshot(n, labels, generator, reference)
        return kind, volumes[..., volumes.shape[-1] // 2]

    def perceptual_summary(self):
        summary = super().perceptual_summary()
        summary["published"] = "LPIPS on SqueezeNet, fake 3-D (MONAI's 3-D LDM tutorial)"
        summary["fake_3d_ratio"] = float(self.hp.perceptual.fake_3d_ratio)
        return summary


MODEL = LDM3D
