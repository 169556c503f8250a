"""TensorBoard event files of a training run (models/tensorboard.py): what they hold, and a resumed
run's curves showing each step once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline_lib.models.training import train_model

SIZE = 32
VAE = {"family": "vae", "width": 8, "latent_dim": 16, "batch_size": 8, "lr": 1e-3, "seed": 3,
       "checkpoint_every": 4, "budget": {"steps": 8}, "validate_every": 4, "snapshot_every": 4,
       "snapshot_images": 3, "tensorboard": True}


def blobs(n: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    cy, cx = rng.uniform(0.3, 0.7, (2, n, 1, 1))
    return np.exp(-(((yy - cy) / 0.2) ** 2 + ((xx - cx) / 0.15) ** 2)).astype(np.float32)


def train(folder, block, **kwargs):
    folder.mkdir(parents=True, exist_ok=True)
    return train_model("m", block, blobs(), None, folder / "weights.pt", folder / "losses.csv", folder / "ck",
                       device="cpu", validation=(blobs(10, seed=5), None), out_validation=folder / "val.csv",
                       out_snapshots=folder / "snap.npz", **kwargs)


def events(folder):
    board = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    board.Reload()
    return board


def test_losses_validation_and_snapshots_reach_tensorboard(tmp_path):
    train(tmp_path / "run", VAE)
    board = events(tmp_path / "run")
    losses = pd.read_csv(tmp_path / "run" / "losses.csv")
    recorded = board.Scalars("loss/loss")
    assert [e.step for e in recorded] == list(losses["step"])
    assert [e.value for e in recorded] == pytest.approx(list(losses["loss"]), rel=1e-6)
    validation = pd.read_csv(tmp_path / "run" / "val.csv")
    assert [e.step for e in board.Scalars("validation/loss")] == list(validation["step"]) == [4, 8]
    images = {tag: [e.step for e in board.Images(tag)] for tag in board.Tags()["images"]}
    assert images, images
    assert all(steps == [4, 8] for steps in images.values()), images


def test_a_resumed_run_shows_each_step_once(tmp_path):
    """A run killed after logging steps 5-6 past its checkpoint at step 4 (played by putting the
    step-4 checkpoint back after training on to step 6) resumes at 4 and drops the events past it:
    every loss step appears once."""
    import shutil

    folder = tmp_path / "run"
    assert train(folder, VAE, steps_this_call=4) is None
    shutil.copytree(folder / "ck", tmp_path / "ck_at_4")
    assert train(folder, VAE, steps_this_call=2) is None
    assert [e.step for e in events(folder).Scalars("loss/loss")] == list(range(1, 7))
    shutil.rmtree(folder / "ck")
    shutil.copytree(tmp_path / "ck_at_4", folder / "ck")
    train(folder, VAE)
    steps = [e.step for e in events(folder).Scalars("loss/loss")]
    assert steps == list(range(1, 9))


def test_off_by_default(tmp_path):
    train(tmp_path / "run", {**VAE, "tensorboard": False})
    assert not (tmp_path / "run" / "tensorboard").exists()
