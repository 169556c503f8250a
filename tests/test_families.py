"""Behaviour every model family must have, checked through the generic trainer.

Each family gets a tiny configuration here; family-specific checks live in
tests/test_family_<name>.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline_lib.models import build_model, builtin_families, get_family
from pipeline_lib.models.sampling import draw_samples
from pipeline_lib.models.training import load_trained_model, train_model

from helpers.models import SIZE, TINY, TINY_3D, family_images

N_CLASSES = 2


def block(family: str, steps: int, **extra) -> dict:
    conditional = get_family(family).conditional
    return {"family": family, **TINY[family], "budget": {"steps": steps}, "checkpoint_every": 5,
            "seed": 7, **({"condition_on": "label"} if conditional else {}), **extra}


def train(family: str, tmp_path, steps: int, name: str = "m", **kwargs):
    images, labels = family_images()
    conditional = get_family(family).conditional
    return train_model(name, block(family, steps), images, labels if conditional else None,
                       tmp_path / f"{name}.pt", tmp_path / f"{name}.csv", tmp_path / f"ck_{name}",
                       n_classes=N_CLASSES if conditional else 0, device="cpu", **kwargs)


def test_every_family_has_a_tiny_test_configuration():
    assert sorted(TINY | TINY_3D) == builtin_families()


@pytest.fixture(params=sorted(TINY))
def family(request):
    return request.param


def test_sample_shapes_and_range(family):
    torch.manual_seed(0)
    cls = get_family(family)
    model = build_model(family, SIZE, TINY[family], n_classes=N_CLASSES if cls.conditional else 0)
    labels = torch.tensor([0, 1, 1, 0, 1]) if cls.conditional else None
    samples = model.sample(5, labels=labels)
    assert samples.shape == (5, 1, SIZE, SIZE)
    assert samples.min() >= 0
    assert samples.max() <= 1
    if cls.can_reconstruct:
        x = torch.from_numpy(family_images(4)[0]).unsqueeze(1)
        assert model.reconstruct(x).shape == x.shape


def test_every_family_takes_a_stacked_datasets_channels(family):
    """A stacked dataset (datasets.<name>.channels) has C-channel images: every family builds with
    C = 4, takes a training step on them, samples and reconstructs four channels."""
    torch.manual_seed(0)
    cls = get_family(family)
    model = build_model(family, SIZE, dict(TINY[family]), n_classes=N_CLASSES if cls.conditional else 0, channels=4)
    model.configure_optimizers()
    x = torch.from_numpy(family_images(8)[0]).unsqueeze(1) * torch.linspace(0.4, 1.0, 4).view(1, 4, 1, 1)
    labels = torch.tensor([0, 1] * 4) if cls.conditional else None
    losses = model.training_step(x, labels)
    assert losses, losses
    assert all(np.isfinite(v) for v in losses.values()), losses
    samples = model.sample(3, labels=None if labels is None else labels[:3])
    assert samples.shape == (3, 4, SIZE, SIZE)
    assert samples.min() >= 0
    assert samples.max() <= 1
    if cls.can_reconstruct:
        assert model.reconstruct(x[:2]).shape == (2, 4, SIZE, SIZE)


def test_every_family_trains_under_bf16_autocast(family, tmp_path):
    """The GPU setting amp: bf16, run on the CPU (amp_on_cpu): every family's steps run under bf16
    autocast and its losses stay finite."""
    images, labels = family_images()
    conditional = get_family(family).conditional
    train_model("m", block(family, 6, amp="bf16", amp_on_cpu=True), images, labels if conditional else None,
                tmp_path / "m.pt", tmp_path / "m.csv", tmp_path / "ck", n_classes=N_CLASSES if conditional else 0,
                device="cpu")
    # (the trainer raises on a non-finite loss; empty cells are losses a step does not report)
    losses = pd.read_csv(tmp_path / "m.csv")
    values = losses.drop(columns="step").to_numpy(dtype=float)
    reported = values[~np.isnan(values)]
    assert len(losses) == 6, losses
    assert len(reported) >= 6, losses
    assert np.isfinite(reported).all(), losses


def test_same_seed_gives_same_samples(family, tmp_path):
    train(family, tmp_path, steps=6, name="a")
    train(family, tmp_path, steps=6, name="b")
    a, _ = load_trained_model(tmp_path / "a.pt", device="cpu")
    b, _ = load_trained_model(tmp_path / "b.pt", device="cpu")
    labels = np.array([0, 1, 0, 1]) if a.conditional else None
    np.testing.assert_array_equal(draw_samples(a, 4, seed=5, labels=labels),
                                  draw_samples(b, 4, seed=5, labels=labels))


def test_interrupted_training_resumes_exactly(family, tmp_path):
    """Stop after 7 steps (checkpoint), continue in a new call: identical to one run of 12."""
    train(family, tmp_path, steps=12, name="whole")
    assert train(family, tmp_path, steps=12, name="split", steps_this_call=7) is None
    assert not (tmp_path / "split.pt").exists()
    train(family, tmp_path, steps=12, name="split")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "split.csv"), pd.read_csv(tmp_path / "whole.csv"))
    whole = torch.load(tmp_path / "whole.pt", weights_only=True)["state_dict"]
    split = torch.load(tmp_path / "split.pt", weights_only=True)["state_dict"]
    for key in whole:
        torch.testing.assert_close(split[key], whole[key], rtol=0, atol=0)


@pytest.mark.parametrize("family", sorted(TINY))
def test_adam_optimisers_use_the_fused_kernel_on_the_cpu(family):
    """Every Adam of every family runs torch's fused kernel on the CPU (one pass per parameter
    instead of about ten); RMSprop (wgan) has no fused kernel and keeps the default."""
    model = build_model(family, SIZE, dict(TINY[family]), n_classes=N_CLASSES if get_family(family).conditional else 0)
    model.configure_optimizers()
    assert model.optimizers, f"{family} created no optimiser"
    for opt in model.optimizers.values():
        if isinstance(opt, torch.optim.Adam):
            assert opt.defaults["fused"] is True
        else:
            assert family == "wgan"
            assert isinstance(opt, torch.optim.RMSprop)
