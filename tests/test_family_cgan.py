"""The cgan family: label handling, ranges, and that samples follow the requested class."""

from __future__ import annotations

import pytest
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.models import build_model, get_family
from pipeline_lib.models.layers import to_signed

from helpers.images import two_class_ellipse_batch

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"width": 8, "latent_dim": 16, "batch_size": 8}


def centre_x(images: torch.Tensor) -> torch.Tensor:
    """Horizontal centre of mass of each image, as a fraction of the width."""
    w = images[:, 0]
    xs = torch.arange(w.shape[-1], dtype=torch.float32) / w.shape[-1]
    return (w.sum(1) * xs).sum(-1) / w.sum((1, 2))


def labels_of(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def test_is_conditional_with_dcgan_defaults():
    from pipeline_lib.models.families.dcgan import DCGAN

    cls = get_family("cgan")
    assert cls.conditional
    assert not cls.can_reconstruct
    assert cls.DEFAULTS == DCGAN.DEFAULTS


@pytest.mark.parametrize("size", [32, 64])
def test_sample_shape_and_range(size):
    torch.manual_seed(0)
    model = build_model("cgan", size, TINY, n_classes=3)
    samples = model.sample(5, labels=labels_of(0, 1, 2, 2, 0), generator=torch.Generator().manual_seed(1))
    assert samples.shape == (5, 1, size, size)
    assert samples.min() >= 0
    assert samples.max() <= 1


def test_label_changes_the_image_for_the_same_noise():
    torch.manual_seed(0)
    model = build_model("cgan", 32, TINY, n_classes=2)
    a = model.sample(4, labels=labels_of(0, 0, 0, 0), generator=torch.Generator().manual_seed(3))
    b = model.sample(4, labels=labels_of(1, 1, 1, 1), generator=torch.Generator().manual_seed(3))
    c = model.sample(4, labels=labels_of(0, 0, 0, 0), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, c)
    assert not torch.allclose(a, b)


def test_bad_labels_are_rejected():
    model = build_model("cgan", 32, TINY, n_classes=2)
    model.configure_optimizers()
    x = torch.rand(2, 1, 32, 32)
    with pytest.raises(InputError, match="labels are required"):
        model.sample(2)
    with pytest.raises(InputError, match=r"\[0, 2\)"):
        model.sample(2, labels=labels_of(0, 2))
    with pytest.raises(InputError, match="2 integer class indices"):
        model.sample(2, labels=labels_of(0))
    with pytest.raises(InputError, match="labels are required"):
        model.training_step(x, None)
    with pytest.raises(InputError, match="n_classes"):
        build_model("cgan", 32, TINY, n_classes=0)


def test_training_makes_samples_follow_the_requested_class():
    """Trained on left/right blobs, class-0 samples lie left of class-1 samples drawn from the same noise."""
    torch.manual_seed(0)
    model = build_model("cgan", 32, {**TINY, "batch_size": 16}, n_classes=2)
    model.configure_optimizers()
    images, labels = two_class_ellipse_batch(32)
    n = 32
    untrained = (centre_x(model.sample(n, labels=torch.ones(n, dtype=torch.long),
                                       generator=torch.Generator().manual_seed(1)))
                 - centre_x(model.sample(n, labels=torch.zeros(n, dtype=torch.long),
                                         generator=torch.Generator().manual_seed(1)))).mean()
    for step in range(150):
        half = slice(0, 16) if step % 2 else slice(16, 32)
        losses = model.training_step(images[half], labels[half])
    assert set(losses) == {"discriminator", "generator", "d_real", "d_fake"}
    left = model.sample(n, labels=torch.zeros(n, dtype=torch.long), generator=torch.Generator().manual_seed(1))
    right = model.sample(n, labels=torch.ones(n, dtype=torch.long), generator=torch.Generator().manual_seed(1))
    shift = centre_x(right) - centre_x(left)
    assert abs(untrained) < 0.02
    assert shift.mean() > 0.04
    assert (shift > 0).float().mean() >= 0.9

    # The discriminator uses the label: real images score higher with their own class than with the other.
    model.train()
    with torch.no_grad():
        matched = model.discriminate(to_signed(images), labels).mean()
        swapped = model.discriminate(to_signed(images), 1 - labels).mean()
    assert matched > swapped + 1.0


def test_label_maps_are_learned_with_the_discriminator():
    """The discriminator's per-class input maps are trained, not frozen at their initial values."""
    torch.manual_seed(0)
    model = build_model("cgan", 32, {"width": 8, "latent_dim": 16, "batch_size": 8}, n_classes=2)
    model.configure_optimizers()
    before = model.label_maps.weight.detach().clone()
    images = torch.rand(8, 1, 32, 32)
    labels = torch.tensor([0, 1] * 4)
    for _ in range(3):
        model.training_step(images, labels)
    assert not torch.equal(model.label_maps.weight, before)
