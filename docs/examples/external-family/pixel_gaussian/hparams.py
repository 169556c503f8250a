"""The family's hyperparameters, in a module of their own that does not import torch: the pipeline
reads them from here while it checks a config, before any job runs."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_lib.models.families.hparams import hyperparameter


@dataclass(frozen=True)
class PixelGaussianHyperparameters:
    lr: float = hyperparameter(0.05, "Adam learning rate")
    batch_size: int = hyperparameter(16, "images per step")
    min_std: float = hyperparameter(0.01, "floor of every pixel's standard deviation")
    init: str = hyperparameter("mid_grey", "the mean image at the start", choices=("mid_grey", "black"))
