"""Independent Gaussian pixels: every pixel has its own learnt mean and standard deviation.

The smallest useful generative model (a baseline: it has the data's mean image and per-pixel
spread, and no structure between pixels), written against the pipeline's family interface,
``pipeline_lib.models.base.GenerativeModel``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline_lib.models.base import GenerativeModel
from pixel_gaussian.hparams import PixelGaussianHyperparameters


class PixelGaussian(GenerativeModel):
    family = "pixel_gaussian"
    # Every key a model block may set; the pipeline checks blocks against it at DAG time.
    HYPERPARAMETERS = PixelGaussianHyperparameters
    EMA_MODULES = ()

    def __init__(self, image_size: int, channels: int = 1, n_classes: int = 0, **hparams: Any):
        super().__init__(image_size, channels, n_classes, **hparams)
        shape = (1, channels, image_size, image_size)
        start = 0.5 if self.hp.init == "mid_grey" else 0.0
        self.mean = nn.Parameter(torch.full(shape, start))
        self.log_std = nn.Parameter(torch.full(shape, -1.0))

    def configure_optimizers(self) -> None:
        self.optimizers = {"pixels": self.adam(self.parameters(), lr=self.hp.lr)}

    def std(self) -> torch.Tensor:
        return self.log_std.exp() + self.hp.min_std

    def negative_log_likelihood(self, images: torch.Tensor) -> torch.Tensor:
        std = self.std()
        return (0.5 * ((images - self.mean) / std) ** 2 + std.log()).mean()

    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        self.train()
        loss = self.negative_log_likelihood(images)
        self.optimise(loss, self.optimizers["pixels"])
        return {"nll": loss.item()}

    @torch.no_grad()
    def validation_losses(self, images: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        return {"nll": self.negative_log_likelihood(images).item()}

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        # noise drawn on the CPU, so a seed gives the same images on any device
        noise = torch.randn((n, *self.mean.shape[1:]), generator=generator, device="cpu").to(self.device)
        return (self.mean + self.std() * noise).clamp(0, 1)


MODEL = PixelGaussian
