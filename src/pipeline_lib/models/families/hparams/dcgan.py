"""Hyperparameters of the ``dcgan`` and ``cgan`` families, and the small-cohort options every GAN family has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline_lib.models.families.hparams.fields import hyperparameter

#: preset -> its published hyperparameters; a config's own keys override them.
PRESETS: dict[str, dict[str, Any]] = {
    # Seed 004, "Generation of Artificial Brain Images Using Deep Convolutional GAN";
    # optimiser and batch from Radford et al. section 4, which the seed follows.
    "kazuhiro": {"latent_dim": 100, "width": 32, "kernel_size": 5, "lr": 2e-4,
                 "beta1": 0.5, "beta2": 0.999, "batch_size": 128},
    # Seed 002, section 3.2.2 "DCGAN Implementation Details".
    "han": {"latent_dim": 100, "width": 32, "kernel_size": 4, "lr": 2e-4,
            "beta1": 0.5, "beta2": 0.999, "batch_size": 64},
}
_DEFAULT = PRESETS["kazuhiro"]


def diffaugment_option() -> Any:
    """The DiffAugment policy of a GAN family (off unless configured; the dcgan family's docstring)."""
    return hyperparameter(None, "DiffAugment policy applied to every batch the discriminator sees, e.g. "
                                "\"color,translation,cutout\" (Zhao et al. 2020); null = off")


def stages_option() -> Any:
    """The depth of a DCGAN-style network (its x2 stages; the dcgan family's docstring)."""
    return hyperparameter(None, "x2 stages of each network; null = one per doubling from a 4 x 4 projection; "
                                "4 = Radford et al.'s four (fractionally) strided convolutions at any size, "
                                "the projection then image_size / 16 a side")


def r1_option() -> Any:
    """The R1 weight of a GAN family (off unless configured; the dcgan family's docstring)."""
    return hyperparameter(0.0, "weight gamma of the R1 penalty on the real batch (Mescheder et al. 2018); 0 = off")


@dataclass(frozen=True)
class DCGANHyperparameters:
    preset: str = hyperparameter("kazuhiro", "the published network and values: kazuhiro (Kazuhiro et al.) or "
                                             "han (Han et al.)", choices=sorted(PRESETS))
    latent_dim: int = hyperparameter(_DEFAULT["latent_dim"], "size of the uniform latent (Radford et al.)")
    width: int = hyperparameter(_DEFAULT["width"], "channels of the last generator / first discriminator stage")
    kernel_size: int = hyperparameter(_DEFAULT["kernel_size"], "filter size of every (transposed) convolution")
    stages: int | None = stages_option()
    lr: float = hyperparameter(_DEFAULT["lr"], "Adam learning rate (Radford et al. section 4)")
    beta1: float = hyperparameter(_DEFAULT["beta1"], "Adam beta1 (Radford et al. section 4)")
    beta2: float = hyperparameter(_DEFAULT["beta2"], "Adam beta2")
    batch_size: int = hyperparameter(_DEFAULT["batch_size"], "images per step (Radford et al. section 4)")
    diffaugment: str | None = diffaugment_option()
    r1_gamma: float = r1_option()
