"""The dcgan family: both presets' published networks and defaults, ranges, and that it learns."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
import torch
from torch import nn

from pipeline_lib.core.errors import InputError
from pipeline_lib.models import build_model
from pipeline_lib.models.layers import to_signed

from helpers.images import ellipse_batch
from helpers.workflow import REPO

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"width": 8, "latent_dim": 16, "batch_size": 8}


@pytest.mark.parametrize("preset", ["kazuhiro", "han"])
@pytest.mark.parametrize("size", [32, 64])
def test_sample_shape_and_range(preset, size):
    torch.manual_seed(0)
    model = build_model("dcgan", size, {**TINY, "preset": preset})
    samples = model.sample(6, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (6, 1, size, size)
    assert samples.dtype == torch.float32
    assert samples.min() >= 0
    assert samples.max() <= 1
    assert samples.std() > 0  # not a constant image


def test_han_generator_has_no_tanh_and_samples_are_clamped():
    torch.manual_seed(0)
    model = build_model("dcgan", 32, {**TINY, "preset": "han"})
    assert not any(isinstance(m, nn.Tanh) for m in model.generator.modules())
    last_conv = model.generator.net[-1]
    with torch.no_grad():
        last_conv.bias.fill_(5.0)  # raw output far above the [-1, 1] range
    model.eval()
    raw = model.generator(model.latent(4))
    assert raw.max() > 1
    samples = model.sample(4)
    assert samples.min() >= 0
    assert samples.max() <= 1


def test_kazuhiro_network_at_64_px_is_the_published_one():
    """Seed 004: FC, then 4 fractionally strided 5x5 convolutions 256-128-64-32 (-> 1), BN + ReLU, tanh."""
    model = build_model("dcgan", 64, {})
    g = model.generator
    assert g.project.in_features == 100
    assert g.c0 == 256
    assert g.project.out_features == 256 * 4 * 4
    deconvs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(d.in_channels, d.out_channels) for d in deconvs] == [(256, 128), (128, 64), (64, 32), (32, 1)]
    assert all(d.kernel_size == (5, 5) for d in deconvs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g.modules()) == 4  # projection + 3 hidden layers
    assert isinstance(g.net[-1], nn.Tanh)
    convs = [m for m in model.discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4
    assert all(c.kernel_size == (5, 5) for c in convs)
    # LeakyReLU 0.2 everywhere and batch norm in every layer but the output
    acts = [m for m in model.discriminator.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 4
    assert all(a.negative_slope == 0.2 for a in acts)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.discriminator.modules()) == 4


def test_han_network_uses_4x4_filters_half_widths_and_elu():
    model = build_model("dcgan", 64, {"preset": "han"})
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert all(c.kernel_size == (4, 4) for c in convs)
    d_convs = [m for m in model.discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in d_convs] == [32, 64, 128, 256]  # half of DCGAN's 64-128-256-512
    assert sum(isinstance(m, nn.ELU) for m in model.discriminator.modules()) == 4
    assert not any(isinstance(m, nn.LeakyReLU) for m in model.discriminator.modules())
    # Radford et al.: no batch norm on the discriminator's input layer
    assert not isinstance(model.discriminator.features[0][1], nn.BatchNorm2d)


def test_depth_follows_image_size():
    for size, stages in [(32, 3), (64, 4), (128, 5)]:
        model = build_model("dcgan", size, TINY)
        deconvs = [m for m in model.generator.modules() if isinstance(m, nn.ConvTranspose2d)]
        assert len(deconvs) == stages
        assert model.discriminate(torch.zeros(2, 1, size, size), None).shape == (2,)


@pytest.mark.parametrize("family", ["dcgan", "wgan"])
def test_han_preset_keeps_four_stages_at_128_px(family):
    """Han et al. use "the same DCGAN architecture" at 128 px: four stages from an 8 x 8 projection."""
    preset = yaml.safe_load((REPO / "presets" / "han_2018.yaml").read_text())
    block = preset["models"][f"{family}_t1_128"]
    model = build_model(family, 128, {**TINY, "stages": block["stages"]})
    g = model.generator
    deconvs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(deconvs) == 4
    assert g.project.out_features == g.c0 * 8 * 8
    downs = [m for m in model.discriminator.features.modules() if isinstance(m, nn.Conv2d)]
    assert len(downs) == 4
    assert model.discriminator.head.in_features == TINY["width"] * 8 * 8 * 8
    assert model.sample(2).shape == (2, 1, 128, 128)
    assert model.discriminate(torch.zeros(2, 1, 128, 128), None).shape == (2,)


def test_stages_that_cannot_reach_the_image_size_are_rejected():
    with pytest.raises(InputError, match="stages: image_size 32 cannot be reached with 6 x2 stages"):
        build_model("dcgan", 32, {**TINY, "stages": 6})
    with pytest.raises(InputError, match="stages must be an integer"):
        build_model("dcgan", 64, {**TINY, "stages": 0})


def test_published_defaults():
    from pipeline_lib.models.families.dcgan import DCGAN

    assert DCGAN.DEFAULTS == {"preset": "kazuhiro", "latent_dim": 100, "width": 32, "kernel_size": 5,
                              "lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "batch_size": 128,
                              "stages": None, "diffaugment": None, "r1_gamma": 0.0}  # small-cohort aids, off as published
    han = build_model("dcgan", 64, {"preset": "han"}).hparams
    assert han["kernel_size"] == 4
    assert han["batch_size"] == 64
    assert han["lr"] == 2e-4
    # a config's own value beats the preset's
    assert build_model("dcgan", 64, {"preset": "han", "batch_size": 8}).hparams["batch_size"] == 8
    model = build_model("dcgan", 32, TINY)
    model.configure_optimizers()
    opt = model.optimizers["generator"]
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["lr"] == 2e-4
    assert opt.param_groups[0]["betas"] == (0.5, 0.999)


def test_uniform_latent_in_minus_one_one():
    model = build_model("dcgan", 32, TINY)
    z = model.latent(2000, generator=torch.Generator().manual_seed(0))
    assert z.min() >= -1
    assert z.max() <= 1
    assert z.min() < -0.99
    assert z.max() > 0.99


def test_unknown_preset_is_rejected():
    with pytest.raises(InputError, match="preset 'radford'"):
        build_model("dcgan", 32, {"preset": "radford"})


def score_gap(model, real: torch.Tensor) -> float:
    """Mean discriminator logit on real images minus that on fresh fakes (training-mode batch norm)."""
    model.train()
    with torch.no_grad():
        fake = model.generate(model.latent(len(real)), None)
        return (model.discriminate(to_signed(real), None).mean()
                - model.discriminate(fake, None).mean()).item()


@pytest.mark.parametrize("preset", ["kazuhiro", "han"])
def test_discriminator_learns_to_separate_real_from_fake(preset):
    torch.manual_seed(0)
    model = build_model("dcgan", 32, {**TINY, "preset": preset})
    model.configure_optimizers()
    real = ellipse_batch(16)
    before = score_gap(model, real)
    for _ in range(30):
        losses = model.training_step(real, None)
    assert set(losses) == {"discriminator", "generator", "d_real", "d_fake"}
    assert all(np.isfinite(v) for v in losses.values())
    after = score_gap(model, real)
    assert after > 1.0
    assert after > before + 1.0
    assert losses["d_real"] > 0.5 > losses["d_fake"]


def test_generator_update_leaves_discriminator_trainable():
    model = build_model("dcgan", 32, TINY)
    model.configure_optimizers()
    before = [p.detach().clone() for p in model.discriminator.parameters()]
    model.training_step(ellipse_batch(8), None)
    assert all(p.requires_grad for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.discriminator.parameters()))
