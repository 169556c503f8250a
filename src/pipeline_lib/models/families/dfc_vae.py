"""Deep Feature Consistent VAE of Ungría Hirte et al. (Ungría Hirte et al., sections 2.3 and 3.2), after Hou et al.

Encoder and decoder are the vanilla VAE's (Ungría Hirte et al. §3.2: "identical to the one
employed for the vanilla variational autoencoder", imported from ``vae.py``).
The pixel-wise error is replaced by a feature perceptual loss (eq. 6): squared
differences between the activations of a frozen ImageNet VGG16 at relu1_1,
relu2_1 and relu3_1 (the layers of Hou et al.'s VAE-123) for an image and its
reconstruction. Grayscale slices are repeated to three channels and given
torchvision's ImageNet normalisation.

How the published weight 2e-9 combines with the feature errors (our decision):
read with eq. (7)'s per-layer mean, 2e-9 times errors of order one would make
the reconstruction term about 1e-9 of the KL term, the decoder would learn
nothing, and the seed's sharper-than-vanilla reconstructions (its Fig. 3)
could not have happened. Weights of this size are what Keras code puts on a
*sum* of squared raw activations of a VGG16 fed 0-255 intensities (the seed's
VGG16 "with exclusion of the top layers" reads like Keras' ``include_top=False``).
We therefore use

    L_rec = perceptual_weight * feature_scale**2 * sum over the three layers and
            all their elements of (psi(x) - psi(x'))**2,   averaged over the batch,

where ``feature_scale = 255`` puts torchvision's activations (inputs in
[0, 1]) on that 0-255 scale: ReLU feature maps grow in proportion to their
input apart from the biases, so this is an order-of-magnitude reconstruction
of the published balance, not an exact one. The sum over elements also grows
with H * W, as the vanilla VAE's 0.025 x 128 x 128 scaling does. Both numbers
are hyperparameters.

This is ``perceptual_form: sum_8bit`` (the default). ``perceptual_form: eq7`` is the seed's
text as printed (section 2.3, equations 6 and 7):

    (6)  L_rec   = sum over the n tapped layers l of L_rec^l
    (7)  L_rec^l = 1 / (2 H_l W_l C_l) * sum over c, w, h of (psi(x)^l_{c,w,h} - psi(x')^l_{c,w,h})**2

    here: L_rec = perceptual_weight * sum_l mean over elements of (feature_scale * (psi(x)^l - psi(x')^l))**2 / 2,
          averaged over the batch,

i.e. half the per-layer mean squared feature error, summed over the three layers and
weighted by ``perceptual_weight``; ``feature_scale`` still sets the scale of psi's
activations (1: torchvision's [0, 1]-input VGG16; 255: the 8-bit reading above). With the
published 2e-9 and feature errors of order one this term is about 1e-9 of the KL term, which is
why it is not the default (presets/ungria_hirte_2020.yaml uses sum_8bit and names eq7 as the
literal alternative); set it to follow the printed text (and the weight with it).

Offline substitute (not in the seed): ImageNet VGG16 weights cannot be had
offline, so ``perceptual.backbone: inception`` takes the three first
convolution stages of the FID Inception (Conv2d_1a_3x3, Conv2d_2b_3x3,
Conv2d_4a_3x3, each after its ReLU; input mapped to [-1, 1], not resized)
instead, with the same formula and weight; its activations differ in scale, so
the balance against the KL term is only similar (a 128 px batch at
initialisation: reconstruction term about 200, KL about 26). The model records the backbone it used (:meth:`DFCVAE.perceptual_summary`)
so that reports can say so. The feature network is frozen, kept in eval mode,
and left out of ``state_dict()``: it is reloaded from its weights file when
the model is rebuilt, which keeps checkpoints small.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.pretrained import (default_fid_cache, fid_inception_weights, load_fid_inception,
                                load_vgg16_features, torch_hub_checkpoint, VGG16_FILE)
from pipeline_lib.models.families.vae import VAE
from pipeline_lib.models.families.hparams.dfc_vae import DFCVAEHyperparameters

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Indices of relu1_1, relu2_1, relu3_1 in torchvision's VGG16 ``features``.
VGG16_TAPS = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11}
#: Indices in the FID Inception stem (1a, 2a, 2b, max-pool, 3b, 4a); each output is after its ReLU.
INCEPTION_TAPS = {"Conv2d_1a_3x3": 0, "Conv2d_2b_3x3": 2, "Conv2d_4a_3x3": 5}
BACKBONES = ("vgg16", "inception")
FEATURE_NET = "perceptual_net"


class TappedFeatures(nn.Module):
    """Runs a frozen feature stack and returns the activations at the tapped layer indices."""

    def __init__(self, layers: nn.Sequential, taps: dict[str, int], backbone: str):
        super().__init__()
        self.layers = layers[: max(taps.values()) + 1]
        self.taps = dict(taps)
        self.backbone = backbone
        if backbone == "vgg16":
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] -> the input convention of the pretrained network: every channel is
        one grey image repeated to the network's 3 colour channels, so a stacked dataset's C sequences
        count as N·C grey images (as every metric pools them, core.slices.grey_images)."""
        x = x.reshape((-1, 1) + tuple(x.shape[-2:])).expand(-1, 3, -1, -1)
        if self.backbone == "vgg16":
            return (x - self.mean) / self.std
        return 2 * x - 1

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        wanted = set(self.taps.values())
        out = []
        h = self.preprocess(x)
        for index, layer in enumerate(self.layers):
            h = layer(h)
            if index in wanted:
                out.append(h)
        return out


def weights_as_text(hp: Any) -> Any:
    """``hp`` with ``perceptual.weights`` as text: a path given from Python is recorded as its text."""
    weights = hp.perceptual.weights
    if weights is None:
        return hp
    return dataclasses.replace(hp, perceptual=dataclasses.replace(hp.perceptual, weights=str(weights)))


def build_feature_network(backbone: str, weights: str | None) -> tuple[TappedFeatures, Path]:
    """The frozen perceptual network and the weights file it came from (errors before training)."""
    if backbone == "vgg16":
        path = Path(weights) if weights is not None else torch_hub_checkpoint(VGG16_FILE)
        return TappedFeatures(load_vgg16_features(weights), VGG16_TAPS, backbone), path
    path = fid_inception_weights(default_fid_cache(), configured=weights)
    inception = load_fid_inception(path, "cpu", output_blocks=(1,))
    stem = nn.Sequential(*inception.blocks[0], *inception.blocks[1][:2])
    return TappedFeatures(stem, INCEPTION_TAPS, backbone), path


class DFCVAE(VAE):
    family = "dfc_vae"
    can_reconstruct = True
    HYPERPARAMETERS = DFCVAEHyperparameters

    def __init__(self, image_size: int, channels: int = 1, n_classes: int = 0, **hparams: Any):
        super().__init__(image_size, channels, n_classes, **hparams)
        choice = self.hp.perceptual
        net, path = build_feature_network(choice.backbone, choice.weights)
        self.perceptual_net = net
        self.perceptual_weights_file = str(path)
        self.register_state_dict_post_hook(drop_feature_net)
        self.register_load_state_dict_pre_hook(fill_feature_net)

    @classmethod
    def resolve_hparams(cls, given: dict[str, Any]):
        """Defaults overridden by ``given`` (``perceptual`` key by key); the backbone is checked."""
        hp = super().resolve_hparams(given)
        perceptual = hp.perceptual
        if perceptual.backbone not in BACKBONES:
            raise InputError(f"dfc_vae: perceptual.backbone must be one of {BACKBONES}, "
                             f"got {perceptual.backbone!r}")
        return weights_as_text(hp)

    def train(self, mode: bool = True):
        """Train mode for encoder and decoder; the frozen feature network stays in eval mode."""
        super().train(mode)
        if hasattr(self, FEATURE_NET):
            self.perceptual_net.eval()
        return self

    def configure_optimizers(self) -> None:
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        self.optimizers = {"vae": self.adam(params, lr=self.hp.lr)}

    def perceptual_summary(self) -> dict[str, Any]:
        """Which feature network the loss used, for reports (VGG16 is the seed's; inception a substitute)."""
        backbone = self.hp.perceptual.backbone
        return {"backbone": backbone, "layers": list(self.perceptual_net.taps),
                "weights_file": Path(self.perceptual_weights_file).name,
                "substitute": backbone != "vgg16"}

    def reconstruction_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """The perceptual loss in ``perceptual_form`` (module docstring), mean over the batch."""
        with self.autocast():
            with torch.no_grad():
                target = self.perceptual_net(x)
            recon = self.perceptual_net(x_hat)
        h = self.hp
        return perceptual_loss(recon, target, h.perceptual_weight, h.feature_scale, h.perceptual_form)


def perceptual_loss(recon: list[torch.Tensor], target: list[torch.Tensor], weight: float,
                    feature_scale: float, form: str) -> torch.Tensor:
    """Weighted perceptual loss of a batch from the tapped activations of x' and x.

    ``sum_8bit``: weight * feature_scale**2 * sum over layers and elements of squared errors;
    ``eq7``: weight * sum over layers of eqs. (6)-(7), 1 / (2 H W C) * sum of squared errors of
    the activations times ``feature_scale``. Both are per image, then averaged over the batch.
    """
    if form == "sum_8bit":
        per_image = sum(((r.float() - t.float()) ** 2).flatten(1).sum(1) for r, t in zip(recon, target))
        return (weight * feature_scale**2 * per_image).mean()
    if form == "eq7":
        per_image = sum((feature_scale * (r.float() - t.float())).pow(2).flatten(1).mean(1) / 2
                        for r, t in zip(recon, target))
        return (weight * per_image).mean()
    raise InputError(f"dfc_vae: perceptual_form must be one of sum_8bit, eq7, got {form!r}")


def drop_feature_net(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    """Keep the frozen, reloadable feature network out of checkpoints and weight files."""
    for key in [k for k in state_dict if k.startswith(f"{prefix}{FEATURE_NET}.")]:
        del state_dict[key]


def fill_feature_net(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """On load, supply the feature network's entries from the network already loaded."""
    for key, value in module.perceptual_net.state_dict().items():
        state_dict.setdefault(f"{prefix}{FEATURE_NET}.{key}", value)


MODEL = DFCVAE
