"""The wgan (Han et al.) and wgan_gp (Gulrajani et al.) families: constraints, schedule, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline_lib.core.errors import InputError
from pipeline_lib.models import build_model
from pipeline_lib.models.layers import to_signed

from helpers.images import ellipse_batch

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"width": 8, "latent_dim": 16, "batch_size": 8}


def critic_gap(model, real: torch.Tensor) -> float:
    """E[C(real)] - E[C(fake)] on fresh fakes: the critic's Wasserstein estimate."""
    model.train()
    with torch.no_grad():
        fake = model.generate(model.latent(len(real)), None)
        return (model.discriminate(to_signed(real), None).mean()
                - model.discriminate(fake, None).mean()).item()


@pytest.mark.parametrize("family", ["wgan", "wgan_gp"])
@pytest.mark.parametrize("size", [32, 64])
def test_sample_shape_and_range(family, size):
    torch.manual_seed(0)
    model = build_model(family, size, TINY)
    samples = model.sample(6, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (6, 1, size, size)
    assert samples.min() >= 0
    assert samples.max() <= 1
    assert samples.std() > 0


def test_wgan_published_defaults_and_optimiser():
    from pipeline_lib.models.families.wgan import WGAN

    assert WGAN.DEFAULTS == {"latent_dim": 100, "width": 32, "stages": None, "lr": 5e-5, "batch_size": 64,
                             "n_critic": 5, "clip_value": 0.01,
                             "diffaugment": None, "r1_gamma": 0.0}  # small-cohort aids, off as published
    model = build_model("wgan", 64, {})
    model.configure_optimizers()
    assert set(model.optimizers) == {"critic", "generator"}
    assert all(isinstance(o, torch.optim.RMSprop) and o.param_groups[0]["lr"] == 5e-5
               for o in model.optimizers.values())
    # Han et al.: the DCGAN architecture (4x4 filters, half widths, ELU, no tanh), no sigmoid
    convs = [m for m in model.discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    assert all(c.kernel_size == (4, 4) for c in convs)
    assert not any(isinstance(m, (nn.Sigmoid, nn.Tanh)) for m in model.modules())


def test_wgan_gp_published_defaults_and_critic_without_batch_norm():
    from pipeline_lib.models.families.wgan_gp import WGANGP

    d = WGANGP.DEFAULTS
    assert (d["gp_weight"], d["lr"], d["beta1"], d["beta2"], d["n_critic"], d["batch_size"]) == \
        (10.0, 1e-4, 0.0, 0.9, 5, 64)
    model = build_model("wgan_gp", 64, {})
    model.configure_optimizers()
    opt = model.optimizers["critic"]
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["betas"] == (0.0, 0.9)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.discriminator.modules())
    assert any(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in model.discriminator.modules())
    none = build_model("wgan_gp", 32, {**TINY, "critic_norm": "none"})
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in none.discriminator.modules())
    with pytest.raises(InputError, match="critic_norm"):
        build_model("wgan_gp", 32, {**TINY, "critic_norm": "batch"})


def test_bad_n_critic_is_rejected():
    with pytest.raises(InputError, match="n_critic"):
        build_model("wgan", 32, {**TINY, "n_critic": 0})


def test_wgan_clips_critic_weights_from_the_start():
    torch.manual_seed(0)
    model = build_model("wgan", 32, TINY)
    assert max(p.abs().max().item() for p in model.discriminator.parameters()) <= 0.01
    model.configure_optimizers()
    for _ in range(3):
        model.training_step(ellipse_batch(8), None)
    params = list(model.discriminator.parameters())
    assert max(p.abs().max().item() for p in params) <= 0.01
    assert any(p.abs().max().item() == pytest.approx(0.01) for p in params)  # clipping was active


@pytest.mark.parametrize("family", ["wgan", "wgan_gp"])
def test_generator_updates_every_n_critic_steps(family):
    torch.manual_seed(0)
    model = build_model(family, 32, {**TINY, "n_critic": 3})
    model.configure_optimizers()
    x = ellipse_batch(8)

    def generator_weights():
        return [p.detach().clone() for p in model.generator.parameters()]

    start = generator_weights()
    for _ in range(2):
        losses = model.training_step(x, None)
        assert all(torch.equal(a, b) for a, b in zip(start, model.generator.parameters()))
    losses = model.training_step(x, None)
    assert any(not torch.equal(a, b) for a, b in zip(start, model.generator.parameters()))
    assert int(model.critic_updates) == 3
    assert {"critic", "generator", "wasserstein_estimate"} <= set(losses)
    assert all(np.isfinite(v) for v in losses.values())


def test_gradient_penalty_formula():
    """A linear critic with weight norm 3 has gradient norm 3 everywhere: penalty (3 - 1)^2 = 4."""
    model = build_model("wgan_gp", 32, TINY)
    w = torch.randn(1, 1, 32, 32)
    w *= 3 / w.norm()
    model.discriminate = lambda x, labels: (x * w).sum(dim=(1, 2, 3))
    real, fake = torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32)
    assert model.gradient_penalty(real, fake, None).item() == pytest.approx(4.0, rel=1e-5)
    losses = model.critic_loss(real, fake, None)
    estimate = ((real - fake) * w).sum(dim=(1, 2, 3)).mean()
    assert losses[0].item() == pytest.approx(-estimate.item() + 10 * 4.0, rel=1e-4)


@pytest.mark.parametrize("family, min_gap", [("wgan", 0.005), ("wgan_gp", 0.5)])
def test_critic_learns_to_score_real_above_fake(family, min_gap):
    """Published learning rates; the clipped critic's scores are small, hence the smaller margin."""
    torch.manual_seed(0)
    model = build_model(family, 32, {**TINY, "batch_size": 16})
    model.configure_optimizers()
    real = ellipse_batch(16)
    before = critic_gap(model, real)
    for _ in range(40):
        losses = model.training_step(real, None)
    after = critic_gap(model, real)
    assert after > min_gap
    assert after > before + min_gap
    assert losses["wasserstein_estimate"] > 0
    assert losses["critic"] == pytest.approx(
        -losses["wasserstein_estimate"] + model.hparams.get("gp_weight", 0) * losses.get("gradient_penalty", 0),
        rel=1e-5, abs=1e-7)
