"""The trainer's data path and step settings: the split read from disk through a DataLoader in the
seed's order, mixed precision (bf16 on the CPU), and losses averaged over ``log_every`` steps."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings import TrainerSettings
from pipeline_lib.core.slices import SplitImages, load_split, open_split
from pipeline_lib.models.loader import batch_loader, take
from pipeline_lib.models.training import BatchStream, train_model

from helpers.images import ellipses
from helpers.models import VAE_BLOCK

STEPS = 12


def write_dataset(folder: Path, images: np.ndarray, splits: list[str]) -> tuple[Path, Path]:
    np.save(folder / "images.npy", images)
    pd.DataFrame({"subject": [f"s{i}" for i in range(len(images))], "split": splits}).to_csv(
        folder / "slices.tsv", sep="\t", index=False)
    return folder / "images.npy", folder / "slices.tsv"


def train(folder: Path, images, **keys) -> tuple[dict, pd.DataFrame]:
    block = {**VAE_BLOCK, "budget": {"steps": STEPS}, **keys}
    folder.mkdir(parents=True, exist_ok=True)
    train_model("m", block, images, None, folder / "w.pt", folder / "l.csv", folder / "ck")
    return torch.load(folder / "w.pt", weights_only=False)["state_dict"], pd.read_csv(folder / "l.csv")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("stacked", [False, True])
def test_split_images_read_what_load_split_loads(tmp_path, stacked):
    images = np.random.default_rng(0).random((10, 3, 8, 8) if stacked else (10, 8, 8), dtype=np.float32)
    paths = write_dataset(tmp_path, images, ["train", "test"] * 5)
    loaded, loaded_rows = load_split(*paths, "test")
    split, rows = open_split(*paths, "test")
    pd.testing.assert_frame_equal(rows, loaded_rows)
    assert (len(split), split.shape, split.ndim) == (5, loaded.shape, loaded.ndim)
    order = np.array([4, 0, 3, 3])
    assert np.array_equal(split[order], loaded[order])
    assert split[order].dtype == np.float32
    assert np.array_equal(split[1], loaded[1])
    assert np.array_equal(split[1:4], loaded[1:4])
    # a DataLoader worker gets a pickled copy that opens the file itself
    assert np.array_equal(pickle.loads(pickle.dumps(split))[order], loaded[order])


def test_a_truncated_images_file_is_named(tmp_path):
    paths = write_dataset(tmp_path, ellipses(6), ["train"] * 6)
    split, _ = open_split(*paths, "train")
    with open(paths[0], "r+b") as fh:
        fh.truncate(paths[0].stat().st_size - 100)
    with pytest.raises(InputError, match="images.npy: image 5 is cut short"):
        split[[5]]


def test_training_from_disk_with_workers_equals_training_in_memory(tmp_path):
    """Same batches in the same order, read in the training process or in two workers."""
    images = ellipses(24)
    paths = write_dataset(tmp_path, images, ["train"] * 24)
    in_memory, losses = train(tmp_path / "memory", images)
    from_disk, disk_losses = train(tmp_path / "disk", open_split(*paths, "train")[0], loader_workers=2,
                                   loader_prefetch=3)
    assert_same_weights(from_disk, in_memory)
    pd.testing.assert_frame_equal(disk_losses, losses)


@pytest.mark.parametrize("workers", [0, 1])
def test_the_loader_leaves_the_global_random_stream_to_the_model(workers):
    """Worker seeds come from the loader's own generator: torch's global one, which the training
    step draws its noise from, is where it was, so the steps compute what they did before."""
    stream = BatchStream(24, 8, torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    batches = iter(batch_loader(stream, ellipses(24), None, seed=3, device=torch.device("cpu"), workers=workers))
    x, _ = take(batches, stream)
    assert torch.equal(torch.get_rng_state(), before)
    assert x.shape == (8, 1, 32, 32)


def test_a_gpu_precision_setting_leaves_cpu_training_unchanged(tmp_path):
    plain, losses = train(tmp_path / "plain", ellipses(24))
    gpu, gpu_losses = train(tmp_path / "gpu", ellipses(24), amp="bf16", channels_last=True)
    assert_same_weights(gpu, plain)
    pd.testing.assert_frame_equal(gpu_losses, losses)


def test_bf16_autocast_trains_on_the_cpu(tmp_path):
    plain, _ = train(tmp_path / "plain", ellipses(48), budget={"steps": 60})
    bf16, losses = train(tmp_path / "bf16", ellipses(48), budget={"steps": 60}, amp="bf16", amp_on_cpu=True)
    assert np.isfinite(losses.drop(columns="step").to_numpy()).all()
    assert losses["loss"].iloc[-10:].mean() < 0.5 * losses["loss"].iloc[:5].mean()
    # it really ran in bf16: the weights differ from float32 training
    assert any(not torch.equal(bf16[k], plain[k]) for k in plain)


def test_amp_settings_are_checked():
    with pytest.raises(InputError, match="amp must be false, bf16 or fp16"):
        TrainerSettings.from_block("m", {**VAE_BLOCK, "amp": "fp8"})
    with pytest.raises(InputError, match="amp_on_cpu: the CPU autocasts to bf16 only"):
        TrainerSettings.from_block("m", {**VAE_BLOCK, "amp": "fp16", "amp_on_cpu": True})
    assert TrainerSettings.from_block("m", {**VAE_BLOCK, "amp": True}).precision == "fp16"
    assert TrainerSettings.from_block("m", VAE_BLOCK).precision is None
    with pytest.raises(InputError, match="log_every must be a positive integer"):
        TrainerSettings.from_block("m", {**VAE_BLOCK, "log_every": 0})


def test_losses_every_n_steps_are_the_means_of_the_steps(tmp_path):
    every, each = train(tmp_path / "each", ellipses(24))
    sparse_weights, sparse = train(tmp_path / "sparse", ellipses(24), log_every=5)
    assert_same_weights(sparse_weights, every)  # logging does not change training
    assert sparse["step"].tolist() == [5, 10, 12]  # the last row ends the run
    for row, (first, last) in zip(sparse.itertuples(), [(1, 5), (6, 10), (11, 12)]):
        window = each[(each["step"] >= first) & (each["step"] <= last)]
        for column in ("loss", "reconstruction", "kl"):
            assert getattr(row, column) == pytest.approx(window[column].mean(), rel=1e-6)


def test_a_run_stopped_inside_a_losses_window_resumes_exactly(tmp_path):
    """A stop (preemption, time slice) waits for the end of the window, so the checkpoint holds no
    half-summed losses and the resumed run writes the rows of an uninterrupted one."""
    keys = {**VAE_BLOCK, "budget": {"steps": STEPS}, "log_every": 4, "checkpoint_every": 3}
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    train_model("m", keys, ellipses(24), None, whole / "w.pt", whole / "l.csv", whole / "ck")
    assert train_model("m", keys, ellipses(24), None, pieces / "w.pt", pieces / "l.csv", pieces / "ck",
                       steps_this_call=5) is None
    train_model("m", keys, ellipses(24), None, pieces / "w.pt", pieces / "l.csv", pieces / "ck")
    pd.testing.assert_frame_equal(pd.read_csv(pieces / "l.csv"), pd.read_csv(whole / "l.csv"))
    assert_same_weights(torch.load(pieces / "w.pt", weights_only=False)["state_dict"],
                        torch.load(whole / "w.pt", weights_only=False)["state_dict"])


def test_split_images_never_hold_the_split(tmp_path):
    """Indexing reads only the rows asked for: a split far larger than what is read costs no memory
    (the file is sparse, so this runs in no time)."""
    path = tmp_path / "images.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(200_000, 64, 64))  # 3 GB
    big[123_456] = 0.5
    big.flush()
    del big
    split = SplitImages(path, np.arange(200_000))
    assert split[[123_456, 0]].shape == (2, 64, 64)
    assert float(split[123_456].max()) == 0.5
