"""On-the-fly augmentation of the real training batch, for every family (``augment`` in a model block).

Each batch the trainer draws is changed before the family's ``training_step`` sees it:

* ``flip_lr``: each image is mirrored along its horizontal axis with this probability (an exact
  mirror, no resampling). In the slices' display orientation the horizontal axis is the patient's
  left-right for axial and coronal slices; for sagittal slices it is anterior-posterior, so the
  trainer rejects the key there (``check_flip_axis``).
* a small random affine, each image its own: a rotation drawn uniformly in ``±rotate_deg`` degrees
  about the image centre, a zoom factor in ``[1 - scale, 1 + scale]`` and a shift in
  ``±translate_px`` pixels along each axis, resampled bilinearly with ``affine_grid`` /
  ``grid_sample`` and zero padding (outside the image is background). Bilinear weights are convex,
  so values stay in [0, 1] (clamped against rounding).

The random draws come from the augmenter's own CPU generator, seeded from the run's seed, and a
fixed number of them per batch, so the draws depend on the config and the seed only (the same on
every device; the resampling's rounding may differ between CPU and GPU as any float computation)
and the batch order is that of a run without augmentation. Its state is part of the
checkpoint: a resumed run is identical to an uninterrupted one. Nothing else is augmented:
validation batches, snapshots and the cheap FID's real slices (``models/monitor.py``) read the
images as they are, and samples never pass through here. Offline augmentation of the training set
(Kazuhiro et al., ``imaging/augmentation.py``) is a dataset setting; the GAN families' DiffAugment
(``models/layers.py``) augments what the discriminator sees, real and generated alike.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from pipeline_lib.core.errors import InputError

#: Offset of the augmenter's seed from the run's seed (the monitor uses 1_000_003 .. 3_000_003).
AUGMENT_SEED = 4_000_003


def flip_lr(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) with the images where ``flip`` (N,) is true mirrored left to right."""
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def affine_matrices(angle_deg: torch.Tensor, zoom: torch.Tensor, shift_px: torch.Tensor,
                    size: tuple[int, int]) -> torch.Tensor:
    """(N, 2, 3) matrices for ``affine_grid`` (``align_corners=False``) that rotate the content by
    ``angle_deg`` about the centre, enlarge it by ``zoom`` and move it by ``shift_px`` (N, 2)
    pixels (x to the right, y down). ``affine_grid`` maps output to input coordinates, so the
    matrix is the inverse of that motion."""
    h, w = size
    a = angle_deg * (math.pi / 180)
    cos, sin = torch.cos(a) / zoom, torch.sin(a) / zoom
    # In normalised coordinates one pixel is 2 / size.
    tx, ty = shift_px[:, 0] * (2 / w), shift_px[:, 1] * (2 / h)
    theta = torch.stack([torch.stack([cos, sin, -(cos * tx + sin * ty)], 1),
                         torch.stack([-sin, cos, -(-sin * tx + cos * ty)], 1)], 1)
    return theta


def apply_affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) resampled through ``theta`` (N, 2, 3): bilinear, zero padding, in [0, 1]."""
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp_(0, 1)


class BatchAugmenter:
    """Flips and a random affine of training batches; its generator's state goes into the checkpoint."""

    def __init__(self, settings: Mapping[str, float], seed: int):
        self.settings = dict(settings)
        self.flip_p = float(settings.get("flip_lr", 0))
        self.rotate_deg = float(settings.get("rotate_deg", 0))
        self.translate_px = float(settings.get("translate_px", 0))
        self.scale = float(settings.get("scale", 0))
        self.affine = bool(self.rotate_deg or self.translate_px or self.scale)
        self.gen = torch.Generator().manual_seed(seed + AUGMENT_SEED)

    def draw(self, n: int) -> dict[str, torch.Tensor]:
        """The random parameters of ``n`` images (CPU tensors): the same count of draws every batch."""
        params = {}
        if self.flip_p:
            params["flip"] = torch.rand(n, generator=self.gen) < self.flip_p
        if self.affine:
            u = torch.rand(n, 4, generator=self.gen) * 2 - 1  # uniform in [-1, 1)
            params["angle_deg"] = u[:, 0] * self.rotate_deg
            params["zoom"] = 1 + u[:, 1] * self.scale
            params["shift_px"] = u[:, 2:] * self.translate_px
        return params

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The augmented batch ``x`` (N, C, H, W); ``x`` itself is left as it is."""
        params = self.draw(len(x))
        if "flip" in params:
            x = flip_lr(x, params["flip"].to(x.device))
        if self.affine:
            theta = affine_matrices(params["angle_deg"], params["zoom"], params["shift_px"], tuple(x.shape[-2:]))
            x = apply_affine(x, theta)
        return x

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.gen.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.gen.set_state(state["generator"])


def check_flip_axis(settings: Mapping[str, float] | None, axes, where: str) -> None:
    """A left-right flip of sagittal slices would mirror anterior and posterior: an error."""
    if settings and settings.get("flip_lr") and "sagittal" in set(axes):
        raise InputError(f"{where}.augment.flip_lr: the training slices are sagittal, whose horizontal axis "
                         "runs anterior-posterior; a left-right flip would mirror the head front to back")
