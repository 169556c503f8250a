"""The ddpm family: published defaults, the DDPM loss, DDIM sampling, class conditioning with guidance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.models import build_model
from pipeline_lib.models.sampling import draw_samples
from pipeline_lib.models.training import load_trained_model, train_model

from helpers.models import TINY, family_images

SIZE = 32


def tiny(**extra):
    return {**TINY["ddpm"], **extra}


def test_published_defaults():
    model = build_model("ddpm", 64, {})
    h = model.hparams
    assert h["unet_channels"] == [128, 256, 256]
    assert h["attention_levels"] == [False, True, True]
    assert h["num_res_blocks"] == 1
    assert h["num_head_channels"] == 256
    assert (h["num_train_timesteps"], h["beta_start"], h["beta_end"]) == (1000, 1e-4, 0.02)
    assert (h["lr"], h["batch_size"]) == (2.5e-5, 64)
    assert (h["class_dropout"], h["guidance_scale"]) == (0.15, 4.0)
    ddpm, ddim = model.denoiser.schedulers
    assert ddpm.num_train_timesteps == 1000
    torch.testing.assert_close(ddpm.betas[[0, -1]], torch.tensor([1e-4, 0.02]))


def test_loss_is_the_mse_of_the_predicted_noise():
    """With the UNet replaced by one that returns its input's noise exactly, the loss is 0."""
    torch.manual_seed(0)
    model = build_model("ddpm", SIZE, tiny())
    ddpm, _ = model.denoiser.schedulers
    x0 = torch.rand(4, 1, SIZE, SIZE) * 2 - 1
    torch.manual_seed(1)
    noise = torch.randn_like(x0)
    t = torch.randint(0, ddpm.num_train_timesteps, (4,)).long()
    expected_input = ddpm.add_noise(x0, noise, t)

    class Oracle(torch.nn.Module):
        def forward(self, x, timesteps, class_labels=None):
            torch.testing.assert_close(x, expected_input)
            torch.testing.assert_close(timesteps, t)
            return noise

    model.denoiser.unet = Oracle()
    torch.manual_seed(1)
    assert model.denoiser.loss(x0, None).item() == 0.0


def test_ddim_with_a_perfect_noise_oracle_recovers_the_image():
    """If the UNet predicted the true noise of x_t = sqrt(a) x0 + sqrt(1 - a) eps, deterministic
    DDIM lands on x0 in any number of steps (Song et al., eq. 12 with sigma = 0)."""
    model = build_model("ddpm", SIZE, tiny(ddim_steps=7))
    ddpm, _ = model.denoiser.schedulers
    x0 = torch.rand(2, 1, SIZE, SIZE) * 1.6 - 0.8

    class Oracle(torch.nn.Module):
        def forward(self, x, timesteps, class_labels=None):
            a = ddpm.alphas_cumprod[timesteps[0]]
            return (x - a.sqrt() * x0) / (1 - a).sqrt()

    model.denoiser.unet = Oracle()
    out = model.denoiser.sample((2, 1, SIZE, SIZE), None, torch.Generator().manual_seed(0), torch.device("cpu"))
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


@pytest.mark.parametrize("steps", [5, 7, 300])
def test_every_ddim_call_tells_the_unet_the_noise_level_the_sample_is_at(steps):
    """A noise model that is right only for the t it is told: with x0 = 0, x_t = sqrt(1 - a_t) eps,
    so the sample's spread shows its real noise level. The spread must match the told t at every
    call. (MONAI's own step takes the previous level as t - T // N while its timesteps are spaced by
    linspace: for N = 5 the last call is told t = 0 with the sample still at level 50, spread 0.17;
    for N = 300, at level 102.)"""
    model = build_model("ddpm", SIZE, tiny(ddim_steps=steps))
    ddpm, _ = model.denoiser.schedulers
    seen = []

    class NoiseOfToldLevel(torch.nn.Module):
        def forward(self, x, timesteps, class_labels=None):
            t = int(timesteps[0])
            seen.append((t, x.std().item(), (1 - ddpm.alphas_cumprod[t]).sqrt().item()))
            return x / (1 - ddpm.alphas_cumprod[t]).sqrt()

    model.denoiser.unet = NoiseOfToldLevel()
    model.denoiser.sample((1, 1, 128, 128), None, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert len(seen) == steps
    assert seen[0][0] == ddpm.num_train_timesteps - 1
    assert seen[-1][0] == 0
    for t, spread, expected in seen:
        assert spread == pytest.approx(expected, rel=0.03), f"told t={t}: spread {spread:.4f}, level's {expected:.4f}"


def test_sampling_is_seeded_and_steps_configurable():
    torch.manual_seed(0)
    model = build_model("ddpm", SIZE, tiny())
    a = model.sample(3, generator=torch.Generator().manual_seed(2))
    b = model.sample(3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    calls = []
    model.denoiser.unet.register_forward_hook(lambda *args: calls.append(1))
    model.sample(2, generator=torch.Generator().manual_seed(2))
    assert len(calls) == 4  # ddim_steps
    calls.clear()
    model.denoiser.sample((2, 1, SIZE, SIZE), None, None, model.device, steps=9)
    assert len(calls) == 9


def test_classifier_free_guidance_combines_class_and_no_class_predictions():
    torch.manual_seed(0)
    model = build_model("ddpm", SIZE, tiny(guidance_scale=3.0), n_classes=2)
    assert model.conditional
    assert model.denoiser.unet.num_class_embeds == 3
    x = torch.randn(2, 1, SIZE, SIZE)
    labels = torch.tensor([0, 1])
    steps = torch.full((2,), 10)
    with torch.no_grad():
        eps_class = model.denoiser.unet(x=x, timesteps=steps, class_labels=labels)
        eps_none = model.denoiser.unet(x=x, timesteps=steps, class_labels=torch.full((2,), 2))
        guided = model.denoiser.predict_noise(x, 10, labels)
    torch.testing.assert_close(guided, eps_none + 3.0 * (eps_class - eps_none), rtol=1e-4, atol=1e-5)


def test_class_dropout_replaces_labels_by_the_no_class_token():
    model = build_model("ddpm", SIZE, tiny(class_dropout=0.5), n_classes=2)
    torch.manual_seed(0)
    labels = torch.zeros(4000, dtype=torch.long)
    dropped = model.denoiser.training_labels(labels, 4000, "cpu")
    assert set(dropped.tolist()) == {0, 2}
    assert (dropped == 2).float().mean().item() == pytest.approx(0.5, abs=0.03)


def test_conditional_training_and_sampling_through_the_trainer(tmp_path):
    images, labels = family_images()
    block = {"family": "ddpm", **tiny(), "budget": {"steps": 3}, "seed": 1, "condition_on": "label"}
    train_model("m", block, images, labels, tmp_path / "m.pt", tmp_path / "m.csv", tmp_path / "ck",
                n_classes=2, class_names=["left", "right"], device="cpu")
    model, summary = load_trained_model(tmp_path / "m.pt", device="cpu")
    assert model.conditional
    assert summary["class_names"] == ["left", "right"]
    out = draw_samples(model, 4, seed=0, labels=np.array([0, 1, 1, 0]))
    assert out.shape == (4, SIZE, SIZE)
    assert 0 <= out.min()
    assert out.max() <= 1
    with pytest.raises(InputError, match="class indices"):
        model.sample(2, labels=torch.tensor([0, 5]))


def test_bad_architectures_are_clear_errors():
    with pytest.raises(InputError, match="norm_num_groups"):
        build_model("ddpm", SIZE, tiny(unet_channels=[12, 16]))
    with pytest.raises(InputError, match="attention_levels"):
        build_model("ddpm", SIZE, tiny(attention_levels=[False]))
    with pytest.raises(InputError, match="ddim_steps"):
        build_model("ddpm", SIZE, tiny(ddim_steps=0))
    with pytest.raises(InputError, match="unet_chanels"):
        build_model("ddpm", SIZE, tiny(unet_chanels=[8]))
