"""Loss pieces shared by several families: the Gaussian latent (reparameterisation and KL to the
standard normal), the WGAN-GP gradient penalty and the R1 penalty."""

from __future__ import annotations

from typing import Callable

import torch


def reparameterise(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + eps * exp(logvar / 2), eps ~ N(0, I) (Kingma and Welling 2014)."""
    return mu + torch.randn_like(mu) * (0.5 * logvar).exp()


def kl_per_sample(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) of every sample, summed over latent dimensions, in float32."""
    mu, logvar = mu.float(), logvar.float()
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """:func:`kl_per_sample`, mean over the batch."""
    return kl_per_sample(mu, logvar).mean()


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """E[(||grad_x critic(x_hat)|| - 1)^2] at random points x_hat between real and fake images
    (Gulrajani et al. 2017). The mixing weights are drawn on the CPU, so a seed gives the same
    penalty on any device; ``real`` may be images (N, C, H, W) or volumes (N, C, D, H, W). Under
    AMP (``scaler``), the scaled score is differentiated so small fp16 gradients survive, then
    unscaled."""
    eps = torch.rand(len(real), *[1] * (real.ndim - 1), device="cpu").to(real.device)
    mixed = (eps * real.float() + (1 - eps) * fake.float()).requires_grad_(True)
    score = critic(mixed).sum()
    if scaler is not None:
        (grad,) = torch.autograd.grad(scaler.scale(score), mixed, create_graph=True)
        grad = grad.float() / scaler.get_scale()
    else:
        (grad,) = torch.autograd.grad(score, mixed, create_graph=True)
    return (grad.float().flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def r1_penalty(scores: torch.Tensor, real: torch.Tensor, scaler: torch.amp.GradScaler | None = None,
               input_scale: float = 1.0) -> torch.Tensor:
    """E[||grad_y D(y)||^2] over real images y on the [-1, 1] scale (Mescheder et al. 2018, "Which
    training methods for GANs do actually converge?"; StyleGAN2's gamma is defined on that scale);
    the loss adds gamma / 2 times it.

    ``real`` is the tensor the gradient is taken with respect to, with ``requires_grad``: the
    un-augmented real batch, with any differentiable augmentation applied between it and the
    scores, so the penalty is taken through the augmentation (StyleGAN2-ADA). ``input_scale`` is
    d real / d y: 1 for a batch on the [-1, 1] scale, 0.5 for one on the [0, 1] scale (whose
    gradients are twice, and squared norms four times, those on [-1, 1]). Under AMP the scaled
    scores are differentiated so small fp16 gradients survive, then unscaled."""
    total = scores.float().sum()
    if scaler is not None:
        (grad,) = torch.autograd.grad(scaler.scale(total), real, create_graph=True)
        grad = grad.float() / scaler.get_scale()
    else:
        (grad,) = torch.autograd.grad(total, real, create_graph=True)
    return (grad.float() * input_scale).pow(2).flatten(1).sum(1).mean()
