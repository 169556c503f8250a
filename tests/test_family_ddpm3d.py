"""The ddpm3d family: MONAI's 3-D DiffusionModelUNet in the 2-D DDPM's diffusion process, trained by
the generic trainer on (N, C, S, S, S) volumes: tutorial defaults, shapes, seeds, exact resume, the
checks that keep slices and 2-D training aids away from it, and a short learning run on blobs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.models import build_model
from pipeline_lib.models.hyperparameters import check_model_blocks
from pipeline_lib.models.sampling import draw_samples
from pipeline_lib.models.training import load_trained_model, train_model

from helpers.models import TINY, TINY_3D, blob_volumes, family_images

SIZE = 16


def block(steps: int, **extra) -> dict:
    return {"family": "ddpm3d", **TINY_3D["ddpm3d"], "batch_size": 2, "budget": {"steps": steps},
            "checkpoint_every": 2, "seed": 7, **extra}


def train(tmp_path, name: str, images=None, **kwargs):
    steps = kwargs.pop("steps", 4)
    extra = kwargs.pop("extra", {})
    volumes = blob_volumes(8, SIZE)[0] if images is None else images
    return train_model(name, block(steps, **extra), volumes, None, tmp_path / f"{name}.pt",
                       tmp_path / f"{name}.csv", tmp_path / f"ck_{name}", device="cpu", **kwargs)


def test_published_defaults_are_the_3d_tutorials():
    model = build_model("ddpm3d", 32, {})
    h = model.hparams
    assert h["unet_channels"] == [64, 64, 128]
    assert h["attention_levels"] == [False, False, True]
    assert h["num_head_channels"] == [0, 0, 128]
    assert h["num_res_blocks"] == 2
    assert (h["num_train_timesteps"], h["beta_schedule"], h["beta_start"], h["beta_end"]) == \
        (1000, "linear_beta", 1e-4, 0.02)
    assert (h["lr"], h["batch_size"]) == (5e-5, 16)
    assert isinstance(model.denoiser.unet.conv_in.conv, torch.nn.Conv3d)


@pytest.mark.parametrize("n_classes", [0, 2])
def test_samples_are_volumes_in_the_unit_range(n_classes):
    torch.manual_seed(0)
    model = build_model("ddpm3d", SIZE, dict(TINY_3D["ddpm3d"]), n_classes=n_classes)
    labels = torch.tensor([0, 1, 1]) if n_classes else None
    samples = model.sample(3, labels=labels, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (3, 1, SIZE, SIZE, SIZE)
    assert samples.min() >= 0
    assert samples.max() <= 1


def test_same_seed_gives_same_volumes(tmp_path):
    train(tmp_path, "a")
    train(tmp_path, "b")
    a, summary = load_trained_model(tmp_path / "a.pt", device="cpu")
    b, _ = load_trained_model(tmp_path / "b.pt", device="cpu")
    assert summary["image_size"] == SIZE
    first = draw_samples(a, 2, seed=5)
    assert first.shape == (2, 1, SIZE, SIZE, SIZE)  # volumes keep their channel axis, as volumes.npy does
    np.testing.assert_array_equal(first, draw_samples(b, 2, seed=5))
    assert not np.array_equal(first, draw_samples(a, 2, seed=6))


def test_interrupted_training_resumes_exactly(tmp_path):
    """Stop after 3 steps (checkpoint), continue in a new call: identical to one run of 6."""
    train(tmp_path, "whole", steps=6)
    assert train(tmp_path, "split", steps=6, steps_this_call=3) is None
    assert not (tmp_path / "split.pt").exists()
    train(tmp_path, "split", steps=6)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "split.csv"), pd.read_csv(tmp_path / "whole.csv"))
    whole = torch.load(tmp_path / "whole.pt", weights_only=True)["state_dict"]
    split = torch.load(tmp_path / "split.pt", weights_only=True)["state_dict"]
    for key in whole:
        torch.testing.assert_close(split[key], whole[key], rtol=0, atol=0)


def test_a_misspelt_hyperparameter_is_rejected():
    with pytest.raises(InputError, match="unet_chanels"):
        build_model("ddpm3d", SIZE, {"unet_chanels": [8, 16]})
    problems = check_model_blocks({"m": {"family": "ddpm3d", "budget": {"steps": 1}, "unet_chanels": [8]}})
    assert len(problems) == 1, problems
    assert problems[0].startswith("models.m.unet_chanels: unknown key"), problems


def test_slices_and_2d_training_aids_are_refused(tmp_path):
    slices = family_images(8, SIZE)[0][:, None]
    with pytest.raises(InputError, match=r"learns volumes: training images must be \(N, C, S, S, S\)"):
        train(tmp_path, "slices", images=slices)
    with pytest.raises(InputError, match=r"models.aug.augment: works on 2-D slices"):
        train(tmp_path, "aug", extra={"augment": {"flip_lr": 0.5}})
    with pytest.raises(InputError, match=r"models.fid.fid_every: works on 2-D slices"):
        train(tmp_path, "fid", extra={"fid_every": 2})
    with pytest.raises(InputError, match=r"training images must be \(N, S, S\) or stacked"):
        train_model("flat", {"family": "ddpm", **TINY["ddpm"], "budget": {"steps": 1}}, blob_volumes(4, SIZE)[0],
                    None, tmp_path / "f.pt", tmp_path / "f.csv", tmp_path / "ck_f", device="cpu")


def test_learns_blobs_and_snapshots_middle_slices(tmp_path):
    """40 steps on 16 blob volumes: the noise-prediction loss falls well below its first rows'; the
    snapshots show each sampled volume's middle axial slice."""
    volumes = blob_volumes(16, SIZE)[0]
    train_model("learn", {**block(40, log_every=10, snapshot_every=40, snapshot_images=2), "batch_size": 4},
                volumes, None, tmp_path / "l.pt", tmp_path / "l.csv", tmp_path / "ck_l", device="cpu",
                out_validation=tmp_path / "v.csv", out_snapshots=tmp_path / "s.npz")
    loss = pd.read_csv(tmp_path / "l.csv")["loss"].to_numpy()
    assert len(loss) == 4, loss
    assert loss[-1] < 0.6 * loss[0], loss
    snapshots = np.load(tmp_path / "s.npz")
    assert snapshots["images"].shape == (1, 2, SIZE, SIZE)
