"""IntroVAE family: published defaults, architecture sizing, loss composition, gradient routing, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline_lib.models import build_model

from helpers.images import ellipse_batch
from pipeline_lib.models.families.intro_vae import IntroVAE, stage_widths

pytestmark = pytest.mark.usefixtures("one_thread_no_denormals")

TINY = {"width": 8, "max_width": 32, "latent_dim": 16, "batch_size": 8, "lr": 1e-3}


def tiny_model(size: int = 32, **overrides) -> IntroVAE:
    model = build_model("intro_vae", size, {**TINY, **overrides})
    model.configure_optimizers()
    return model


def test_defaults_are_the_published_values():
    d = IntroVAE.DEFAULTS
    assert (d["m"], d["latent_dim"], d["alpha"], d["beta"]) == (110.0, 256, 0.25, 0.5)
    assert (d["lr"], d["batch_size"], d["recon_reference_size"]) == (2e-4, 8, 128)
    assert IntroVAE.can_reconstruct


@pytest.mark.parametrize("size", [32, 64, 128])
def test_number_of_stages_follows_image_size(size):
    model = build_model("intro_vae", size, {"width": 4, "max_width": 8, "latent_dim": 8})
    pools = [m for m in model.encoder.modules() if isinstance(m, nn.AvgPool2d)]
    ups = [m for m in model.decoder.modules() if isinstance(m, nn.Upsample)]
    assert len(pools) == len(ups) == int(np.log2(size // 4))
    with torch.no_grad():
        features = model.encoder.features[:-1](torch.zeros(2, 1, size, size))
    assert features.shape[-2:] == (4, 4)


def test_stage_widths_double_up_to_the_maximum():
    assert stage_widths(128, 64, 512) == [64, 128, 256, 512, 512]
    assert stage_widths(32, 8, 32) == [8, 16, 32]


@pytest.mark.parametrize("size", [32, 64])
def test_sample_and_reconstruction_shapes_and_range(size):
    torch.manual_seed(0)
    model = tiny_model(size)
    samples = model.sample(3, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (3, 1, size, size)
    assert samples.min() >= 0
    assert samples.max() <= 1
    x = ellipse_batch(4, size)
    recon = model.reconstruct(x)
    assert recon.shape == x.shape
    assert recon.min() >= 0
    assert recon.max() <= 1
    mu, logvar = model.encoder(x)
    assert mu.shape == logvar.shape == (4, TINY["latent_dim"])


def test_reconstruction_loss_keeps_the_128px_scale_at_any_size():
    """A uniform error of 0.1 costs 0.01 * 128^2 whatever the image size, so m keeps its meaning."""
    for size in (32, 64):
        model = tiny_model(size)
        x = torch.zeros(2, 1, size, size)
        assert model.reconstruction_loss(x, x + 0.1).item() == pytest.approx(0.01 * 128**2, rel=1e-5)
        plain_sse = tiny_model(size, recon_reference_size=size)
        assert plain_sse.reconstruction_loss(x, x + 0.1).item() == pytest.approx(0.01 * size**2, rel=1e-5)


@pytest.mark.parametrize("m", [0.0, 110.0])
def test_encoder_loss_is_eq_8(m):
    torch.manual_seed(0)
    model = tiny_model(m=m)
    out = model.training_step(ellipse_batch(8, 32), None)
    hinge = max(m - out["kl_rec"], 0) + max(m - out["kl_fake"], 0)
    expected = out["kl_real"] + 0.25 * hinge + 0.5 * out["reconstruction"]
    assert out["encoder"] == pytest.approx(expected, rel=1e-5)
    assert set(out) == {"encoder", "generator", "reconstruction", "kl_real", "kl_rec", "kl_fake"}


def test_encoder_loss_trains_only_the_encoder_and_generator_loss_only_the_generator(monkeypatch):
    torch.manual_seed(0)
    model = tiny_model()
    seen: dict[str, dict] = {}
    original = model.optimise

    def recording_optimise(loss, optimizer, **kwargs):
        original(loss, optimizer, **kwargs)
        name = next(k for k, v in model.optimizers.items() if v is optimizer)
        seen[name] = {"encoder": [None if p.grad is None else p.grad.clone() for p in model.encoder.parameters()],
                      "decoder": [p.grad for p in model.decoder.parameters()]}

    monkeypatch.setattr(model, "optimise", recording_optimise)
    model.training_step(ellipse_batch(8, 32), None)
    assert list(seen) == ["encoder", "generator"]
    assert all(g is not None for g in seen["encoder"]["encoder"])
    assert all(g is None for g in seen["encoder"]["decoder"])  # eq. 8 left the generator alone
    assert all(g is not None for g in seen["generator"]["decoder"])
    for before, after in zip(seen["encoder"]["encoder"], seen["generator"]["encoder"]):
        torch.testing.assert_close(after, before, rtol=0, atol=0)  # eq. 9 left the encoder alone


def test_training_on_a_fixed_batch_lowers_the_reconstruction_error():
    torch.manual_seed(0)
    model = tiny_model()
    x = ellipse_batch(8, 32)
    error_before = ((model.reconstruct(x) - x) ** 2).mean().item()
    losses = [model.training_step(x, None) for _ in range(40)]
    assert all(np.isfinite(list(row.values())).all() for row in losses)
    late = np.mean([row["reconstruction"] for row in losses[-5:]])
    assert late < 0.1 * losses[0]["reconstruction"]
    error_after = ((model.reconstruct(x) - x) ** 2).mean().item()
    assert error_after < 0.5 * error_before


# -- loss forms: Huang et al.'s (default) and Ungría Hirte et al.'s equations 8-9 ------------------

def test_loss_form_defaults_to_huang_and_rejects_unknown_forms():
    from pipeline_lib.core.errors import InputError
    assert IntroVAE.DEFAULTS["loss_form"] == "huang2018"
    with pytest.raises(InputError, match="loss_form"):
        tiny_model(loss_form="eq8")


def test_eq8_9_losses_on_known_values():
    """Eq. (8): L_E = KL(E(x)) + 0.25 [m - KL(E(x'))]^+ + 0.5 L_rec; eq. (9): L_G = 0.25 KL(E(G(z))) + 0.5 L_rec.

    KL(E(x)) = 3, KL(E(x')) = 100, L_rec = 40, m = 110:
    L_E = 3 + 0.25 * 10 + 0.5 * 40 = 25.5; with KL(E(G(z))) = 100, L_G = 25 + 20 = 45.
    Huang's form counts the reconstruction's KL (say 120, hinge 0) as a second fake."""
    from pipeline_lib.models.families.intro_vae import encoder_loss, generator_loss
    t = torch.tensor
    assert encoder_loss(t(3.0), [t(100.0)], t(40.0), 110.0, 0.25, 0.5).item() == pytest.approx(25.5)
    assert generator_loss([t(100.0)], t(40.0), 0.25, 0.5).item() == pytest.approx(45.0)
    assert encoder_loss(t(3.0), [t(105.0), t(100.0)], t(40.0), 110.0, 0.25, 0.5).item() == pytest.approx(
        3 + 0.25 * (5 + 10) + 20)
    assert generator_loss([t(120.0), t(100.0)], t(40.0), 0.25, 0.5).item() == pytest.approx(0.25 * 220 + 20)
    assert encoder_loss(t(3.0), [t(200.0)], t(40.0), 110.0, 0.25, 0.5).item() == pytest.approx(23.0)  # hinge off


def test_real_kl_weight_reads_the_seed_literally():
    """Seed 001's words scale every L_KL term of eq. (8) by 0.25, the real image's too:
    KL(E(x)) = 3, KL(E(x')) = 100, L_rec = 40, m = 110 give 0.25 * 3 + 0.25 * 10 + 0.5 * 40 = 23.25,
    against 25.5 with Huang et al.'s weight 1 on the real KL (the default)."""
    from pipeline_lib.models.families.intro_vae import encoder_loss
    t = torch.tensor
    assert encoder_loss(t(3.0), [t(100.0)], t(40.0), 110.0, 0.25, 0.5, 0.25).item() == pytest.approx(23.25)
    assert IntroVAE.DEFAULTS["real_kl_weight"] == 1.0


def test_real_kl_weight_reaches_the_training_step():
    """The logged encoder loss follows eq. (8) with the configured weight on the real image's KL."""
    torch.manual_seed(0)
    model = tiny_model(loss_form="eq8_9", real_kl_weight=0.25)
    out = model.training_step(ellipse_batch(8, 32), None)
    expected = 0.25 * out["kl_real"] + 0.25 * max(110.0 - out["kl_fake"], 0) + 0.5 * out["reconstruction"]
    assert out["encoder"] == pytest.approx(expected, rel=1e-5)
    assert out["encoder"] != pytest.approx(expected + 0.75 * out["kl_real"], rel=1e-5)


@pytest.mark.parametrize("m", [0.0, 110.0])
def test_eq8_9_training_step_has_one_fake_term(m, monkeypatch):
    """Under eq8_9 the encoder sees two images per batch (x and G(z)), not three, and the logged
    losses obey eqs. (8)-(9) with the generator's KL measured by the updated encoder."""
    torch.manual_seed(0)
    model = tiny_model(m=m, loss_form="eq8_9")
    calls = []
    forward = model.encoder.forward
    monkeypatch.setattr(model.encoder, "forward", lambda x: calls.append(len(x)) or forward(x))
    out = model.training_step(ellipse_batch(8, 32), None)
    assert set(out) == {"encoder", "generator", "reconstruction", "kl_real", "kl_fake"}
    expected_e = out["kl_real"] + 0.25 * max(m - out["kl_fake"], 0) + 0.5 * out["reconstruction"]
    assert out["encoder"] == pytest.approx(expected_e, rel=1e-5)
    assert len(calls) == 3  # E(x), E(ng(x')) for L_E, E(x') for L_G
    huang = tiny_model(m=m)
    calls.clear()
    monkeypatch.setattr(huang.encoder, "forward", lambda x: calls.append(len(x)) or forward(x))
    huang.training_step(ellipse_batch(8, 32), None)
    assert len(calls) == 5


def test_eq8_9_form_learns_to_reconstruct():
    torch.manual_seed(0)
    model = tiny_model(loss_form="eq8_9")
    x = ellipse_batch(8, 32)
    losses = [model.training_step(x, None) for _ in range(40)]
    assert all(np.isfinite(list(row.values())).all() for row in losses)
    assert np.mean([row["reconstruction"] for row in losses[-5:]]) < 0.1 * losses[0]["reconstruction"]
