"""The VAE family and the generic trainer: shapes, learning, determinism, kill-and-resume."""

from __future__ import annotations

import logging
import os
import platform
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

from pipeline_lib.core.errors import InputError
from pipeline_lib.models import available_families, build_model, family_source
from pipeline_lib.models.sampling import draw_samples
from pipeline_lib.models.training import load_trained_model, train_model

from helpers.images import ellipses
from helpers.models import SIZE, VAE_BLOCK


def test_vae_shapes_and_ranges():
    model = build_model("vae", SIZE, {"width": 8, "latent_dim": 16})
    x = torch.from_numpy(ellipses(4)).unsqueeze(1)
    assert model.reconstruct(x).shape == (4, 1, SIZE, SIZE)
    samples = model.sample(5)
    assert samples.shape == (5, 1, SIZE, SIZE)
    assert samples.min() >= 0
    assert samples.max() <= 1


def test_vae_published_defaults():
    model = build_model("vae", 128, {})
    assert model.hparams["latent_dim"] == 200
    assert model.hparams["lr"] == 1e-4
    assert model.hparams["batch_size"] == 64
    assert model.hparams["recon_weight"] == 0.025
    # 0.025 x 128 x 128 on the per-pixel squared error, as published
    x = torch.zeros(2, 1, 128, 128)
    x_hat = torch.full_like(x, 0.5)
    assert model.reconstruction_loss(x, x_hat).item() == pytest.approx(0.025 * 128 * 128 * 0.25)


def test_unknown_hyperparameter_is_rejected_before_training(tmp_path):
    block = {**VAE_BLOCK, "latnet_dim": 3}
    with pytest.raises(InputError, match="latnet_dim"):
        train_model("m", block, ellipses(24), None, tmp_path / "w.pt", tmp_path / "l.csv", tmp_path / "ck")
    assert not (tmp_path / "w.pt").exists()


def test_unknown_family_names_the_available_ones():
    with pytest.raises(InputError, match="vae"):
        family_source("no_such_family")
    assert "vae" in available_families()


def test_training_lowers_the_loss(tmp_path):
    block = {**VAE_BLOCK, "budget": {"steps": 60}}
    train_model("m", block, ellipses(24), None, tmp_path / "w.pt", tmp_path / "l.csv", tmp_path / "ck")
    losses = pd.read_csv(tmp_path / "l.csv")
    assert list(losses["step"]) == list(range(1, 61))
    first, last = losses["loss"][:10].mean(), losses["loss"][-10:].mean()
    assert last < 0.7 * first, (first, last)


def test_same_seed_same_weights_and_samples(tmp_path):
    runs = []
    for name in ("a", "b"):
        train_model(name, VAE_BLOCK, ellipses(24), None, tmp_path / f"{name}.pt", tmp_path / f"{name}.csv",
                    tmp_path / f"ck{name}")
        model, _ = load_trained_model(tmp_path / f"{name}.pt", device="cpu")
        runs.append((pd.read_csv(tmp_path / f"{name}.csv"), draw_samples(model, 6, seed=11)))
    pd.testing.assert_frame_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    model, _ = load_trained_model(tmp_path / "a.pt", device="cpu")
    assert not np.array_equal(draw_samples(model, 6, seed=12), runs[0][1])


def test_checkpoints_are_removed_after_success_and_keyed_by_config(tmp_path):
    train_model("m", VAE_BLOCK, ellipses(24), None, tmp_path / "w.pt", tmp_path / "l.csv", tmp_path / "ck")
    assert list((tmp_path / "ck").glob("*/checkpoint.pt")) == []
    summary = torch.load(tmp_path / "w.pt", weights_only=True)["summary"]
    assert summary["steps"] == 30
    assert summary["family"] == "vae"


def test_epochs_budget_counts_full_batches(tmp_path):
    summary = train_model("m", {**VAE_BLOCK, "budget": {"epochs": 2}}, ellipses(24), None, tmp_path / "w.pt",
                          tmp_path / "l.csv", tmp_path / "ck")
    assert summary["target_steps"] == summary["steps"] == 6  # 24 images, batch 8: 3 steps an epoch
    assert summary["incomplete"] is False


def test_budget_needs_steps_or_epochs_not_only_minutes(tmp_path):
    with pytest.raises(InputError, match="minutes is only a safety cap"):
        train_model("m", {**VAE_BLOCK, "budget": {"minutes": 5}}, ellipses(24), None, tmp_path / "w.pt",
                    tmp_path / "l.csv", tmp_path / "ck")
    with pytest.raises(InputError, match="'steps' or 'epochs'"):
        train_model("m", {**VAE_BLOCK, "budget": {"steps": 5, "epochs": 1}}, ellipses(24), None, tmp_path / "w.pt",
                    tmp_path / "l.csv", tmp_path / "ck")


def test_time_cap_marks_the_run_incomplete_and_a_larger_cap_continues_it(tmp_path, caplog):
    """The minutes cap only guards the machine: a run it stops says so, keeps its checkpoint, and
    a rerun with a larger cap ends exactly where an uncapped run ends."""
    block = {**VAE_BLOCK, "budget": {"steps": 20}}
    train_model("m", block, ellipses(24), None, tmp_path / "ref.pt", tmp_path / "ref.csv", tmp_path / "ck_ref")
    capped = {**VAE_BLOCK, "budget": {"steps": 20, "minutes": 1e-6}}  # 60 µs: one step, then the cap
    with caplog.at_level(logging.WARNING, logger="pipeline_lib.models.training"):
        summary = train_model("m", capped, ellipses(24), None, tmp_path / "w.pt", tmp_path / "l.csv", tmp_path / "ck")
    assert summary["incomplete"] is True
    assert summary["steps"] == 1
    assert summary["target_steps"] == 20
    assert "INCOMPLETE" in caplog.text
    assert "budget.minutes" in caplog.text
    assert torch.load(tmp_path / "w.pt", weights_only=True)["summary"]["incomplete"] is True
    assert len(list((tmp_path / "ck").glob("*/checkpoint.pt"))) == 1

    larger = {**VAE_BLOCK, "budget": {"steps": 20, "minutes": 60}}
    summary = train_model("m", larger, ellipses(24), None, tmp_path / "w.pt", tmp_path / "l.csv", tmp_path / "ck")
    assert summary["incomplete"] is False
    assert summary["steps"] == 20
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "l.csv"), pd.read_csv(tmp_path / "ref.csv"))
    ref = torch.load(tmp_path / "ref.pt", weights_only=True)["state_dict"]
    new = torch.load(tmp_path / "w.pt", weights_only=True)["state_dict"]
    for key in ref:
        torch.testing.assert_close(new[key], ref[key], rtol=0, atol=0)
    assert list((tmp_path / "ck").glob("*/checkpoint.pt")) == []


RESUMABLE_RUN = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from helpers.images import ellipses
    from helpers.models import VAE_BLOCK
    from pipeline_lib.models.training import train_model
    from pathlib import Path
    out = Path({out!r})
    block = dict(VAE_BLOCK, budget={{"steps": 400}}, checkpoint_every=10)
    train_model("m", block, ellipses(24), None, out / "w.pt", out / "l.csv", out / "ck")
    """
)


def run_training_subprocess(out: Path) -> subprocess.Popen:
    script = RESUMABLE_RUN.format(tests=str(Path(__file__).parent), out=str(out))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", script], env=env)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_training_resumes_where_it_stopped(tmp_path, sig):
    """A job killed mid-run (time limit, preemption) continues from its last checkpoint
    and produces exactly the losses of an uninterrupted run."""
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    reference.mkdir(), interrupted.mkdir()
    assert run_training_subprocess(reference).wait(timeout=300) == 0

    proc = run_training_subprocess(interrupted)
    deadline = time.monotonic() + 240
    while not list((interrupted / "ck").glob("*/checkpoint.pt")):
        assert time.monotonic() < deadline, "no checkpoint appeared"
        assert proc.poll() is None, "no checkpoint appeared"
        time.sleep(0.05)
    checkpoint = next((interrupted / "ck").glob("*/checkpoint.pt"))
    while torch.load(checkpoint, weights_only=True)["step"] < 30:
        assert time.monotonic() < deadline
        assert proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert not (interrupted / "w.pt").exists(), "the run finished before it could be killed"
    killed_at = torch.load(checkpoint, weights_only=True)["step"]
    assert 30 <= killed_at < 400

    assert run_training_subprocess(interrupted).wait(timeout=300) == 0
    expected = pd.read_csv(reference / "l.csv")
    resumed = pd.read_csv(interrupted / "l.csv")
    # Same global steps 1..400 (no restart from 0) and bit-identical losses on CPU.
    pd.testing.assert_frame_equal(resumed, expected)
    ref_state = torch.load(reference / "w.pt", weights_only=True)["state_dict"]
    new_state = torch.load(interrupted / "w.pt", weights_only=True)["state_dict"]
    for key in ref_state:
        torch.testing.assert_close(new_state[key], ref_state[key], rtol=0, atol=0)


def test_family_sources_follow_package_imports():
    """A family's code inputs include the modules it builds on, so their edits rerun it."""
    from pipeline_lib.models import family_sources

    names = {path.name for path in family_sources("dfc_vae")}
    assert {"dfc_vae.py", "vae.py", "base.py"} <= names
    assert "dcgan.py" not in names
    import pipeline_lib.models

    models = Path(pipeline_lib.models.__file__).parent
    assert {path.relative_to(models).as_posix() for path in family_sources("vae")} == {
        "families/vae.py", "families/hparams/vae.py", "families/hparams/fields.py", "base.py", "losses.py"}


MALLOC_64_MIB_AND_FREE = textwrap.dedent("""
    import ctypes, sys
    from pipeline_lib.core.runtime import reuse_freed_host_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    applied = reuse_freed_host_memory() if sys.argv[1] == "tuned" else None
    before = libc.mallinfo2()
    block = libc.malloc(64 << 20)
    during = libc.mallinfo2()
    libc.free(block)
    after = libc.mallinfo2()
    mmapped = during.hblkhd - before.hblkhd >= 64 << 20
    kept_in_heap = during.uordblks - before.uordblks >= 64 << 20 and after.arena >= during.arena
    print(applied, mmapped, kept_in_heap)
""")


def malloc_probe(mode: str, env: dict | None = None) -> str:
    """Whether a 64 MiB block was mmapped, and whether the heap kept it after free, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", MALLOC_64_MIB_AND_FREE, mode], check=True,
                         capture_output=True, text=True, env={**os.environ, **(env or {})})
    return out.stdout.strip()


glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="the trainer's malloc setting exists only for glibc (Linux); "
                                       "on macOS or musl it is a documented no-op")


@glibc_only
def test_cpu_training_reuses_freed_memory_instead_of_unmapping_it():
    """By default glibc serves a 64 MiB block with mmap (unmapped again on free, so every training
    step page-faults its gradients back in); after the trainer's setting it comes from the heap,
    and the heap keeps it after free for the next step."""
    assert malloc_probe("default") == "None True False"
    assert malloc_probe("tuned") == "True False True"


@glibc_only
def test_users_malloc_settings_are_left_alone():
    assert malloc_probe("tuned", {"MALLOC_MMAP_MAX_": "65536"}) == "False True False"
    assert malloc_probe("tuned", {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000"}) == "False True False"


FREE_BLOCKS_UNDER_SMALL_ONES = textwrap.dedent("""
    import sys
    import numpy as np
    from pipeline_lib.core.jobs import return_freed_host_memory

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    applied = return_freed_host_memory() if sys.argv[1] == "jobs" else None
    freed = np.ones(16 * 2**20 // 8); del freed            # glibc raises its threshold past 8 MB
    before = rss_mb()
    blocks = [np.ones(8 * 2**20 // 8) for _ in range(16)]   # 128 MB, as 8 MB batches
    small = [np.ones(1000) for _ in range(16)]              # allocated above them
    del blocks
    print(applied, round(rss_mb() - before))
""")


@glibc_only
def test_jobs_give_freed_batches_back_instead_of_keeping_them_in_the_heap():
    """A job's batch-sized blocks freed under later small ones stay resident by default (the heap
    cannot shrink below them); with start_job's setting each was mapped on its own and unmapped."""
    def probe(mode, env=None):
        out = subprocess.run([sys.executable, "-c", FREE_BLOCKS_UNDER_SMALL_ONES, mode], check=True,
                             capture_output=True, text=True, env={**os.environ, **(env or {})})
        applied, kept_mb = out.stdout.split()
        return applied, int(kept_mb)

    applied, kept_mb = probe("default")
    assert kept_mb >= 100, f"the default allocator kept {kept_mb} MB: the probe no longer shows the effect"
    applied, kept_mb = probe("jobs")
    assert applied == "True"
    assert kept_mb < 20
    assert probe("jobs", {"MALLOC_MMAP_THRESHOLD_": "65536"})[0] == "False"
