"""Conditional DCGAN (Mirza and Osindero), the conditional GAN that Ballesteros Ramirez compares.

Seed 003 (Ballesteros Ramirez, sections 1 and 7) conditions on the scanner type
and lists a conditional GAN among its candidates without describing it; this
family is the pipeline's ``dcgan`` (same presets, same published defaults: see
that module) made conditional the way Mirza and Osindero do it, by feeding the
label to both players:
- generator: the one-hot label is concatenated to the latent code before the
  fully connected projection (Ballesteros Ramirez's cVAE conditions its decoder the same way);
- discriminator: each class has a learned S x S map, concatenated to the image
  as an extra input channel, so the very first convolution sees image and label
  together.

Training is DCGAN's step with the real images' labels used for the real and the
fake batch alike. ``sample(n, labels)`` needs one class index per image.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pipeline_lib.core.errors import InputError
from pipeline_lib.models.families.dcgan import DCGAN


class CGAN(DCGAN):
    family = "cgan"
    conditional = True

    def __init__(self, image_size: int, channels: int = 1, n_classes: int = 0, **hparams: Any):
        if n_classes < 1:
            raise InputError(f"model family '{self.family}' is conditional: it needs n_classes >= 1 "
                             f"(set condition_on to a column of the slice table), got {n_classes}")
        super().__init__(image_size, channels, n_classes, **hparams)
        # Default N(0, 1) init on purpose: distinct label maps on the scale of the images from the start.
        self.label_maps = nn.Embedding(n_classes, image_size * image_size)

    def configure_optimizers(self) -> None:
        super().configure_optimizers()
        # The label maps are part of the discriminator: trained by (and zeroed with) its optimiser.
        h = self.hp
        self.optimizers["discriminator"] = self.adam(
            [*self.discriminator.parameters(), *self.label_maps.parameters()],
            lr=h.lr, betas=(h.beta1, h.beta2))

    def cond_dim(self) -> int:
        return self.n_classes

    def extra_d_channels(self) -> int:
        return 1

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        one_hot = F.one_hot(labels.long(), self.n_classes).to(z.dtype)
        return self.generator(torch.cat([z, one_hot], dim=1))

    def discriminate(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        maps = self.label_maps(labels.long()).view(-1, 1, self.image_size, self.image_size).to(x.dtype)
        return self.discriminator(torch.cat([x, maps], dim=1))

    def check_labels(self, labels: torch.Tensor | None, n: int) -> None:
        """One class index in [0, n_classes) per image, else InputError."""
        where = f"model family '{self.family}'"
        if labels is None:
            raise InputError(f"{where} is conditional: labels are required (one class index per image)")
        if labels.dtype not in (torch.int64, torch.int32) or labels.shape != (n,):
            raise InputError(f"{where}: labels must be {n} integer class indices, "
                             f"got dtype {labels.dtype} and shape {tuple(labels.shape)}")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= self.n_classes):
            raise InputError(f"{where}: class indices must lie in [0, {self.n_classes}), "
                             f"got {int(labels.min())}..{int(labels.max())}")


MODEL = CGAN
