"""evaluation.fid.fresh_samples: the fid_samples job draws one fresh, seeded sample set per FID repeat."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pipeline_lib.models.sampling import block_seed, draw_samples, fid_samples_job, sample_model
from pipeline_lib.models.training import load_trained_model, train_model

BLOCK = {"family": "vae", "width": 8, "latent_dim": 16, "batch_size": 8, "lr": 1e-3,
         "budget": {"steps": 2}, "seed": 3}


def test_block_seeds_differ_from_each_other_and_from_the_sampling_seed():
    seeds = [block_seed(0, r) for r in range(20)]
    assert len(set(seeds)) == 20
    assert 0 not in seeds
    assert seeds == [block_seed(0, r) for r in range(20)]  # the same on every call
    assert block_seed(1, 0) != block_seed(0, 0)


@pytest.mark.usefixtures("one_thread")
def test_fid_samples_job_writes_one_fresh_block_per_repeat(tmp_path):
    images = np.random.default_rng(0).random((16, 32, 32)).astype(np.float32)
    train_model("m", BLOCK, images, None, tmp_path / "m.pt", tmp_path / "m.csv", tmp_path / "ck", device="cpu")
    sampling = {"n": 5, "seed": 4, "n_reconstruct": 0}
    out = fid_samples_job(tmp_path / "m.pt", sampling, 3, tmp_path / "blocks.npy", device="cpu")
    assert out == {"n_blocks": 3, "block_size": 5}
    blocks = np.load(tmp_path / "blocks.npy")
    assert blocks.shape == (3, 5, 32, 32)
    assert blocks.dtype == np.float32
    sample_model(tmp_path / "m.pt", 5, 4, tmp_path / "s.npy", tmp_path / "g.png", tmp_path / "r.npy",
                 tmp_path / "l.tsv", device="cpu")
    main = np.load(tmp_path / "s.npy")
    for r in range(3):
        assert not np.array_equal(blocks[r], main)
        for q in range(r):
            assert not np.array_equal(blocks[r], blocks[q])
    model, _ = load_trained_model(tmp_path / "m.pt", device="cpu")
    np.testing.assert_array_equal(blocks[2], draw_samples(model, 5, block_seed(4, 2)))
    # written block by block, the file is the one np.save writes for the whole stack
    stacked = io.BytesIO()
    np.save(stacked, np.stack([draw_samples(model, 5, block_seed(4, r)) for r in range(3)]))
    assert (tmp_path / "blocks.npy").read_bytes() == stacked.getvalue()
