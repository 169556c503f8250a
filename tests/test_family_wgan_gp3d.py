"""The wgan_gp3d family: Kwon et al. 2019's 3-D WGAN-GP networks with Gulrajani et al.'s loss and
schedule, trained by the generic trainer on (N, C, S, S, S) volumes: published defaults, shapes,
seeds, exact resume after SIGKILL, the gradient penalty against closed forms, the n_critic schedule,
and a short learning run on blobs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline_lib.core.errors import InputError
from pipeline_lib.models import build_model
from pipeline_lib.models.hyperparameters import check_model_blocks
from pipeline_lib.models.sampling import draw_samples
from pipeline_lib.models.training import load_trained_model, train_model

from helpers.models import TINY_3D, blob_volumes, family_images

SIZE = 16
TINY = TINY_3D["wgan_gp3d"]


def block(steps: int, **extra) -> dict:
    return {"family": "wgan_gp3d", **TINY, "budget": {"steps": steps}, "checkpoint_every": 2, "seed": 7, **extra}


def train(tmp_path, name: str, steps: int = 6, images=None, **extra):
    volumes = blob_volumes(8, SIZE)[0] if images is None else images
    return train_model(name, block(steps, **extra), volumes, None, tmp_path / f"{name}.pt", tmp_path / f"{name}.csv",
                       tmp_path / f"ck_{name}", device="cpu")


def test_published_defaults_are_algorithm_1_on_kwon_et_al_networks():
    with torch.device("meta"):  # shapes only: the published 64^3 networks have 48 M parameters
        model = build_model("wgan_gp3d", 64, {})
    h = model.hparams
    assert (h["lr"], h["beta1"], h["beta2"], h["n_critic"], h["gp_weight"]) == (1e-4, 0.0, 0.9, 5, 10.0)
    assert (h["latent_dim"], h["width"], h["batch_size"], h["critic_norm"]) == (1000, 64, 4, "layer")
    # Kwon et al.'s 64^3 networks: 1000 -> 512 x 4^3, then 256, 128, 64, 1 channels; critic 64 ... 512, one score.
    generator_convs = [m for m in model.generator.modules() if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in generator_convs] == [256, 128, 64, 1]
    assert model.generator.project.out_features == 512 * 4**3
    critic_convs = [m for m in model.critic.modules() if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in critic_convs] == [64, 128, 256, 512, 1]
    assert [c.kernel_size for c in critic_convs] == [(4, 4, 4)] * 5
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.critic.modules())
    assert model.critic(torch.zeros(2, 1, 64, 64, 64, device="meta")).shape == (2,)


@pytest.mark.parametrize("channels", [1, 2])
def test_samples_are_volumes_in_the_unit_range(channels):
    torch.manual_seed(0)
    model = build_model("wgan_gp3d", SIZE, dict(TINY), channels=channels)
    samples = model.sample(3, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (3, channels, SIZE, SIZE, SIZE)
    assert samples.min() >= 0
    assert samples.max() <= 1


def test_same_seed_gives_same_training_and_volumes(tmp_path):
    train(tmp_path, "a")
    train(tmp_path, "b")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv"))
    a, summary = load_trained_model(tmp_path / "a.pt", device="cpu")
    b, _ = load_trained_model(tmp_path / "b.pt", device="cpu")
    assert summary["image_size"] == SIZE
    first = draw_samples(a, 2, seed=5)
    assert first.shape == (2, 1, SIZE, SIZE, SIZE)
    np.testing.assert_array_equal(first, draw_samples(b, 2, seed=5))
    assert not np.array_equal(first, draw_samples(a, 2, seed=6))


KILLABLE_RUN = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from helpers.models import TINY_3D, blob_volumes
    from pipeline_lib.models.training import train_model
    out = Path({out!r})
    block = {{"family": "wgan_gp3d", **TINY_3D["wgan_gp3d"], "budget": {{"steps": 24}}, "checkpoint_every": 3,
              "seed": 7, "ema_decay": 0.9}}
    train_model("m", block, blob_volumes(8, 16)[0], None, out / "w.pt", out / "l.csv", out / "ck", device="cpu")
    """
)


def start_training(out: Path) -> subprocess.Popen:
    script = KILLABLE_RUN.format(tests=str(Path(__file__).parent), out=str(out))
    return subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_training_killed_mid_run_resumes_exactly(tmp_path):
    """SIGKILL after a checkpoint past the first generator update (n_critic = 5, checkpoints every 3
    steps, so the schedule's counter is mid-cycle), then a fresh process: the losses, the weights,
    the EMA and the critic-update counter are those of an uninterrupted run."""
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    reference.mkdir(), interrupted.mkdir()
    assert start_training(reference).wait(timeout=300) == 0

    proc = start_training(interrupted)
    deadline = time.monotonic() + 240
    checkpoint = None
    while checkpoint is None or torch.load(checkpoint, weights_only=True)["step"] < 6:
        assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint past step 6 before the run ended"
        checkpoint = next(iter((interrupted / "ck").glob("*/checkpoint.pt")), None)
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (interrupted / "w.pt").exists(), "the run finished before it could be killed"
    assert 6 <= torch.load(checkpoint, weights_only=True)["step"] < 24

    assert start_training(interrupted).wait(timeout=300) == 0
    pd.testing.assert_frame_equal(pd.read_csv(interrupted / "l.csv"), pd.read_csv(reference / "l.csv"))
    expected = torch.load(reference / "w.pt", weights_only=True)
    resumed = torch.load(interrupted / "w.pt", weights_only=True)
    assert int(resumed["state_dict"]["critic_updates"]) == 24
    for part in ("state_dict", "ema"):
        for key in expected[part]:
            torch.testing.assert_close(resumed[part][key], expected[part][key], rtol=0, atol=0)


def test_gradient_penalty_of_a_linear_critic_is_its_closed_form():
    """C(x) = <w, x> + b has gradient w everywhere: the penalty is (||w|| - 1)^2 wherever x_hat falls."""
    model = build_model("wgan_gp3d", SIZE, dict(TINY))
    linear = nn.Linear(SIZE**3, 1)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(1, SIZE**3))
        linear.weight.mul_(3 / linear.weight.norm())
    model.critic = nn.Sequential(nn.Flatten(), linear)
    real, fake = torch.rand(4, 1, SIZE, SIZE, SIZE), torch.rand(4, 1, SIZE, SIZE, SIZE)
    torch.testing.assert_close(model.gradient_penalty(real, fake), torch.tensor(4.0))


class HalfSquaredNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.flatten(1).pow(2).sum(1)


def test_gradient_penalty_is_per_volume():
    """C(x) = ||x||^2 / 2 has gradient x: with real = fake the penalty is the mean over volumes of
    (||x_i|| - 1)^2, each volume's own norm (not the batch's)."""
    model = build_model("wgan_gp3d", SIZE, dict(TINY))
    model.critic = HalfSquaredNorm()
    volumes = torch.rand(3, 2, SIZE, SIZE, SIZE) * torch.tensor([0.001, 0.01, 0.1]).view(3, 1, 1, 1, 1)
    norms = volumes.flatten(1).norm(dim=1)
    expected = (norms - 1).pow(2).mean()
    torch.testing.assert_close(model.gradient_penalty(volumes, volumes.clone()), expected)


def test_critic_loss_is_the_wasserstein_estimate_plus_the_weighted_penalty_and_g_updates_every_n_critic():
    torch.manual_seed(0)
    model = build_model("wgan_gp3d", SIZE, {**TINY, "gp_weight": 7.0, "n_critic": 3})
    model.configure_optimizers()
    generator_before = [p.detach().clone() for p in model.generator.parameters()]
    volumes = torch.from_numpy(blob_volumes(4, SIZE)[0])

    def generator_moved() -> bool:
        return any(not torch.equal(a, b) for a, b in zip(generator_before, model.generator.parameters()))

    for step in range(1, 4):
        losses = model.training_step(volumes, None)
        assert losses["critic"] == pytest.approx(-losses["wasserstein_estimate"] + 7.0 * losses["gradient_penalty"],
                                                 rel=1e-5, abs=1e-6)
        assert generator_moved() == (step == 3), step


def test_batch_norm_and_a_misspelt_key_are_refused_and_slices_too(tmp_path):
    with pytest.raises(InputError, match="critic_norm"):
        build_model("wgan_gp3d", SIZE, {**TINY, "critic_norm": "batch"})
    problems = check_model_blocks({"m": {"family": "wgan_gp3d", "budget": {"steps": 1}, "gp_wieght": 5}})
    assert len(problems) == 1 and problems[0].startswith("models.m.gp_wieght: unknown key"), problems
    with pytest.raises(InputError, match=r"learns volumes: training images must be \(N, C, S, S, S\)"):
        train(tmp_path, "slices", images=family_images(8, SIZE)[0][:, None])


def test_trains_under_bf16_autocast(tmp_path):
    train(tmp_path, "bf16", amp="bf16", amp_on_cpu=True)
    losses = pd.read_csv(tmp_path / "bf16.csv")
    assert len(losses) == 6
    assert np.isfinite(losses.drop(columns="step").to_numpy(dtype=float)).all(), losses


def test_learns_blobs(tmp_path):
    """60 steps on 16 blob volumes (dark background, one bright blob): the samples' mean volume moves
    from the untrained generator's grey to the data's (RMS distance under half the untrained one's;
    about a quarter when measured); the snapshots show middle axial slices."""
    volumes = blob_volumes(16, SIZE)[0]
    settings = {**block(60, snapshot_every=60, snapshot_images=2), "lr": 1e-3, "n_critic": 2}
    torch.manual_seed(0)
    untrained = build_model("wgan_gp3d", SIZE, {k: settings[k] for k in (*TINY, "lr", "n_critic")})
    untrained_samples = untrained.sample(16, generator=torch.Generator().manual_seed(3)).numpy()
    train_model("learn", settings, volumes, None, tmp_path / "l.pt", tmp_path / "l.csv", tmp_path / "ck_l",
                device="cpu", out_snapshots=tmp_path / "s.npz")
    model, _ = load_trained_model(tmp_path / "l.pt", device="cpu")
    samples = draw_samples(model, 16, seed=3)

    def distance(x):
        return float(np.sqrt(((x.mean(0) - volumes.mean(0)) ** 2).mean()))

    assert distance(samples) < distance(untrained_samples) / 2, (distance(samples), distance(untrained_samples))
    assert np.load(tmp_path / "s.npz")["images"].shape == (1, 2, SIZE, SIZE)
