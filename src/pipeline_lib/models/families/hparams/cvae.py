"""Hyperparameters of the ``cvae`` family (Ballesteros Ramirez, section 5)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_lib.models.families.hparams.fields import hyperparameter


@dataclass(frozen=True)
class CVAEHyperparameters:
    latent_dim: int = hyperparameter(256, "size of the latent code (Ballesteros Ramirez §5.1)")
    hidden_sizes: list[int] = hyperparameter([1024, 512], "widths of the linear + ReLU layers (not stated in "
                                                          "Ballesteros Ramirez: 'linear and ReLU layers'; our choice)")
    lr: float = hyperparameter(3e-4, "Adam learning rate (Ballesteros Ramirez §5.2)")
    batch_size: int = hyperparameter(8, "images per step (Ballesteros Ramirez §5.2)")
    reconstruction: str = hyperparameter("logcosh", "reconstruction error: logcosh (Ballesteros Ramirez §5, "
                                                    "instead of MSE) or mse")
    logcosh_alpha: float = hyperparameter(1.0, "scale alpha of log(cosh(alpha d)) / alpha (1: plain log-cosh; "
                                               "the seed gives no scale)")
