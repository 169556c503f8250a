"""Conditional VAE (Ballesteros Ramirez §5): shapes, published defaults, loss, and class conditioning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.models import build_model, get_family
from pipeline_lib.models.families.cvae import log_cosh

from helpers.images import two_class_ellipse_batch

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"hidden_sizes": [64], "latent_dim": 8, "batch_size": 8, "lr": 1e-3}


def tiny(size: int = 32, **extra):
    torch.manual_seed(0)
    model = build_model("cvae", size, {**TINY, **extra}, n_classes=2)
    model.configure_optimizers()
    return model


def train(model, images, labels, steps: int, batch: int = 8) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        idx = torch.randperm(len(images), generator=gen)[:batch]
        losses.append(model.training_step(images[idx], labels[idx]))
    return losses


def left_minus_right(images: torch.Tensor) -> torch.Tensor:
    half = images.shape[-1] // 2
    return images[..., :half].mean((1, 2, 3)) - images[..., half:].mean((1, 2, 3))


def test_published_defaults():
    d = get_family("cvae").DEFAULTS
    assert d["latent_dim"] == 256
    assert d["lr"] == 3e-4
    assert d["batch_size"] == 8
    assert d["reconstruction"] == "logcosh"
    cls = get_family("cvae")
    assert cls.conditional
    assert cls.can_reconstruct


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_and_range(size):
    model = tiny(size)
    labels = torch.tensor([0, 1, 1, 0, 1])
    samples = model.sample(5, labels=labels, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 1, size, size)
    assert samples.min() >= 0
    assert samples.max() <= 1
    x = torch.rand(3, 1, size, size)
    assert model.reconstruct(x).shape == x.shape
    assert model.reconstruct(x, labels=torch.tensor([0, 1, 0])).shape == x.shape
    # The encoder sees the flattened image plus the one-hot label; the decoder latent plus label.
    assert model.encoder.body[0].in_features == size * size + 2
    assert model.decoder.body[0].in_features == TINY["latent_dim"] + 2


def test_bad_labels_and_configuration_are_clear_errors():
    with pytest.raises(InputError, match="condition_on"):
        build_model("cvae", 32, TINY, n_classes=0)
    with pytest.raises(InputError, match="reconstruction"):
        build_model("cvae", 32, {**TINY, "reconstruction": "l1"}, n_classes=2)
    model = tiny()
    x = torch.rand(4, 1, 32, 32)
    with pytest.raises(InputError, match="label"):
        model.training_step(x, None)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        model.sample(2, labels=torch.tensor([0, 2]))
    with pytest.raises(InputError, match="3 labels given for 4 images"):
        model.training_step(x, torch.tensor([0, 1, 0]))


def test_log_cosh_is_stable_and_below_half_squared_error():
    d = torch.linspace(-5, 5, 101, dtype=torch.float64)
    torch.testing.assert_close(log_cosh(d), torch.log(torch.cosh(d)))
    assert torch.isfinite(log_cosh(torch.tensor([1e4, -1e4]))).all()
    assert (log_cosh(d) <= d**2 / 2 + 1e-12).all()
    # Scaled form log(cosh(a d)) / a of Chen et al.
    torch.testing.assert_close(log_cosh(d, alpha=3.0), torch.log(torch.cosh(3 * d)) / 3)


@pytest.mark.parametrize("reconstruction", ["logcosh", "mse"])
def test_loss_decreases_on_a_fixed_batch(reconstruction):
    images, labels = two_class_ellipse_batch(8, jitter=0)
    model = tiny(reconstruction=reconstruction)
    losses = [model.training_step(images, labels)["loss"] for _ in range(40)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_logcosh_and_mse_are_different_losses():
    images, labels = two_class_ellipse_batch(8, jitter=0)
    logcosh = tiny(reconstruction="logcosh").training_step(images, labels)["reconstruction"]
    mse = tiny(reconstruction="mse").training_step(images, labels)["reconstruction"]
    # Same initial network: log cosh(d) < d^2 / 2 for every nonzero pixel error.
    assert logcosh < 0.5 * mse


def test_samples_follow_the_requested_class():
    """Same latent noise, class 0 vs class 1: the bright blob moves left vs right."""
    images, labels = two_class_ellipse_batch(32, jitter=0)
    model = tiny()
    zeros, ones = torch.zeros(16, dtype=torch.long), torch.ones(16, dtype=torch.long)

    def gap():
        s0 = model.sample(16, labels=zeros, generator=torch.Generator().manual_seed(1))
        s1 = model.sample(16, labels=ones, generator=torch.Generator().manual_seed(1))
        return left_minus_right(s0) - left_minus_right(s1)

    assert gap().abs().mean() < 0.01  # untrained: the label barely matters
    train(model, images, labels, steps=300)
    after = gap()
    assert (after > 0.01).all(), after

    # Without labels, reconstruction picks the class that explains the image best: the true one.
    by_inference = model.reconstruct(images)
    with_truth = model.reconstruct(images, labels=labels)
    same = (by_inference == with_truth).flatten(1).all(1).float().mean()
    assert same >= 0.9
    # Sampling without labels cycles through the classes.
    unlabeled = model.sample(4, generator=torch.Generator().manual_seed(1))
    alternating = model.sample(4, labels=torch.tensor([0, 1, 0, 1]), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(unlabeled, alternating, rtol=0, atol=0)
