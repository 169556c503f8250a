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


def network_geometry(image_size: int, stages: int | None = None) -> tuple[int, int]:
    """(x2 stages, side of the smallest feature map) of a DCGAN-style network: one stage per
    doubling from BASE_SIZE (``stages`` None), or exactly ``stages`` (Radford et al.'s four at
    any size, so a 128 px network projects to 8 x 8)."""
    if stages is None:
        return n_resolution_stages(image_size), BASE_SIZE
    if not isinstance(stages, int) or isinstance(stages, bool) or stages < 1:
        raise ValueError(f"stages must be an integer >= 1 or null, got {stages!r}")
    base = image_size // 2**stages
    if base < 1 or base * 2**stages != image_size:
        raise ValueError(f"image_size {image_size} cannot be reached with {stages} x2 stages "
                         f"(it must be a multiple of {2**stages})")
    return stages, base


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


# ---------------------------------------------------------------- DiffAugment

#: DiffAugment's transformations (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient
#: GAN Training"); "color" on grey images is brightness and contrast (saturation needs colour channels).
DIFFAUGMENT_OPS = ("color", "translation", "cutout")


def diffaugment_policy(policy: str | None) -> tuple[str, ...]:
    """The operations of a comma-separated policy such as ``"color,translation,cutout"``; None or "" = none."""
    if not policy:
        return ()
    ops = tuple(op.strip() for op in str(policy).split(",") if op.strip())
    unknown = [op for op in ops if op not in DIFFAUGMENT_OPS]
    if unknown:
        raise ValueError(f"diffaugment: unknown operation(s) {unknown}; known: {', '.join(DIFFAUGMENT_OPS)}")
    return ops


def diff_augment(x: torch.Tensor, ops: tuple[str, ...], brightness_range: float = 1.0) -> torch.Tensor:
    """Differentiable augmentation of a discriminator's input batch (N, C, H, W), drawn per image.

    As Zhao et al.'s reference code: brightness + U(-0.5, 0.5) x ``brightness_range`` (1 for images in
    [-1, 1], 0.5 for [0, 1]), contrast x U(0.5, 1.5) about each image's mean, translation by up to
    1/8 of the size with zero fill, cutout of one square of half the size set to zero. Every
    operation is a differentiable function of ``x``, so the generator learns through it; the caller
    applies the same policy to real and generated batches and never to the samples it returns.
    """
    if not ops:
        return x
    n = x.shape[0]
    if "color" in ops:
        x = x + (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5) * brightness_range
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (torch.rand(n, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean
    if "translation" in ops:
        x = _translate(x, ratio=0.125)
    if "cutout" in ops:
        x = _cutout(x, ratio=0.5)
    return x


def _translate(x: torch.Tensor, ratio: float) -> torch.Tensor:
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device)
    yy = torch.arange(h, device=x.device).view(1, h, 1) - dy  # source row of every output pixel
    xx = torch.arange(w, device=x.device).view(1, 1, w) - dx
    inside = ((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)).unsqueeze(1)
    flat = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).view(n, 1, h * w).expand(-1, x.shape[1], -1)
    moved = x.flatten(2).gather(2, flat).view_as(x)
    return moved * inside.to(x.dtype)


def _cutout(x: torch.Tensor, ratio: float) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    # The square is centred at (cy, cx) and may reach over the border, as in the reference code.
    top, left = cy - ch // 2, cx - cw // 2
    yy = torch.arange(h, device=x.device).view(1, h, 1)
    xx = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (yy >= top) & (yy < top + ch) & (xx >= left) & (xx < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)
