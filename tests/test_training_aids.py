"""Training aids: EMA, learning-rate schedules, DiffAugment, R1, validation, snapshots, progress.

Each is checked against what it must do, not only that it runs: the EMA against its closed
form, the schedule against the optimiser's learning rate at a known step, DiffAugment on what
the discriminator actually receives, R1 against a critic whose input gradient is known.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline_lib.core.errors import InputError
from pipeline_lib.models import build_model
from pipeline_lib.models.ema import WeightAverage, ramped_decay
from pipeline_lib.models.layers import diff_augment, diffaugment_policy
from pipeline_lib.models.losses import r1_penalty
from pipeline_lib.models.progress import ProgressLine, duration_text
from pipeline_lib.models.sampling import draw_samples
from pipeline_lib.models.schedule import lr_factor
from pipeline_lib.models.training import load_trained_model, train_model

SIZE = 32
VAE = {"family": "vae", "width": 8, "latent_dim": 16, "batch_size": 8, "lr": 1e-3, "seed": 3,
       "checkpoint_every": 5, "budget": {"steps": 12}}
DCGAN = {"family": "dcgan", "width": 8, "latent_dim": 16, "batch_size": 8, "seed": 3,
         "checkpoint_every": 5, "budget": {"steps": 4}}


def blobs(n: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    cy, cx = rng.uniform(0.3, 0.7, (2, n, 1, 1))
    return np.exp(-(((yy - cy) / 0.2) ** 2 + ((xx - cx) / 0.15) ** 2)).astype(np.float32)


def train(tmp_path, block, name="m", **kwargs):
    return train_model(name, block, blobs(), None, tmp_path / f"{name}.pt", tmp_path / f"{name}.csv",
                       tmp_path / f"ck_{name}", device="cpu", **kwargs)


# ------------------------------------------------------------------------------------------- EMA


class Holder(nn.Module):
    """A stand-in model: one averaged network with one parameter."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(1, 1, bias=False)

    def ema_modules(self):
        return ("net",)


def test_ema_equals_the_closed_form_average_of_the_weights_it_saw():
    """After updates with weights w_1..w_k the average is sum_i w_i (1 - d_i) prod_{j>i} d_j with
    d_1 = 0 (the average starts as a copy) and d_i = min(decay, i / (9 + i)) (the ramp)."""
    decay, weights = 0.6, [1.0, -2.0, 3.5, 0.25, 8.0, -1.0, 4.0, 2.0, 0.0, 5.0, 7.0, -3.0, 1.5, 6.0]
    model, average = Holder(), WeightAverage(decay)
    for w in weights:
        with torch.no_grad():
            model.net.weight.fill_(w)
        average.update(model)
    d = [0.0] + [min(decay, i / (9 + i)) for i in range(2, len(weights) + 1)]
    expected = sum(w * (1 - d[i]) * np.prod(d[i + 1:]) for i, w in enumerate(weights))
    assert [ramped_decay(decay, n) for n in range(1, len(weights))] == d[1:]
    assert d[-1] == decay, "the ramp must have reached the configured decay in this sequence"
    assert average.shadow["net"]["weight"].item() == pytest.approx(expected, rel=1e-6)
    with average.applied(model):
        assert model.net.weight.item() == pytest.approx(expected, rel=1e-6)
    assert model.net.weight.item() == weights[-1], "the trained weights come back after the block"


class NormHolder(nn.Module):
    """A stand-in model whose averaged network has batch norm."""

    def __init__(self):
        super().__init__()
        self.net = nn.BatchNorm1d(1)

    def ema_modules(self):
        return ("net",)


def test_ema_averages_batch_norm_statistics_with_the_weights():
    """The running mean is averaged like a weight (same closed form), so sampling with averaged
    weights also normalises with averaged statistics; the integer step counter stays live."""
    decay, means = 0.5, [1.0, 3.0, -2.0, 4.0]
    model, average = NormHolder(), WeightAverage(decay)
    for m in means:
        model.net.running_mean.fill_(m)
        model.net.num_batches_tracked.add_(1)
        average.update(model)
    d = [0.0] + [min(decay, i / (9 + i)) for i in range(2, len(means) + 1)]
    expected = sum(m * (1 - d[i]) * np.prod(d[i + 1:]) for i, m in enumerate(means))
    with average.applied(model):
        assert model.net.running_mean.item() == pytest.approx(expected, rel=1e-6)
        assert model.net.num_batches_tracked.item() == len(means)
    assert model.net.running_mean.item() == means[-1]


def test_samples_come_from_the_averaged_weights_by_default(tmp_path):
    block = {**VAE, "ema_decay": 0.5}
    train(tmp_path, block)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert set(payload["ema"]) == {"encoder", "decoder"}
    averaged, summary = load_trained_model(tmp_path / "m.pt", device="cpu")
    trained, _ = load_trained_model(tmp_path / "m.pt", device="cpu", averaged=False)
    decoder_weight = dict(averaged.decoder.named_parameters())["fc.weight"]
    torch.testing.assert_close(decoder_weight, payload["ema"]["decoder"]["fc.weight"], rtol=0, atol=0)
    assert not torch.equal(decoder_weight, payload["state_dict"]["decoder.fc.weight"])
    assert not np.array_equal(draw_samples(averaged, 4, seed=1), draw_samples(trained, 4, seed=1))
    assert summary["training_aids"]["sampled_with"] == "ema"

    train(tmp_path, {**block, "sample_from_ema": False}, name="live")
    assert torch.load(tmp_path / "live.pt", weights_only=True)["ema"] is None


def test_ema_run_resumes_exactly(tmp_path):
    block = {**VAE, "ema_decay": 0.8}
    train(tmp_path, block, name="whole")
    assert train(tmp_path, block, name="split", steps_this_call=7) is None
    train(tmp_path, block, name="split")
    whole = torch.load(tmp_path / "whole.pt", weights_only=True)["ema"]
    split = torch.load(tmp_path / "split.pt", weights_only=True)["ema"]
    for net in whole:
        for key in whole[net]:
            torch.testing.assert_close(split[net][key], whole[net][key], rtol=0, atol=0)


def test_ema_of_a_family_without_sampling_networks_is_rejected(tmp_path, monkeypatch):
    from pipeline_lib.models.families.vae import VAE as VaeClass

    monkeypatch.setattr(VaeClass, "EMA_MODULES", ())
    with pytest.raises(InputError, match="ema_decay"):
        train(tmp_path, {**VAE, "ema_decay": 0.9})


# ------------------------------------------------------------------------------- LR schedules


def test_lr_factor_values():
    assert lr_factor(1, "constant") == 1.0
    assert [lr_factor(s, "constant", warmup_steps=4) for s in (1, 2, 4, 5)] == [0.25, 0.5, 1.0, 1.0]
    assert lr_factor(1, "cosine", 0, 100) == pytest.approx(0.5 * (1 + np.cos(np.pi / 100)))
    assert lr_factor(50, "cosine", 0, 100) == pytest.approx(0.5)
    assert lr_factor(100, "cosine", 0, 100) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(60, "cosine", 10, 110) == pytest.approx(0.5)  # the cosine starts after the warm-up


def test_trainer_applies_the_schedule_to_every_optimiser(tmp_path):
    """Stopped after step 7 of a 3-step warm-up then cosine over 12 steps: the learning rate that the
    checkpoint holds is the one step 7 used."""
    block = {**DCGAN, "budget": {"steps": 12}, "lr_schedule": "cosine", "lr_warmup_steps": 3}
    train(tmp_path, block, steps_this_call=7)
    payload = torch.load(next((tmp_path / "ck_m").glob("*/checkpoint.pt")), weights_only=True)
    expected = 2e-4 * lr_factor(7, "cosine", 3, 12)
    for opt in payload["training"]["optimizers"].values():
        assert opt["param_groups"][0]["lr"] == pytest.approx(expected)
        assert opt["param_groups"][0]["initial_lr"] == pytest.approx(2e-4)


def test_cosine_decays_over_an_epoch_budget_converted_to_steps(tmp_path):
    """An epoch budget is the run's length in steps too: 2 epochs of 24 images in batches of 8 are
    6 steps, and the cosine runs over those 6 (the checkpoint after step 4 holds step 4's rate)."""
    train(tmp_path, {**VAE, "budget": {"epochs": 2}, "lr_schedule": "cosine"}, steps_this_call=4)
    payload = torch.load(next((tmp_path / "ck_m").glob("*/checkpoint.pt")), weights_only=True)
    assert payload["step"] == 4
    for opt in payload["training"]["optimizers"].values():
        assert opt["param_groups"][0]["lr"] == pytest.approx(1e-3 * lr_factor(4, "cosine", 0, 6))


# ------------------------------------------------------------------------------ DiffAugment, R1


def test_diffaugment_policy_is_checked():
    assert diffaugment_policy("color, translation,cutout") == ("color", "translation", "cutout")
    assert diffaugment_policy(None) == ()
    with pytest.raises(ValueError, match="rotate"):
        diffaugment_policy("rotate")
    with pytest.raises(InputError, match="diffaugment"):
        build_model("dcgan", SIZE, {"width": 8, "diffaugment": "flip"})


def test_diffaugment_operations_do_what_they_say():
    torch.manual_seed(0)
    x = torch.rand(16, 1, SIZE, SIZE) + 1  # no zeros anywhere
    cut = diff_augment(x, ("cutout",))
    zeros = (cut == 0).flatten(1).sum(1)
    assert (zeros >= (SIZE // 4) ** 2).all()
    assert (zeros <= (SIZE // 2) ** 2).all()
    assert torch.equal(cut[cut != 0], x[cut != 0]), "cutout leaves the other pixels alone"
    moved = diff_augment(x, ("translation",))
    assert ((moved == 0).flatten(1).sum(1) <= SIZE * SIZE - (SIZE - 4) ** 2).all()
    colour = diff_augment(x, ("color",), brightness_range=1.0)
    assert not torch.equal(colour, x)
    x.requires_grad_(True)
    diff_augment(x, ("color", "translation", "cutout")).sum().backward()
    assert x.grad is not None, "differentiable: the generator learns through it"
    assert x.grad.abs().sum() > 0, "differentiable: the generator learns through it"


def _discriminator_inputs(model, images):
    seen = []
    model.discriminator.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    model.configure_optimizers()
    model.training_step(images, None)
    return seen


def test_diffaugment_reaches_real_and_fake_batches_alike_and_never_the_samples():
    """With a cutout policy every batch the discriminator sees, real or generated, in its own update
    and in the generator's, has a cut-out square of exact zeros; the images the model samples do not,
    and are identical to those of the same weights without augmentation."""
    torch.manual_seed(0)
    plain = build_model("dcgan", SIZE, {"width": 8, "latent_dim": 16})
    augmented = build_model("dcgan", SIZE, {"width": 8, "latent_dim": 16, "diffaugment": "cutout"})
    augmented.load_state_dict(plain.state_dict())
    gen = torch.Generator().manual_seed(4)
    assert torch.equal(plain.sample(6, generator=gen), augmented.sample(6, generator=torch.Generator().manual_seed(4)))

    images = torch.from_numpy(blobs(8)).unsqueeze(1)
    seen = _discriminator_inputs(augmented, images)
    assert len(seen) == 3  # real and fake in the discriminator's update, fake in the generator's
    for batch in seen:
        assert ((batch == 0).flatten(1).sum(1) >= (SIZE // 4) ** 2).all()
    for batch in _discriminator_inputs(build_model("dcgan", SIZE, {"width": 8, "latent_dim": 16}), images):
        assert ((batch == 0).flatten(1).sum(1) < 4).all()


def test_r1_penalty_of_a_linear_critic_is_its_squared_weight_norm():
    w = torch.randn(1, 3 * 4 * 4)
    real = torch.randn(5, 3, 4, 4, requires_grad=True)
    scores = real.flatten(1) @ w.T
    assert r1_penalty(scores, real).item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)


def test_r1_enters_the_critic_loss_with_weight_gamma_over_two():
    """Same weights and random stream: the critic loss with R1 minus the one without is
    gamma / 2 times the logged penalty."""
    images = torch.from_numpy(blobs(8)).unsqueeze(1)
    losses = {}
    for gamma in (0.0, 10.0):
        torch.manual_seed(0)
        model = build_model("wgan_gp", SIZE, {"width": 8, "latent_dim": 16, "r1_gamma": gamma})
        model.configure_optimizers()
        torch.manual_seed(1)
        losses[gamma] = model.training_step(images, None)
    assert "r1" not in losses[0.0]
    assert losses[10.0]["r1"] > 0
    assert losses[10.0]["critic"] - losses[0.0]["critic"] == pytest.approx(5.0 * losses[10.0]["r1"], rel=1e-4)


@pytest.mark.parametrize("family", ["wgan_gp", "stylegan"])
def test_every_gan_family_without_batch_norm_takes_diffaugment_and_r1(family):
    hp = {"width": 16 if family == "stylegan" else 8, "latent_dim": 16, "diffaugment": "color,translation,cutout",
          "r1_gamma": 1.0}
    if family == "stylegan":
        hp["mapping_dim"] = 16
    model = build_model(family, SIZE, hp)
    model.configure_optimizers()
    losses = model.training_step(torch.from_numpy(blobs(8)).unsqueeze(1), None)
    assert losses["r1"] > 0
    assert all(np.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("family", ["dcgan", "wgan", "cgan"])
def test_r1_is_refused_on_a_batch_norm_discriminator(family):
    """Batch norm mixes a batch's images, so one image's score gradient depends on the others."""
    with pytest.raises(InputError, match="batch norm"):
        build_model(family, SIZE, {"width": 8, "latent_dim": 16, "r1_gamma": 1.0},
                    n_classes=2 if family == "cgan" else 0)
    build_model(family, SIZE, {"width": 8, "latent_dim": 16, "diffaugment": "color"},
                n_classes=2 if family == "cgan" else 0)


class _LinearCritic(torch.nn.Module):
    """C(x) = sum(w * x): its gradient is w wherever the input reaches it."""

    def __init__(self, weight: float):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((1, 1, SIZE, SIZE), weight))

    def forward(self, x):
        return (x * self.weight).flatten(1).sum(1, keepdim=True)


def test_r1_is_taken_on_the_signed_scale_through_the_augmentation():
    """A linear critic on [-1, 1] images with weight c: R1 = c^2 per unaugmented pixel. Through a
    cutout (a square of a quarter of the image, fewer pixels at the border, set to zero), the cut
    pixels' gradient is 0, so R1 lies in [0.75, 1) x c^2 H W; taken on the augmented image, as
    before, it was exactly c^2 H W."""
    c = 0.01
    model = build_model("wgan_gp", SIZE, {"width": 8, "latent_dim": 16, "r1_gamma": 1.0, "diffaugment": "cutout"})
    model.discriminator = _LinearCritic(c)
    model.configure_optimizers()
    torch.manual_seed(0)
    r1 = model.training_step(torch.from_numpy(blobs(8)).unsqueeze(1), None)["r1"]
    full = c ** 2 * SIZE * SIZE
    assert 0.75 * full - 1e-9 <= r1 < full * (1 - 1e-3)


def test_stylegan_r1_gamma_is_on_the_signed_scale():
    """StyleGAN's critic reads [0, 1] images and rescales them; its R1 must equal the squared
    gradient with respect to the [-1, 1] image (StyleGAN2's gamma), not four times it."""
    torch.manual_seed(0)
    model = build_model("stylegan", SIZE, {"width": 16, "latent_dim": 16, "mapping_dim": 16, "r1_gamma": 1.0})
    model.configure_optimizers()
    images = torch.from_numpy(blobs(8)).unsqueeze(1)
    signed = (images * 2 - 1).requires_grad_(True)
    (grad,) = torch.autograd.grad(model.critic.net(signed).sum(), signed)
    expected = grad.pow(2).flatten(1).sum(1).mean().item()
    assert model.training_step(images, None)["r1"] == pytest.approx(expected, rel=1e-4)


# ----------------------------------------------------------------------- validation, snapshots


def test_a_run_resumed_after_its_minutes_cap_has_the_rows_of_an_uninterrupted_run(tmp_path):
    """Stopped by the cap after step 1, the run validates and snapshots there (its outputs show where
    it ended); resumed with a larger cap, those off-schedule rows go and the outputs equal a
    run that was never stopped."""
    held_out = (blobs(10, seed=5), None)
    watched = {**VAE, "validate_every": 5, "snapshot_every": 4, "snapshot_images": 3}
    train(tmp_path, watched, name="whole", validation=held_out, out_validation=tmp_path / "whole_val.csv",
          out_snapshots=tmp_path / "whole_snap.npz")
    capped = {**watched, "budget": {"steps": 12, "minutes": 1e-6}}  # 60 µs: one step, then the cap
    summary = train(tmp_path, capped, name="capped", validation=held_out,
                    out_validation=tmp_path / "capped_val.csv", out_snapshots=tmp_path / "capped_snap.npz")
    assert summary["incomplete"]
    assert list(pd.read_csv(tmp_path / "capped_val.csv")["step"]) == [1]
    train(tmp_path, {**watched, "budget": {"steps": 12, "minutes": 60}}, name="capped", validation=held_out,
          out_validation=tmp_path / "capped_val.csv", out_snapshots=tmp_path / "capped_snap.npz")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "capped_val.csv"), pd.read_csv(tmp_path / "whole_val.csv"))
    resumed, whole = np.load(tmp_path / "capped_snap.npz"), np.load(tmp_path / "whole_snap.npz")
    assert sorted(resumed.files) == sorted(whole.files)
    for key in whole.files:
        np.testing.assert_array_equal(resumed[key], whole[key])


def test_validation_and_snapshots_leave_training_unchanged_and_resume_exactly(tmp_path):
    held_out = (blobs(10, seed=5), None)
    watched = {**VAE, "validate_every": 5, "snapshot_every": 4, "snapshot_images": 3}
    train(tmp_path, VAE, name="plain")
    kwargs = {"validation": held_out}
    train(tmp_path, watched, name="whole", out_validation=tmp_path / "whole_val.csv",
          out_snapshots=tmp_path / "whole_snap.npz", **kwargs)
    assert train(tmp_path, watched, name="split", steps_this_call=7, **kwargs) is None
    train(tmp_path, watched, name="split", out_validation=tmp_path / "split_val.csv",
          out_snapshots=tmp_path / "split_snap.npz", **kwargs)

    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "whole.csv"), pd.read_csv(tmp_path / "plain.csv"))
    validation = pd.read_csv(tmp_path / "whole_val.csv")
    assert list(validation["step"]) == [5, 10, 12]
    assert {"loss", "reconstruction", "kl"} <= set(validation.columns)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "split_val.csv"), validation)
    whole, split = np.load(tmp_path / "whole_snap.npz"), np.load(tmp_path / "split_snap.npz")
    assert list(whole["steps"]) == [4, 8, 12]
    assert whole["images"].shape == (3, 3, SIZE, SIZE)
    assert list(whole["kinds"]) == ["samples"] * 3
    np.testing.assert_array_equal(split["images"], whole["images"])
    assert not np.array_equal(whole["images"][0], whole["images"][-1]), "snapshots follow the training"


def test_validation_loss_is_measured_on_fixed_noise(tmp_path):
    """Two validations of the same weights give the same number (fixed noise, fixed subset)."""
    from pipeline_lib.models.monitor import TrainingMonitor

    model = build_model("vae", SIZE, {"width": 8, "latent_dim": 16, "batch_size": 4})
    monitor = TrainingMonitor(seed=0, validate_every=1, snapshot_every=None, snapshot_images=2,
                              validation=(blobs(10), None), validation_images=6, n_classes=0,
                              conditional=False, batch_size=4)
    assert len(monitor.images) == 6
    assert monitor.validation_loss(model) == monitor.validation_loss(model)


def test_cheap_fid_during_training_equals_the_evaluation_fid_of_the_same_images(tmp_path):
    """fid_every adds an ``fid`` column: the FID of fid_images samples (drawn with the monitor's fixed
    seed) against a seeded subset of as many training slices, computed as the evaluation stage does;
    GANs may use it (they have no validation loss). Training itself is unchanged."""
    from pipeline_lib.core.inception import extract_features, frechet_distance_features, load_feature_network
    from pipeline_lib.core.pretrained import default_fid_cache, fid_inception_weights
    from pipeline_lib.models.monitor import FID_SEED, isolated_rng

    block = {**DCGAN, "fid_every": 4, "fid_images": 6}
    train(tmp_path, DCGAN, name="plain")
    train(tmp_path, block, name="m", out_validation=tmp_path / "v.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "m.csv"), pd.read_csv(tmp_path / "plain.csv"))
    table = pd.read_csv(tmp_path / "v.csv")
    assert list(table.columns) == ["step", "fid"]
    assert list(table["step"]) == [4]
    model, _ = load_trained_model(tmp_path / "m.pt", device="cpu")
    with isolated_rng(3 + FID_SEED, model.device):
        fake = model.sample(6, generator=torch.Generator().manual_seed(3 + FID_SEED))[:, 0].numpy()
    rows = np.sort(np.random.default_rng(3).choice(24, 6, replace=False))
    net = load_feature_network(fid_inception_weights(default_fid_cache()), device="cpu")
    expected = frechet_distance_features(extract_features(fake, net), extract_features(blobs()[rows], net))
    assert table["fid"].iloc[0] == pytest.approx(expected, rel=1e-4)


def test_the_fid_monitor_does_not_change_the_training_that_follows_it(tmp_path):
    """The first FID builds the Inception network, whose layers draw initial weights from torch's
    generator before the file's weights replace them: that draw must not reach the training stream,
    or the steps after the first FID (and so every number of a run) would depend on fid_every."""
    plain = {**DCGAN, "budget": {"steps": 8}}
    train(tmp_path, plain, name="plain")
    train(tmp_path, {**plain, "fid_every": 3, "fid_images": 6}, name="m", out_validation=tmp_path / "v.csv")
    assert list(pd.read_csv(tmp_path / "v.csv")["step"]) == [3, 6, 8]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "m.csv"), pd.read_csv(tmp_path / "plain.csv"))


def test_gans_reject_a_validation_loss(tmp_path):
    with pytest.raises(InputError, match="validate_every"):
        train(tmp_path, {**DCGAN, "validate_every": 2}, validation=(blobs(8), None))


def test_an_empty_test_split_cannot_be_validated(tmp_path):
    with pytest.raises(InputError, match="no test slices"):
        train(tmp_path, {**VAE, "validate_every": 2}, validation=(blobs(0), None))


# ------------------------------------------------------------------------ progress, live losses


def test_progress_line_shows_step_target_losses_rate_and_eta():
    now = [100.0]
    line = ProgressLine("vae", target_steps=400, target_seconds=None, every_steps=50, every_seconds=None,
                        clock=lambda: now[0])
    line.start(0)
    now[0] = 125.0
    assert line.update(49, 25.0, {"loss": 1.0}) is None
    text = line.update(50, 25.0, {"loss": 0.123456, "kl": 3.0})
    assert text == "vae step 50/400 (12 %) | loss=0.1235 kl=3 | 2 steps/s | ETA 2m55s"
    timed = ProgressLine("gan", target_steps=None, target_seconds=120.0, every_steps=None, every_seconds=10.0,
                         clock=lambda: now[0])
    timed.start(0)
    now[0] = 135.0
    assert timed.update(20, 100.0, {"g": 1.0}) == "gan step 20 | g=1 | 2 steps/s | ETA 20s"
    assert duration_text(3725) == "1h02m"


def test_training_logs_progress_and_grows_losses_csv(tmp_path, caplog):
    block = {**VAE, "progress_every_steps": 4, "progress_every_seconds": None}
    with caplog.at_level(logging.INFO, logger="pipeline_lib.models.progress"):
        assert train(tmp_path, block, steps_this_call=7) is None
    lines = [r.getMessage() for r in caplog.records if "steps/s" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith("m step 4/12 (33 %) | loss=")
    # The interrupted job leaves the rows it trained, readable while (and after) it runs.
    partial = pd.read_csv(tmp_path / "m.csv")
    assert list(partial["step"]) == list(range(1, 8))
    train(tmp_path, block)
    assert list(pd.read_csv(tmp_path / "m.csv")["step"]) == list(range(1, 13))


# ------------------------------------------------------------------- on-the-fly augmentation

AUGMENT = {"flip_lr": 0.5, "rotate_deg": 5, "translate_px": 2, "scale": 0.05}


def _record_training_batches(monkeypatch, store: list) -> None:
    """Keep a copy of every batch the VAE family's training_step receives."""
    from pipeline_lib.models.families.vae import VAE as VaeClass

    original = VaeClass.training_step

    def recording(self, x, y=None):
        store.append(x.detach().clone())
        return original(self, x, y)

    monkeypatch.setattr(VaeClass, "training_step", recording)


@pytest.mark.parametrize("off", [None, {}, {"flip_lr": 0, "rotate_deg": 0, "translate_px": 0, "scale": 0}])
def test_augmentation_is_off_by_default_and_changes_nothing_when_off(tmp_path, monkeypatch, off):
    from pipeline_lib.models import training

    train(tmp_path, VAE, name="plain")

    def no_augmenter(*args, **kwargs):
        raise AssertionError("an augmenter was built although augmentation is off")

    monkeypatch.setattr(training, "BatchAugmenter", no_augmenter)
    summary = train(tmp_path, {**VAE, "augment": off}, name="off")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "off.csv"), pd.read_csv(tmp_path / "plain.csv"))
    plain = torch.load(tmp_path / "plain.pt", weights_only=True)["state_dict"]
    for key, value in torch.load(tmp_path / "off.pt", weights_only=True)["state_dict"].items():
        assert torch.equal(value, plain[key]), key
    assert summary["training_aids"]["augment"] is None


def test_flips_at_probability_one_mirror_every_batch_the_family_sees(tmp_path, monkeypatch):
    """The batch order is that of a run without augmentation (the augmenter has its own generator),
    and every batch the family receives is the exact left-right mirror of the batch drawn."""
    drawn, seen = [], []
    _record_training_batches(monkeypatch, drawn)
    train(tmp_path, VAE, name="plain")
    monkeypatch.undo()
    _record_training_batches(monkeypatch, seen)
    summary = train(tmp_path, {**VAE, "augment": {"flip_lr": 1}}, name="flipped")
    assert len(seen) == len(drawn) == VAE["budget"]["steps"]
    for x, y in zip(drawn, seen):
        assert not torch.equal(x, y)
        assert torch.equal(y, x.flip(-1))
    assert summary["training_aids"]["augment"] == {"flip_lr": 1.0, "rotate_deg": 0.0, "translate_px": 0.0,
                                                   "scale": 0.0}


def test_flip_probability_is_honoured_per_image():
    from pipeline_lib.models.augment import BatchAugmenter

    x = torch.from_numpy(blobs(400)).unsqueeze(1)
    y = BatchAugmenter({"flip_lr": 0.3}, seed=0)(x)
    flipped = torch.tensor([torch.equal(a, b.flip(-1)) and not torch.equal(a, b) for a, b in zip(y, x)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(y, x)])
    assert bool((flipped | kept).all())
    assert 0.22 < flipped.float().mean().item() < 0.38


def test_affine_moves_content_as_configured():
    """A point moves by the shift in pixels, a quarter turn rotates it about the image centre."""
    from pipeline_lib.models.augment import affine_matrices, apply_affine

    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 4, 10] = 1.0
    one = torch.ones(1)

    def moved(angle, zoom, shift):
        theta = affine_matrices(torch.tensor([float(angle)]), zoom * one, torch.tensor([shift], dtype=torch.float32),
                                (16, 16))
        return (apply_affine(x, theta)[0, 0] > 0.5).nonzero().tolist()

    assert moved(0, 1.0, [2, 0]) == [[4, 12]]   # two pixels right
    assert moved(0, 1.0, [0, 3]) == [[7, 10]]   # three pixels down
    # centre (7.5, 7.5): (x, y) = (2.5, -3.5) about it turns to (3.5, 2.5)
    assert moved(90, 1.0, [0, 0]) == [[10, 11]]


def test_affine_keeps_shape_range_and_the_input():
    from pipeline_lib.models.augment import BatchAugmenter

    x = torch.from_numpy(blobs(16)).unsqueeze(1)
    x[:, :, :2] = 1.0  # bright edges: interpolation must not leave [0, 1]
    before = x.clone()
    augmenter = BatchAugmenter({"rotate_deg": 10, "translate_px": 2, "scale": 0.1}, seed=0)
    y = augmenter(x)
    assert y.shape == x.shape
    assert y.dtype == x.dtype
    assert float(y.min()) >= 0.0
    assert float(y.max()) <= 1.0
    assert torch.equal(x, before), "the drawn batch itself is not modified"
    assert all(not torch.equal(a, b) for a, b in zip(y, x)), "every image gets its own affine"
    assert (y - x).abs().mean() < 0.1, "a small affine changes the images a little"
    again = BatchAugmenter({"rotate_deg": 10, "translate_px": 2, "scale": 0.1}, seed=0)(x)
    assert torch.equal(again, y), "the same seed gives the same augmentation"
    assert not torch.equal(BatchAugmenter({"rotate_deg": 10}, seed=1)(x), BatchAugmenter({"rotate_deg": 10}, seed=0)(x))


def test_augmented_run_resumes_exactly(tmp_path):
    block = {**VAE, "augment": AUGMENT}
    train(tmp_path, VAE, name="plain")
    train(tmp_path, block, name="whole")
    assert train(tmp_path, block, name="split", steps_this_call=7) is None
    train(tmp_path, block, name="split")
    whole = pd.read_csv(tmp_path / "whole.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "split.csv"), whole)
    assert not whole.equals(pd.read_csv(tmp_path / "plain.csv")), "augmentation changed the training"
    a = torch.load(tmp_path / "whole.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "split.pt", weights_only=True)["state_dict"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_validation_batches_are_never_augmented(tmp_path, monkeypatch):
    from pipeline_lib.models.families.vae import VAE as VaeClass

    held_out = blobs(10, seed=5)
    seen = []
    original = VaeClass.validation_losses

    def recording(self, x, y=None):
        seen.append(x.detach().cpu().clone())
        return original(self, x, y)

    monkeypatch.setattr(VaeClass, "validation_losses", recording)
    block = {**VAE, "augment": {**AUGMENT, "flip_lr": 1.0}, "validate_every": 5}
    train(tmp_path, block, validation=(held_out, None), out_validation=tmp_path / "val.csv")
    assert len(seen) == 3 * 2  # steps 5, 10, 12; batches of 8 and 2
    for start in range(0, len(seen), 2):
        batch = torch.cat(seen[start:start + 2])
        assert torch.equal(batch, torch.from_numpy(held_out).unsqueeze(1))


def test_augment_keys_are_checked_and_flips_of_sagittal_slices_rejected(tmp_path):
    from pipeline_lib.models.augment import check_flip_axis

    for bad, message in (({"flip": 0.5}, r"models\.m: augment\.flip: unknown key"),
                         ({"flip_lr": 1.5}, r"augment\.flip_lr must be a number in \[0, 1\]"),
                         ({"rotate_deg": -1}, r"augment\.rotate_deg must be"),
                         ({"translate_px": "2"}, r"augment\.translate_px must be a number ≥ 0"),
                         ({"scale": True}, r"augment\.scale must be"),
                         ([0.5], r"augment must be a mapping")):
        with pytest.raises(InputError, match=message):
            train(tmp_path, {**VAE, "augment": bad})
    with pytest.raises(InputError, match=r"models\.m\.augment\.flip_lr: the training slices are sagittal"):
        check_flip_axis({"flip_lr": 0.5}, ["sagittal"], "models.m")
    check_flip_axis({"flip_lr": 0.5}, ["axial", "coronal"], "models.m")
    check_flip_axis({"flip_lr": 0.0, "rotate_deg": 5}, ["sagittal"], "models.m")


def test_report_names_the_augmentation_of_each_run():
    from pipeline_lib.report.training_section import _aids_table

    html = _aids_table({"a": {"steps": 3, "training_aids": {"augment": {"flip_lr": 0.5, "rotate_deg": 5.0,
                                                                         "translate_px": 0.0, "scale": 0.05}}},
                        "b": {"steps": 3, "training_aids": {"augment": None}}})
    assert "<th>Augmentation</th>" in html
    assert "<td>flip 0.5, rotate ±5°, zoom ±0.05</td></tr>" in html
    assert html.split('data-model="b"')[1].split("</tr>")[0].endswith("<td>off</td>")
