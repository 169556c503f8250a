"""StyleGAN family (Ungría Hirte et al.'s variant): defaults, architecture, AdaIN, noise, gradient penalty, learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pipeline_lib.models import build_model

from helpers.images import ellipse_batch
from pipeline_lib.models.families.stylegan import (MappingNetwork, StyleGAN, StyledLayerEpilogue, StyleGenerator,
                                          resolution_width)

pytestmark = pytest.mark.usefixtures("one_thread_no_denormals")

TINY = {"width": 16, "mapping_dim": 32, "latent_dim": 32, "batch_size": 8}


def tiny_model(size: int = 32, **overrides) -> StyleGAN:
    model = build_model("stylegan", size, {**TINY, **overrides})
    model.configure_optimizers()
    return model


def test_defaults_are_the_published_values():
    d = StyleGAN.DEFAULTS
    assert (d["latent_dim"], d["mapping_dim"], d["mapping_layers"], d["width"]) == (512, 512, 2, 512)
    assert d["lr"] == 1e-4
    assert d["gradient_penalty"] == 10.0
    assert not StyleGAN.can_reconstruct


def test_default_mapping_is_two_512_to_512_layers():
    d = StyleGAN.DEFAULTS
    mapping = MappingNetwork(d["latent_dim"], d["mapping_dim"], d["mapping_layers"])
    linears = [m for m in mapping.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 512)]


def test_widths_follow_pggan_and_weights_are_he_normal():
    assert [resolution_width(r, 512) for r in (4, 8, 16, 32, 64, 128)] == [512, 512, 512, 512, 256, 128]
    torch.manual_seed(0)
    g = StyleGenerator(1, 64, 512, 512, 2, 512)
    assert g.constant.shape == (1, 512, 4, 4)
    conv = g.blocks[1].conv2.weight  # 512 x 512 x 3 x 3
    assert conv.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.02)
    epilogues = [m for m in g.modules() if isinstance(m, StyledLayerEpilogue)]
    assert len(epilogues) == 2 * 5  # two styled, noisy layers per resolution 4 ... 64, none progressive


@pytest.mark.parametrize("size", [32, 64])
def test_sample_shapes_range_and_reproducibility(size):
    torch.manual_seed(0)
    model = tiny_model(size)
    a = model.sample(3, generator=torch.Generator().manual_seed(1))
    b = model.sample(3, generator=torch.Generator().manual_seed(1))
    c = model.sample(3, generator=torch.Generator().manual_seed(2))
    assert a.shape == (3, 1, size, size)
    assert a.min() >= 0
    assert a.max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert model.critic(a).shape == (3,)


def test_adain_sets_each_channel_mean_and_scale_from_the_style():
    torch.manual_seed(0)
    layer = StyledLayerEpilogue(channels=4, w_dim=8)
    x, w = torch.randn(2, 4, 8, 8), torch.randn(2, 8)
    out = layer(x, w, noise=torch.zeros(2, 1, 8, 8))
    scale, shift = layer.style(w).chunk(2, dim=1)
    torch.testing.assert_close(out.mean(dim=(2, 3)), shift, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False), (1 + scale).abs(), atol=1e-3, rtol=1e-3)


def test_noise_inputs_change_the_image_only_through_their_learned_scales():
    torch.manual_seed(0)
    g = tiny_model().generator
    z = torch.randn(2, TINY["latent_dim"])
    noise_a = [torch.randn(s) for s in g.noise_shapes(2)]
    noise_b = [torch.randn(s) for s in g.noise_shapes(2)]
    with torch.no_grad():
        torch.testing.assert_close(g(z, noise_a), g(z, noise_b), rtol=0, atol=0)  # scales start at 0
        for m in g.modules():
            if isinstance(m, StyledLayerEpilogue):
                m.noise_scale.fill_(0.5)
        assert (g(z, noise_a) - g(z, noise_b)).abs().max() > 1e-3


class _LinearCritic(nn.Module):
    """D(x) = k * sum(x): its input gradient has norm k * sqrt(pixels) for every sample."""

    def __init__(self, k: float):
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k * x.flatten(1).sum(1)


def test_gradient_penalty_is_the_squared_distance_of_the_gradient_norm_from_one():
    model = tiny_model()
    model.critic = _LinearCritic(0.1)
    real, fake = torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32)
    assert model.gradient_penalty(real, fake).item() == pytest.approx((0.1 * 32 - 1) ** 2, rel=1e-4)


def test_gradient_penalty_can_be_switched_off():
    torch.manual_seed(0)
    x = ellipse_batch(8, 32)
    with_gp = tiny_model().training_step(x, None)
    without = tiny_model(gradient_penalty=0.0).training_step(x, None)
    assert set(with_gp) == {"critic", "generator", "gradient_penalty", "wasserstein_estimate"}
    assert with_gp["gradient_penalty"] > 0
    assert without["gradient_penalty"] == 0.0


def test_critic_learns_to_score_real_images_above_generated_ones():
    torch.manual_seed(0)
    model = tiny_model()
    x = ellipse_batch(8, 32)

    def score_gap() -> float:
        with torch.no_grad():
            fake = model.sample(8, generator=torch.Generator().manual_seed(3))
            return (model.critic(x).mean() - model.critic(fake).mean()).item()

    gap_before = score_gap()
    losses = [model.training_step(x, None) for _ in range(30)]
    assert all(np.isfinite(list(row.values())).all() for row in losses)
    gap_after = score_gap()
    assert gap_after > 0.5
    assert gap_after > gap_before + 0.5
    assert np.mean([row["wasserstein_estimate"] for row in losses[-5:]]) > 0.5


# -- loss forms: WGAN-GP with drift (default) and Ungría Hirte et al.'s plain equations 11-12 -------

def test_eq11_12_objectives_on_known_scores():
    """The seed's D scores fakeness (D = -C). With C(x) = [1, 3] and C(G(z)) = [-2, 0]:
    eq. (11) L_D = E[D(x)] - E[D(G(z))] = -2 - 1 = -3; eq. (12) L_G = E[D(G(z))] = 1."""
    from pipeline_lib.models.families.stylegan import critic_objective, generator_objective
    c_real, c_fake = torch.tensor([1.0, 3.0]), torch.tensor([-2.0, 0.0])
    d_real, d_fake = -c_real, -c_fake
    assert critic_objective(c_real, c_fake).item() == pytest.approx((d_real.mean() - d_fake.mean()).item())
    assert critic_objective(c_real, c_fake).item() == pytest.approx(-3.0)
    assert generator_objective(c_fake).item() == pytest.approx(d_fake.mean().item()) == pytest.approx(1.0)
    # the default form's drift adds drift * E[C(x)^2] = 0.001 * 5
    assert critic_objective(c_real, c_fake, 0.001).item() == pytest.approx(-3.0 + 0.005)


class MeanCritic(nn.Module):
    """Score = w * mean pixel value, w a learnable scalar starting at 1."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.w * x.flatten(1).mean(1)


def with_mean_critic(model: StyleGAN, monkeypatch) -> StyleGAN:
    """The model with a MeanCritic and a generator that always gives images of 0.75."""
    model.critic = MeanCritic()
    model.configure_optimizers()
    constant = model.generator.constant  # keeps the generator in the graph
    monkeypatch.setattr(model, "generate", lambda n, **kw: torch.full((n, 1, 32, 32), 0.75) + 0 * constant.sum())
    return model


def test_eq11_12_training_step_reports_the_plain_equations(monkeypatch):
    """Real images of 0.25, generated ones of 0.75, critic = mean pixel: eq. (11) = 0.75 - 0.25 = 0.5
    with no penalty and no drift, eq. (12) = -C(G(z)) = -0.75; the default form adds both terms."""
    torch.manual_seed(0)
    plain = with_mean_critic(tiny_model(loss_form="eq11_12"), monkeypatch)
    assert plain.hparams["gradient_penalty"] == 0.0
    assert plain.hparams["drift"] == 0.0
    real = torch.full((4, 1, 32, 32), 0.25)
    out = plain.training_step(real, None)
    assert out["critic"] == pytest.approx(0.5)
    assert out["gradient_penalty"] == 0.0
    assert out["wasserstein_estimate"] == pytest.approx(-0.5)
    # eq. (12) is evaluated after the critic's step moved w a little (Adam, lr 1e-4)
    assert out["generator"] == pytest.approx(-0.75, abs=1e-3)
    default = with_mean_critic(tiny_model(), monkeypatch)
    out_default = default.training_step(real, None)
    # grad C = w / 1024 at each of 32 x 32 pixels, norm 1/32: penalty (1 - 1/32)^2; drift 0.001 * 0.25^2
    penalty = (1 - 1 / 32) ** 2
    assert out_default["gradient_penalty"] == pytest.approx(penalty, rel=1e-4)
    assert out_default["critic"] == pytest.approx(0.5 + 0.001 * 0.0625 + 10 * penalty, rel=1e-5)


def test_eq11_12_rejects_a_penalty_or_drift():
    from pipeline_lib.core.errors import InputError
    with pytest.raises(InputError, match="gradient_penalty"):
        tiny_model(loss_form="eq11_12", gradient_penalty=10.0)
    with pytest.raises(InputError, match="drift"):
        tiny_model(loss_form="eq11_12", drift=0.001)
    assert tiny_model(loss_form="eq11_12", drift=0).hparams["drift"] == 0.0
    with pytest.raises(InputError, match="loss_form"):
        tiny_model(loss_form="wgan")
