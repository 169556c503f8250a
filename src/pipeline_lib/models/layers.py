"""Small building blocks shared by the model families (not a family itself).

Kept deliberately plain: functions and tiny ``nn.Module`` classes that a
family composes, so that each family module still reads as its paper's
description of the networks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Side of the smallest feature map of the DCGAN-style networks (Radford et al.'s 4 x 4 projection).
BASE_SIZE = 4

NORMS = ("batch", "layer", "none")
ACTIVATIONS = ("relu", "leaky_relu", "elu")


def n_resolution_stages(image_size: int, base_size: int = BASE_SIZE) -> int:
    """Number of x2 up/down-sampling stages between ``base_size`` and ``image_size``."""
    stages = int(math.log2(image_size // base_size))
    if base_size * 2**stages != image_size or stages < 1:
        raise ValueError(f"image_size {image_size} is not {base_size} x a power of two")
    return stages


def stride2_padding(kernel_size: int) -> tuple[int, int]:
    """(padding, output_padding) that make a stride-2 (transposed) convolution exactly halve (double).

    TensorFlow's 'SAME' padding, which the 5 x 5 DCGAN implementations rely on.
    """
    return (kernel_size - 1) // 2, kernel_size % 2


def make_norm(kind: str, channels: int) -> nn.Module:
    """Batch norm, layer norm over (C, H, W) with a per-channel affine, or nothing."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        # One group = statistics over all of (C, H, W) per sample: layer norm that does not
        # depend on the spatial size and, unlike batch norm, keeps samples independent.
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalisation '{kind}'; known: {NORMS}")


def make_activation(kind: str) -> nn.Module:
    if kind == "relu":
        return nn.ReLU()
    if kind == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if kind == "elu":
        return nn.ELU()
    raise ValueError(f"unknown activation '{kind}'; known: {ACTIVATIONS}")


class UpBlock(nn.Sequential):
    """Fractionally strided convolution doubling the spatial size, then norm and activation."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, norm: str = "batch",
                 activation: str = "relu"):
        padding, output_padding = stride2_padding(kernel_size)
        super().__init__(
            # The norm's shift makes a bias redundant.
            nn.ConvTranspose2d(c_in, c_out, kernel_size, stride=2, padding=padding,
                               output_padding=output_padding, bias=norm == "none"),
            make_norm(norm, c_out),
            make_activation(activation),
        )


class DownBlock(nn.Sequential):
    """Strided convolution halving the spatial size, then norm and activation."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, norm: str = "batch",
                 activation: str = "leaky_relu"):
        padding, _ = stride2_padding(kernel_size)
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel_size, stride=2, padding=padding, bias=norm == "none"),
            make_norm(norm, c_out),
            make_activation(activation),
        )


def init_dcgan_weights(module: nn.Module) -> None:
    """Radford et al.'s initialisation: weights N(0, 0.02), batch-norm scale N(1, 0.02), shifts 0.

    Use as ``network.apply(init_dcgan_weights)``; draws from torch's global generator.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def draw_latent(n: int, dim: int, distribution: str, device: torch.device,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Latent codes (n, dim), drawn on the CPU so that a seed gives the same codes on any device.

    ``distribution`` is "uniform" (U[-1, 1], as in DCGAN) or "normal" (N(0, I)).
    """
    if distribution == "uniform":
        z = torch.rand(n, dim, generator=generator, device="cpu") * 2 - 1
    elif distribution == "normal":
        z = torch.randn(n, dim, generator=generator, device="cpu")
    else:
        raise ValueError(f"unknown latent distribution '{distribution}'; known: uniform, normal")
    return z.to(device)


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] pipeline intensities -> [-1, 1], the range GANs are trained in."""
    return images * 2 - 1


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] generator output -> [0, 1], clamped (needed for generators without a tanh)."""
    return ((images.float() + 1) / 2).clamp(0, 1)


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    """Freeze or unfreeze ``module``: the generator's update need not compute the discriminator's gradients."""
    for p in module.parameters():
        p.requires_grad_(flag)
