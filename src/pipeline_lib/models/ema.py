"""Exponential moving average (EMA) of the weights a model samples with.

StyleGAN2-ADA (Karras et al. 2020) and DDPM (Ho et al. 2020) draw their samples
from a slowly moving average of the generator's weights rather than from the
weights of the last step: the average smooths out the step-to-step jitter of
adversarial and noisy training. The trainer keeps one such average per model,
of the networks the family names in ``ema_modules()`` (the generator of a GAN,
encoder and decoder of a VAE, the denoising UNet of a diffusion model).

After every training step, each tracked parameter's average moves towards the
new weights:

    shadow <- d_n * shadow + (1 - d_n) * weight,   d_n = min(decay, (1 + n) / (10 + n))

where n counts the updates of that network's average so far (n = 0 starts the
average as a copy of the weights). The ramp ``(1 + n) / (10 + n)`` is
TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` rule, which keeps
the average from being dominated by the random initial weights in short runs
(a plain decay of 0.999 would still hold 74 % of them after 300 steps). A
network a family only starts training later (the LDM's UNet in its second
stage) starts its own average then.

Batch-norm running statistics (every floating-point buffer) are averaged with
the parameters, as timm's ``ModelEmaV2`` averages the whole state dict: the
live statistics describe the activations of the live weights, not of the
averaged ones, so a batch-norm network sampled with averaged weights and live
statistics would normalise with the wrong mean and variance. Integer buffers
(batch norm's step counter) stay the live ones.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from pipeline_lib.core.errors import InputError


def ramped_decay(decay: float, n: int) -> float:
    """The decay of the n-th update (n = 0, 1, ...): ``min(decay, (1 + n) / (10 + n))``."""
    return min(decay, (1 + n) / (10 + n))


class WeightAverage:
    """EMA of the parameters of a model's ``ema_modules()``; serialisable for checkpoints."""

    def __init__(self, decay: float):
        if not 0 < decay < 1:
            raise InputError(f"ema_decay must lie strictly between 0 and 1, got {decay}")
        self.decay = float(decay)
        self.shadow: dict[str, dict[str, torch.Tensor]] = {}
        self.updates: dict[str, int] = {}

    @staticmethod
    def modules(model: nn.Module) -> dict[str, nn.Module]:
        return {name: getattr(model, name) for name in model.ema_modules()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average of every currently tracked network towards its weights."""
        for name, module in self.modules(model).items():
            params = averaged_tensors(module)
            if name not in self.shadow:
                self.shadow[name] = {k: p.detach().clone() for k, p in params.items()}
                self.updates[name] = 1
                continue
            d = ramped_decay(self.decay, self.updates[name])
            for key, shadow in self.shadow[name].items():
                shadow.mul_(d).add_(params[key].detach(), alpha=1 - d)
            self.updates[name] += 1

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Inside the block the model's averaged networks hold the averaged weights."""
        swapped = self._swap(model)
        try:
            yield
        finally:
            self._swap(model, swapped)

    @torch.no_grad()
    def _swap(self, model: nn.Module, names: list[str] | None = None) -> list[str]:
        modules = self.modules(model)
        names = [n for n in self.shadow if n in modules] if names is None else names
        for name in names:
            params = averaged_tensors(modules[name])
            for key, shadow in self.shadow[name].items():
                live = params[key].detach().clone()
                params[key].copy_(shadow)
                shadow.copy_(live)
        return names

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": dict(self.updates),
                "shadow": {n: {k: v.clone() for k, v in s.items()} for n, s in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.updates = dict(state["updates"])
        self.shadow = {n: {k: v.clone() for k, v in s.items()} for n, s in state["shadow"].items()}

    def to(self, device: torch.device) -> "WeightAverage":
        self.shadow = {n: {k: v.to(device) for k, v in s.items()} for n, s in self.shadow.items()}
        return self


@torch.no_grad()
def load_average_into(model: nn.Module, shadow: dict[str, dict[str, torch.Tensor]]) -> None:
    """Overwrite the parameters of ``model``'s averaged networks with a saved average."""
    for name, params in shadow.items():
        own = averaged_tensors(getattr(model, name))
        for key, value in params.items():
            own[key].copy_(value.to(own[key].device))


def averaged_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """What the average covers: every parameter and every floating-point buffer (batch-norm
    running mean and variance), by name."""
    tensors = dict(module.named_parameters())
    tensors.update({key: b for key, b in module.named_buffers() if b.is_floating_point()})
    return tensors
