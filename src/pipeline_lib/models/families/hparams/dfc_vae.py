"""Hyperparameters of the ``dfc_vae`` family: the vanilla VAE's architecture, latent 200, Adam 1e-4 and
batch 64 (Ungría Hirte et al. §3.2), plus the perceptual loss (module docstring of ``dfc_vae``)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_lib.models.families.hparams.fields import hyperparameter


@dataclass(frozen=True)
class DFCPerceptual:
    backbone: str = hyperparameter("vgg16", "feature network: vgg16 (the seed's) or inception (offline substitute)")
    weights: str | None = hyperparameter(None, "its weights file; null = the file the pipeline provides")


@dataclass(frozen=True)
class DFCVAEHyperparameters:
    latent_dim: int = hyperparameter(200, "size of the latent code (Ungría Hirte et al. §3.2)")
    width: int = hyperparameter(32, "channels of the first encoder stage (32-64-128-256 as in Hou et al.)")
    lr: float = hyperparameter(1e-4, "Adam learning rate (Ungría Hirte et al. §3.2)")
    batch_size: int = hyperparameter(64, "images per step (Ungría Hirte et al. §3.2)")
    perceptual_weight: float = hyperparameter(2e-9, "weight of the feature loss (Ungría Hirte et al. §3.2; "
                                                     "how it is applied: the family's docstring)")
    feature_scale: float = hyperparameter(255.0, "activations on the 0-255 intensity scale (our reading)")
    perceptual: DFCPerceptual = hyperparameter(DFCPerceptual(), "the feature network of the perceptual loss")
    perceptual_form: str = hyperparameter("sum_8bit", "sum_8bit, or eq7: eq. (7)'s per-layer mean "
                                                      "(the family's docstring)", choices=("sum_8bit", "eq7"))
