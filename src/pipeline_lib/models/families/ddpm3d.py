"""Denoising diffusion probabilistic model on whole volumes: the ``ddpm`` family with MONAI's
``DiffusionModelUNet`` built with ``spatial_dims=3``.

It learns a volume dataset's (N, C, S, S, S) volumes (``datasets.<name>: {kind: volume}``,
core/volumes.py) exactly as ``ddpm`` learns slices: the same DDPM loss, the same DDIM sampler with the
repository's ``ddim_step`` (ddpm.py), the same optional class conditioning with classifier-free
guidance. Only the UNet's dimensionality and the published values differ.

Defaults and where they come from (MONAI's 3-D DDPM tutorial, Project-MONAI/tutorials,
generation/3d_ddpm/3d_ddpm_tutorial.ipynb, BraTS T1 volumes resized to 32 x 40 x 32):
- UNet: channels (64, 64, 128), attention at the 3rd level only, with one head of 128 channels
  (``num_head_channels`` (0, 0, 128)), two residual blocks per level, 32 normalisation groups
  (MONAI's default).
- Noise schedule: T = 1000, betas linear from 1e-4 to 0.02 (the tutorial's ``DDPMScheduler`` with
  its defaults; the same as the 2-D family's, Ho et al. 2020).
- Optimiser: Adam, learning rate 5e-5; batch 16 volumes (the tutorial's code; its text says that 8
  volumes at 32 x 40 x 32 take about 21 GB of GPU memory under mixed precision).

Deviations, and why:
- Volumes are cubic (S a side, a power of two): ``image_size`` is one number for every family. A
  volume dataset's ``box`` gives that shape; the tutorial's 32 x 40 x 32 is not expressible.
- As in ``ddpm``: intensities in [-1, 1], DDIM with ``ddim_steps`` = 50 instead of 1000 DDPM steps;
  the tutorial trains under fp16 autocast, here that is the trainer's ``amp`` (off unless set).
- Training snapshots show each sampled volume's middle axial slice (the trainer's snapshot grids
  are 2-D).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from pipeline_lib.models.families.ddpm import DDPM
from pipeline_lib.models.families.hparams.ddpm3d import DDPM3DHyperparameters


class DDPM3D(DDPM):
    family = "ddpm3d"
    HYPERPARAMETERS = DDPM3DHyperparameters
    spatial_dims: ClassVar[int] = 3
    takes_covariates: ClassVar[bool] = True

    def snapshot(self, n: int, labels: torch.Tensor | None, generator: torch.Generator,
                 reference: torch.Tensor | None) -> tuple[str, torch.Tensor]:
        """The middle axial (z) slice of each of ``n`` sampled volumes."""
        volumes = self.sample(n, labels=labels, generator=generator)
        return "samples", volumes[..., volumes.shape[-1] // 2]


MODEL = DDPM3D
