"""The ldm3d family: the ldm's two stages with MONAI's 3-D networks, trained by the generic trainer on
(N, C, S, S, S) volumes: tutorial defaults, the latent shape, shapes and range of samples, seeds,
exact resume after a SIGKILL across the stage boundary, class conditioning, the fake-3-D perceptual
term, and the checks that keep slices away from it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.models import build_model
from pipeline_lib.models.hyperparameters import check_model_blocks
from pipeline_lib.models.sampling import draw_samples
from pipeline_lib.models.training import load_trained_model, train_model

from helpers.models import TINY_3D, blob_volumes, family_images

SIZE = 16
STAGE_ONE = TINY_3D["ldm3d"]["autoencoder_steps"]  # 3


def block(steps: int = 6, **extra) -> dict:
    return {"family": "ldm3d", **TINY_3D["ldm3d"], "budget": {"steps": steps}, "checkpoint_every": 2, "seed": 11,
            **extra}


def train(tmp_path, name: str, b: dict, volumes=None, labels=None, **kwargs):
    volumes = blob_volumes(8, SIZE)[0] if volumes is None else volumes
    return train_model(name, b, volumes, labels, tmp_path / f"{name}.pt", tmp_path / f"{name}.csv",
                       tmp_path / f"ck_{name}", device="cpu", **kwargs)


def test_published_defaults_are_the_3d_tutorials():
    model = build_model("ldm3d", 32, {"perceptual": {"backbone": "none"}})
    h = model.hparams
    assert h["ae_channels"] == [32, 64, 64]
    assert (h["ae_attention_levels"], h["ae_nonlocal_attention"]) == ([False, False, True], True)
    assert (h["latent_channels"], h["ae_num_res_blocks"], h["ae_norm_num_groups"]) == (3, 1, 16)
    assert (h["kl_weight"], h["adversarial_weight"], h["perceptual"]["weight"]) == (1e-6, 0.01, 0.001)
    assert h["perceptual"]["fake_3d_ratio"] == 0.2
    assert (h["ae_lr"], h["disc_lr"], h["disc_channels"], h["disc_layers"]) == (1e-4, 1e-4, 32, 3)
    assert (h["autoencoder_steps"], h["adversarial_start"]) == (19400, 1164)
    assert h["unet_channels"] == [32, 64, 64]
    assert h["attention_levels"] == [False, True, True]
    assert h["num_head_channels"] == [0, 64, 64]
    assert h["num_res_blocks"] == 1
    assert (h["beta_schedule"], h["beta_start"], h["beta_end"]) == ("scaled_linear_beta", 0.0015, 0.0195)
    assert (h["lr"], h["batch_size"]) == (1e-4, 2)
    assert isinstance(model.autoencoder.encoder.blocks[0].conv, torch.nn.Conv3d)
    assert isinstance(model.denoiser.unet.conv_in.conv, torch.nn.Conv3d)
    assert model.latent_shape == (3, 8, 8, 8)  # 32 voxels a side, two halvings


@pytest.mark.parametrize("ae_channels, side", [([8, 8], 8), ([8, 8, 8], 4)])
def test_the_latent_is_the_volume_reduced_by_the_autoencoders_halvings(ae_channels, side):
    hp = {**TINY_3D["ldm3d"], "ae_channels": ae_channels, "ae_attention_levels": [False] * len(ae_channels)}
    model = build_model("ldm3d", SIZE, hp)
    assert model.latent_shape == (2, side, side, side)
    volumes = torch.from_numpy(blob_volumes(2, SIZE)[0])
    with torch.no_grad():
        z_mu, _ = model.autoencoder.encode(volumes)
    assert tuple(z_mu.shape) == (2, *model.latent_shape)


@pytest.mark.parametrize("n_classes", [0, 2])
def test_samples_are_volumes_in_the_unit_range(n_classes):
    torch.manual_seed(0)
    model = build_model("ldm3d", SIZE, dict(TINY_3D["ldm3d"]), n_classes=n_classes)
    labels = torch.tensor([0, 1, 1]) if n_classes else None
    samples = model.sample(3, labels=labels, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (3, 1, SIZE, SIZE, SIZE)
    assert samples.min() >= 0
    assert samples.max() <= 1
    volumes = torch.from_numpy(blob_volumes(2, SIZE)[0])
    assert model.reconstruct(volumes).shape == volumes.shape


def test_same_seed_gives_same_volumes_and_snapshots_show_middle_slices(tmp_path):
    """Two runs of 6 steps (3 per stage): identical samples for a seed, different for another; the
    snapshots show reconstructions, then samples, as middle axial slices; validation follows the stage."""
    b = block(snapshot_every=3, snapshot_images=2, validate_every=3)
    held_out = (blob_volumes(4, SIZE, seed=5)[0], None)
    for name in ("a", "b"):
        train(tmp_path, name, b, validation=held_out, out_snapshots=tmp_path / f"{name}.npz",
              out_validation=tmp_path / f"{name}_v.csv")
    a, summary = load_trained_model(tmp_path / "a.pt", device="cpu")
    b_model, _ = load_trained_model(tmp_path / "b.pt", device="cpu")
    assert summary["image_size"] == SIZE
    first = draw_samples(a, 2, seed=5)
    assert first.shape == (2, 1, SIZE, SIZE, SIZE)
    np.testing.assert_array_equal(first, draw_samples(b_model, 2, seed=5))
    assert not np.array_equal(first, draw_samples(a, 2, seed=6))
    snaps = np.load(tmp_path / "a.npz")
    assert list(snaps["kinds"]) == ["reconstructions", "samples"]
    assert snaps["images"].shape == (2, 2, SIZE, SIZE)
    validation = pd.read_csv(tmp_path / "a_v.csv")
    assert validation["reconstruction"].notna().tolist() == [True, False]
    assert validation["diffusion"].notna().tolist() == [False, True]


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from helpers.models import blob_volumes
    from pipeline_lib.models.families.ldm3d import LDM3D
    from pipeline_lib.models.training import train_model

    diffusion_step = LDM3D.diffusion_step

    def dies_in_diffusion_step(self, *args):
        if int(self.unet_updates) == {kill_at}:  # in the middle of a step: no checkpoint, no cleanup
            os.kill(os.getpid(), signal.SIGKILL)
        return diffusion_step(self, *args)

    LDM3D.diffusion_step = dies_in_diffusion_step
    out = Path({out!r})
    train_model("m", {block!r}, blob_volumes(8, {size})[0], None, out / "m.pt", out / "m.csv", out / "ck_m",
                device="cpu")
    """
)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict, Path]:
    """One run of 6 steps (3 per stage) with an EMA, the reference of the resume tests (the checkpoint
    interval is a runtime key: it changes no result)."""
    out = tmp_path_factory.mktemp("uninterrupted")
    b = block(steps=6, ema_decay=0.9)
    train(out, "whole", b)
    return b, out


@pytest.mark.parametrize("checkpoint_every, kill_at, last_checkpoint",
                         [(2, 0, 2),   # checkpoint in stage 1, killed in the first diffusion step
                          (3, 1, 3)])  # checkpoint exactly at the boundary, killed in the second one
def test_a_run_killed_after_the_stage_boundary_resumes_exactly(tmp_path, uninterrupted, checkpoint_every, kill_at,
                                                              last_checkpoint):
    """SIGKILL in the middle of a diffusion step; the rerun continues from the last checkpoint (taken
    in stage 1 or at the boundary) and ends with the losses, weights and averaged weights of an
    uninterrupted run."""
    reference, whole_dir = uninterrupted
    b = {**reference, "checkpoint_every": checkpoint_every}
    script = KILLED_RUN.format(tests=str(Path(__file__).parent), out=str(tmp_path), block=b, size=SIZE,
                               kill_at=kill_at)
    # the same thread count as this process's runs: CPU kernels reduce in an order that depends on it
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    assert done.returncode == -9, done.stderr[-2000:]
    assert not (tmp_path / "m.pt").exists()
    checkpoint = next((tmp_path / "ck_m").glob("*/checkpoint.pt"))
    assert torch.load(checkpoint, weights_only=True)["step"] == last_checkpoint

    train(tmp_path, "m", b)
    whole, resumed = pd.read_csv(whole_dir / "whole.csv"), pd.read_csv(tmp_path / "m.csv")
    pd.testing.assert_frame_equal(resumed, whole)
    assert list(whole["stage"]) == [1.0] * STAGE_ONE + [2.0] * 3
    a = torch.load(whole_dir / "whole.pt", weights_only=True)
    c = torch.load(tmp_path / "m.pt", weights_only=True)
    for key in a["state_dict"]:
        torch.testing.assert_close(c["state_dict"][key], a["state_dict"][key], rtol=0, atol=0)
    for key in a["ema"]["denoiser"]:
        torch.testing.assert_close(c["ema"]["denoiser"][key], a["ema"]["denoiser"][key], rtol=0, atol=0)


def test_the_class_label_changes_the_sampled_volumes(tmp_path):
    """A class-conditional run (3 autoencoder and 3 diffusion steps): the same noise sampled for
    class 0 and for class 1 gives different volumes; the same class, the same volumes."""
    volumes, labels = blob_volumes(8, SIZE)
    train(tmp_path, "m", {**block(steps=6), "condition_on": "label"}, volumes, labels, n_classes=2)
    model, _ = load_trained_model(tmp_path / "m.pt", device="cpu")
    assert model.denoiser.unet.num_class_embeds == 3  # two classes and "no class" for guidance
    zeros, ones = np.zeros(2, np.int64), np.ones(2, np.int64)
    as_zero = draw_samples(model, 2, seed=3, labels=zeros)
    np.testing.assert_array_equal(as_zero, draw_samples(model, 2, seed=3, labels=zeros))
    assert np.abs(as_zero - draw_samples(model, 2, seed=3, labels=ones)).max() > 1e-4


def test_plane_slices_cut_each_axis():
    from pipeline_lib.models.families.ldm3d import plane_slices

    volumes = torch.arange(2 * 3 * 4 * 5 * 6, dtype=torch.float32).reshape(2, 3, 4, 5, 6)
    for axis, count, plane in ((2, 4, (5, 6)), (3, 5, (4, 6)), (4, 6, (4, 5))):
        slices = plane_slices(volumes, axis)
        assert slices.shape == (2 * count, 3, *plane)
        torch.testing.assert_close(slices[count + 1], volumes[1].select(axis - 1, 1))


def test_the_fake_3d_perceptual_term_uses_the_offline_inception():
    """perceptual.backbone inception (on 32-voxel volumes: the Inception stem needs 32 px slices):
    zero between a volume and itself, positive for a blurred copy, reported by a stage-1 step; the
    frozen network stays out of the state dict and is rebuilt by a model that loads it."""
    hp = {**TINY_3D["ldm3d"], "perceptual": {"backbone": "inception", "weights": None, "weight": 0.001,
                                             "fake_3d_ratio": 0.1}}
    torch.manual_seed(0)
    model = build_model("ldm3d", 32, hp)
    model.configure_optimizers()
    volumes = torch.from_numpy(blob_volumes(2, 32)[0])
    blurred = torch.nn.functional.avg_pool3d(volumes, 3, stride=1, padding=1)
    assert float(model.perceptual_loss(volumes, volumes)) == pytest.approx(0.0, abs=1e-6)
    assert float(model.perceptual_loss(volumes, blurred)) > 0
    assert model.training_step(volumes, None)["perceptual"] > 0
    state = model.state_dict()
    assert not any(k.startswith("perceptual_net.") for k in state)
    rebuilt = build_model("ldm3d", 32, hp)
    rebuilt.load_state_dict(state)
    assert rebuilt.perceptual_summary()["fake_3d_ratio"] == 0.1
    assert rebuilt.perceptual_summary()["backbone"] == "inception"


def test_bad_settings_and_slices_are_refused(tmp_path):
    with pytest.raises(InputError, match="ae_attention_levels needs one entry per entry of ae_channels"):
        build_model("ldm3d", SIZE, {**TINY_3D["ldm3d"], "ae_attention_levels": [False]})
    with pytest.raises(InputError, match=r"fake_3d_ratio must lie in \(0, 1\]"):
        build_model("ldm3d", SIZE, {**TINY_3D["ldm3d"], "perceptual": {"backbone": "none", "fake_3d_ratio": 0}})
    with pytest.raises(InputError, match="divisible by the autoencoder's 8x reduction"):  # 8 x 4 > 16 voxels
        build_model("ldm3d", SIZE, {**TINY_3D["ldm3d"], "ae_channels": [8, 8, 8, 8],
                                    "ae_attention_levels": [False] * 4, "unet_channels": [8, 16, 16],
                                    "attention_levels": [False] * 3, "num_head_channels": [0, 0, 8]})
    problems = check_model_blocks({"m": {"family": "ldm3d", "budget": {"steps": 9}, "ae_chanels": [8]}})
    assert len(problems) == 1, problems
    assert problems[0].startswith("models.m.ae_chanels: unknown key"), problems
    with pytest.raises(InputError, match=r"learns volumes: training images must be \(N, C, S, S, S\)"):
        train(tmp_path, "slices", block(), volumes=family_images(8, SIZE)[0][:, None])
    with pytest.raises(InputError, match="must exceed autoencoder_steps"):
        train(tmp_path, "short", block(steps=STAGE_ONE))


def test_the_frozen_encoders_moments_are_kept_and_equal_the_batched_encoding(tmp_path, monkeypatch):
    """Stage 2 on the CPU keeps each volume's posterior moments: a batch of kept volumes encodes
    nothing, a batch with a new volume is encoded whole, kept moments are the numbers a batch of
    other volumes gives (an image's moments do not depend on its batch-mates), an autoencoder change
    or a load clears them, and the cache stops growing at its bound."""
    from pipeline_lib.models.families import ldm

    model = build_model("ldm3d", SIZE, TINY_3D["ldm3d"])
    volumes = torch.from_numpy(blob_volumes(6, SIZE)[0])
    calls = []
    encode = model.autoencoder.encode
    monkeypatch.setattr(model.autoencoder, "encode", lambda x: calls.append(len(x)) or encode(x))
    mu, sigma = model.posterior(volumes[:4])
    assert calls == [4]
    again_mu, again_sigma = model.posterior(volumes[[2, 0, 3, 1]])
    assert calls == [4]  # every volume kept: nothing encoded
    torch.testing.assert_close(again_mu, mu[[2, 0, 3, 1]], rtol=0, atol=0)
    torch.testing.assert_close(again_sigma, sigma[[2, 0, 3, 1]], rtol=0, atol=0)
    mixed_mu, _ = model.posterior(volumes[[4, 0, 5, 2]])
    assert calls == [4, 4]  # a new volume: the batch is encoded whole
    with torch.no_grad():
        other_mu, other_sigma = encode(volumes[[5, 4, 1, 0]])  # other batch-mates, other places
    torch.testing.assert_close(mixed_mu[1], other_mu[3], rtol=0, atol=0)
    torch.testing.assert_close(sigma[1], other_sigma[2], rtol=0, atol=0)
    model.autoencoder_updates += 1  # the autoencoder moved on: the kept moments are stale
    model.posterior(volumes[:4])
    assert calls[2:] == [4]
    model.load_state_dict(model.state_dict())
    assert not model._posterior_cache
    monkeypatch.setattr(ldm, "POSTERIOR_CACHE_MB", 2 * mu[0].numel() * 4 * 2 / 1024 / 1024)  # room for two
    model.posterior(volumes[:4])
    assert len(model._posterior_cache) == 2
