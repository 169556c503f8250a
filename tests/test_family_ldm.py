"""The ldm family: two stages in one model, exact resume across the boundary, the latent scale, EMA."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.models import build_model
from pipeline_lib.models.training import load_trained_model, train_model

from helpers.models import TINY, family_images

SIZE = 32
STAGE_ONE = TINY["ldm"]["autoencoder_steps"]  # 4


def block(steps: int = 8, **extra) -> dict:
    return {"family": "ldm", **TINY["ldm"], "budget": {"steps": steps}, "checkpoint_every": 3, "seed": 5, **extra}


def train(tmp_path, name, b, **kwargs):
    return train_model(name, b, family_images()[0], None, tmp_path / f"{name}.pt", tmp_path / f"{name}.csv",
                       tmp_path / f"ck_{name}", device="cpu", **kwargs)


def test_published_defaults():
    h = build_model("ldm", 64, {"perceptual": {"backbone": "none"}}).hparams
    assert h["ae_channels"] == [128, 128, 256]
    assert h["latent_channels"] == 3
    assert (h["kl_weight"], h["adversarial_weight"], h["perceptual"]["weight"]) == (1e-6, 0.01, 0.001)
    assert (h["ae_lr"], h["disc_lr"], h["lr"], h["batch_size"]) == (1e-4, 5e-4, 1e-4, 64)
    assert h["unet_channels"] == [128, 256, 512]
    assert h["num_head_channels"] == [0, 256, 512]
    assert (h["beta_start"], h["beta_end"]) == (0.0015, 0.0195)


@pytest.mark.parametrize("stop", [2, STAGE_ONE, STAGE_ONE + 1])
def test_resume_from_either_stage_or_the_boundary_is_exact(tmp_path, stop):
    """Interrupted inside stage 1, exactly at the boundary, or inside stage 2: the resumed run's
    losses, weights and averaged weights equal an uninterrupted run's."""
    b = block(ema_decay=0.9)
    train(tmp_path, "whole", b)
    assert train(tmp_path, "split", b, steps_this_call=stop) is None
    train(tmp_path, "split", b)
    whole, split = pd.read_csv(tmp_path / "whole.csv"), pd.read_csv(tmp_path / "split.csv")
    pd.testing.assert_frame_equal(split, whole)
    assert list(whole["stage"]) == [1.0] * STAGE_ONE + [2.0] * 4
    a = torch.load(tmp_path / "whole.pt", weights_only=True)
    c = torch.load(tmp_path / "split.pt", weights_only=True)
    for key in a["state_dict"]:
        torch.testing.assert_close(c["state_dict"][key], a["state_dict"][key], rtol=0, atol=0)
    for key in a["ema"]["denoiser"]:
        torch.testing.assert_close(c["ema"]["denoiser"][key], a["ema"]["denoiser"][key], rtol=0, atol=0)


def test_stages_train_their_own_networks(tmp_path):
    torch.manual_seed(0)
    model = build_model("ldm", SIZE, TINY["ldm"])
    model.configure_optimizers()
    x = torch.from_numpy(family_images(8)[0]).unsqueeze(1)
    unet_before = {k: v.clone() for k, v in model.denoiser.state_dict().items()}
    for _ in range(STAGE_ONE):
        assert model.training_step(x, None)["stage"] == 1.0
    assert all(torch.equal(v, model.denoiser.state_dict()[k]) for k, v in unet_before.items())
    assert float(model.latent_scale) == 0.0
    assert model.ema_modules() == ()
    ae_before = {k: v.clone() for k, v in model.autoencoder.state_dict().items()}
    losses = model.training_step(x, None)
    assert losses["stage"] == 2.0
    assert "diffusion" in losses
    assert all(torch.equal(v, model.autoencoder.state_dict()[k]) for k, v in ae_before.items())
    with torch.no_grad():
        z = model.autoencoder.encode_stage_2_inputs(x)
    # 1 / std of one posterior draw of the first stage-2 batch (Rombach et al.): about unit std.
    assert float(model.latent_scale) == pytest.approx(1 / z.std().item(), rel=0.2)
    assert model.ema_modules() == ("denoiser",)


def test_budget_must_reach_the_diffusion_stage(tmp_path):
    with pytest.raises(InputError, match="autoencoder_steps"):
        train(tmp_path, "m", block(steps=STAGE_ONE))


def test_snapshots_show_reconstructions_then_samples(tmp_path):
    b = block(snapshot_every=3, snapshot_images=2, validate_every=3)
    train(tmp_path, "m", b, validation=(family_images(6, seed=3)[0], None), out_snapshots=tmp_path / "s.npz",
          out_validation=tmp_path / "v.csv")
    import numpy as np

    snaps = np.load(tmp_path / "s.npz")
    assert list(snaps["steps"]) == [3, 6, 8]
    assert list(snaps["kinds"]) == ["reconstructions", "samples", "samples"]
    validation = pd.read_csv(tmp_path / "v.csv")
    assert validation["reconstruction"].notna().tolist() == [True, False, False]
    assert validation["diffusion"].notna().tolist() == [False, True, True]


def test_reconstructions_and_the_inception_perceptual_term(tmp_path):
    """The offline FID Inception stem as perceptual network: it is used, kept out of the weights
    file, and rebuilt when the model is loaded."""
    b = block(steps=STAGE_ONE + 1, perceptual={"backbone": "inception", "weights": None, "weight": 0.001})
    train(tmp_path, "m", b)
    losses = pd.read_csv(tmp_path / "m.csv")
    assert losses["perceptual"].iloc[:STAGE_ONE].gt(0).all()
    saved = torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"]
    assert not any(k.startswith("perceptual_net.") for k in saved)
    model, _ = load_trained_model(tmp_path / "m.pt", device="cpu")
    assert model.perceptual_summary()["backbone"] == "inception"
    x = torch.from_numpy(family_images(4)[0]).unsqueeze(1)
    recon = model.reconstruct(x)
    assert recon.shape == x.shape
    assert torch.equal(recon, model.reconstruct(x))


def test_conditional_ldm(tmp_path):
    images, labels = family_images()
    b = {**block(steps=STAGE_ONE + 2), "condition_on": "label"}
    train_model("m", b, images, labels, tmp_path / "m.pt", tmp_path / "m.csv", tmp_path / "ck",
                n_classes=2, device="cpu")
    model, _ = load_trained_model(tmp_path / "m.pt", device="cpu")
    out = model.sample(4, labels=torch.tensor([0, 1, 0, 1]), generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 1, SIZE, SIZE)
    assert model.denoiser.unet.num_class_embeds == 3


def test_the_learning_rate_schedule_runs_once_per_stage(tmp_path, monkeypatch):
    """Warm-up and cosine restart at the diffusion stage (its optimiser starts then): over a budget
    of 10 with 4 autoencoder steps, steps 1-4 follow a schedule of 4 steps, steps 5-10 one of 6."""
    from pipeline_lib.models import training
    from pipeline_lib.models.schedule import lr_factor

    factors = []
    monkeypatch.setattr(training, "set_lr_factor", lambda optimizers, factor: factors.append(factor))
    train(tmp_path, "scheduled", block(steps=10, lr_schedule="cosine", lr_warmup_steps=2))
    expected = ([lr_factor(s, "cosine", 2, STAGE_ONE) for s in range(1, STAGE_ONE + 1)]
                + [lr_factor(s, "cosine", 2, 10 - STAGE_ONE) for s in range(1, 10 - STAGE_ONE + 1)])
    assert factors == pytest.approx(expected)
    assert factors[STAGE_ONE] == pytest.approx(0.5), "the diffusion stage starts its own warm-up"
