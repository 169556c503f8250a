"""Evaluation reads its splits from disk a block at a time (issue 22): the streamed helpers give what
the whole split in memory gave, and the memory request follows the blocks, not the split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline_lib.core import resources
from pipeline_lib.core.slices import ConcatImages, SplitImages, load_split, open_split, take_images, validate_images
from pipeline_lib.evaluation import pixel_metrics
from pipeline_lib.evaluation.domain_features import ClassifierSettings, fit_slice_cnn
from pipeline_lib.evaluation.memorization import nearest_by_mse


def write_dataset(folder, shape, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random(shape, dtype=np.float32)
    np.save(folder / "images.npy", images)
    n = shape[0]
    pd.DataFrame({"subject": [f"s{i // 4}" for i in range(n)],
                  "split": ["test" if (i // 4) % 3 == 0 else "train" for i in range(n)],
                  "sequence": "t1+t2" if len(shape) == 4 else "t1"}).to_csv(folder / "slices.tsv", sep="\t", index=False)
    return folder / "images.npy", folder / "slices.tsv"


@pytest.mark.parametrize("shape", [(60, 16, 16), (60, 2, 16, 16)])
@pytest.mark.parametrize("subset", [None, 9])
def test_open_split_reads_what_load_split_loads(tmp_path, shape, subset):
    paths = write_dataset(tmp_path, shape)
    for split in ("train", "test"):
        for grey in (False, True):
            loaded, loaded_rows = load_split(*paths, split, n=subset, seed=5, grey=grey)
            streamed, streamed_rows = open_split(*paths, split, n=subset, seed=5, grey=grey)
            assert streamed.shape == loaded.shape
            assert len(streamed) == len(loaded)
            np.testing.assert_array_equal(streamed[:], loaded)
            pd.testing.assert_frame_equal(streamed_rows, loaded_rows)
            order = np.random.default_rng(1).permutation(len(loaded))[:7]
            np.testing.assert_array_equal(streamed[order], loaded[order])
            np.testing.assert_array_equal(streamed.take(order)[::-1], loaded[order][::-1])
            np.testing.assert_array_equal(take_images(loaded, order), loaded[order])
            np.testing.assert_array_equal(streamed[3], loaded[3])


def test_a_grey_view_reads_single_channels_of_the_file(tmp_path):
    paths = write_dataset(tmp_path, (8, 3, 16, 16))
    data = np.load(paths[0])
    grey = SplitImages(paths[0], np.array([5, 2]), grey=True)
    assert grey.shape == (6, 16, 16)
    np.testing.assert_array_equal(grey[:], np.concatenate([data[5], data[2]]))
    assert np.array_equal(grey.take([4]).rows, [2])  # the table row a grey image came from


def test_concatenated_images_index_across_their_parts(tmp_path):
    paths = write_dataset(tmp_path, (40, 16, 16))
    split, _ = open_split(*paths, "train")
    extra = np.random.default_rng(3).random((5, 16, 16), dtype=np.float32)
    joined = ConcatImages(split, extra)
    whole = np.concatenate([split[:], extra])
    assert joined.shape == whole.shape
    order = np.random.default_rng(0).permutation(len(whole))
    np.testing.assert_array_equal(joined[order], whole[order])
    np.testing.assert_array_equal(joined[-1], whole[-1])
    validate_images(joined, "joined")
    with pytest.raises(Exception, match="cannot join"):
        ConcatImages(split, extra[:, :8])


def brute_nearest(queries, references):
    q, r = queries.reshape(len(queries), -1).astype(np.float64), references.reshape(len(references), -1).astype(np.float64)
    mse = ((q[:, None, :] - r[None, :, :]) ** 2).mean(axis=2)
    return mse.argmin(axis=1), mse.min(axis=1)


@pytest.mark.parametrize("block", [1, 4, 7, 256])
def test_nearest_search_over_a_split_on_disk_is_the_brute_force_one(tmp_path, block):
    paths = write_dataset(tmp_path, (50, 8, 8))
    references, _ = open_split(*paths, "train")
    queries = np.random.default_rng(2).random((13, 8, 8), dtype=np.float32)
    queries[4] = references[11]  # an exact copy: distance 0
    index, mse = nearest_by_mse(queries, references, block)
    expected_index, expected_mse = brute_nearest(queries, references[:])
    np.testing.assert_array_equal(index, expected_index)
    np.testing.assert_allclose(mse, expected_mse, rtol=1e-12, atol=1e-15)
    assert index[4] == 11
    assert mse[4] == 0.0
    in_memory = nearest_by_mse(queries, references[:], block)
    np.testing.assert_array_equal(index, in_memory[0])
    np.testing.assert_array_equal(mse, in_memory[1])  # bit for bit: the same tiles in the same order


def test_nearest_search_breaks_ties_to_the_lowest_index(tmp_path):
    base = np.random.default_rng(0).random((6, 8, 8), dtype=np.float32)
    references = np.concatenate([base, base])  # every image twice
    index, _ = nearest_by_mse(base, references, block=4)
    np.testing.assert_array_equal(index, np.arange(6))


def test_streamed_pixel_statistics_equal_the_whole_array_ones(tmp_path):
    paths = write_dataset(tmp_path, (600, 12, 12))
    split, _ = open_split(*paths, "train")
    whole = split[:]
    samples = np.random.default_rng(4).random((30, 12, 12), dtype=np.float32)
    # against brute force over all pairs
    pairs = ((samples[:, None].astype(np.float64) - whole[None].astype(np.float64)) ** 2).mean(axis=(2, 3))
    assert pixel_metrics.dataset_similarity(samples, split) == pytest.approx(pairs.mean(), rel=1e-10)
    # against the in-memory path, bit for bit
    assert pixel_metrics.dataset_similarity(samples, split) == pixel_metrics.dataset_similarity(samples, whole)
    assert pixel_metrics.intra_sample_diversity(split) == pixel_metrics.intra_sample_diversity(whole)
    assert pixel_metrics.minimum_isd(split, block=64) == pixel_metrics.minimum_isd(whole, block=64)
    np.testing.assert_array_equal(pixel_metrics.laplacian_variance(split), pixel_metrics.laplacian_variance(whole))
    reconstructions = np.clip(whole + 0.01, 0, 1)
    assert pixel_metrics.reconstruction_mse(split, reconstructions) == pixel_metrics.reconstruction_mse(whole, reconstructions)
    other = ((whole[:, None].astype(np.float64) - whole[None].astype(np.float64)) ** 2).mean(axis=(2, 3))
    np.fill_diagonal(other, np.inf)
    assert pixel_metrics.minimum_isd(split, block=64) == pytest.approx(other.min(axis=1).mean(), rel=1e-10)


def test_a_classifier_trained_from_disk_equals_one_trained_in_memory(tmp_path):
    torch.set_num_threads(1)
    paths = write_dataset(tmp_path, (80, 16, 16))
    split, _ = open_split(*paths, "train")
    labels = np.arange(len(split)) % 2
    settings = ClassifierSettings(steps=6, batch_size=8, width=4, feature_dim=8)
    from_disk = fit_slice_cnn(split, labels=labels, n_classes=2, settings=settings, seed=3)
    in_memory = fit_slice_cnn(split[:], labels=labels, n_classes=2, settings=settings, seed=3)
    for a, b in zip(from_disk.state_dict().values(), in_memory.state_dict().values()):
        assert torch.equal(a, b)


def test_the_streamed_request_follows_blocks_not_whole_copies():
    small, large = resources.ImageSet(1_000, 128 * 128), resources.ImageSet(1_000_000, 128 * 128)
    samples = resources.ImageSet(1000, 128 * 128)
    mb = resources.streamed_evaluation_mb
    # grows with the dataset (its table rows and features), the image size, the samples, the held images
    assert mb(large) > mb(small)
    assert mb(resources.ImageSet(1_000, 256 * 256)) > mb(small)
    assert mb(small, samples) > mb(small)
    assert mb(small, None, 2000) > mb(small)
    # ... but by bookkeeping bytes per slice, not by the slices: a million 128 px slices (65 GB as
    # float32) need far less than one copy of them
    assert mb(large) < large.mb / 10
    assert mb(large) - mb(small) == pytest.approx(999_000 * resources.EVAL_BYTES_PER_IMAGE / resources.MB)
    # never below what torch alone takes
    assert mb(resources.ImageSet(0, 16 * 16)) > resources.TORCH_MB


@pytest.mark.parametrize("shape", [(3, 4, 16, 16), (3, 4, 2, 16, 16)])
def test_sample_blocks_are_read_a_chunk_at_a_time_as_their_grey_images(tmp_path, shape):
    from pipeline_lib.core.slices import grey_images
    from pipeline_lib.evaluation.fid import _MappedImages

    stack = np.random.default_rng(0).random(shape, dtype=np.float32)
    np.save(tmp_path / "blocks.npy", stack)
    mapped = _MappedImages(tmp_path / "blocks.npy", leading=2)
    flat = grey_images(stack.reshape((-1,) + shape[2:]))
    assert mapped.shape == flat.shape
    assert len(mapped) == len(flat)
    np.testing.assert_array_equal(mapped[2:9], flat[2:9])
    np.testing.assert_array_equal(mapped[np.array([5, 0])], flat[[5, 0]])


@pytest.mark.parametrize("block", [1, 3, 4096])
def test_cosine_search_in_tiles_is_the_whole_matrix_one(block):
    from pipeline_lib.evaluation.memorization import nearest_by_cosine

    rng = np.random.default_rng(0)
    references = rng.normal(size=(40, 6))
    queries = np.concatenate([rng.normal(size=(9, 6)), references[[7, 7]] * 3.0, np.zeros((1, 6))])
    references = np.concatenate([references, references[[7]]])  # a tie: the lower index wins
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    whole = unit(queries) @ unit(references).T
    index, distance = nearest_by_cosine(queries, references, block=block)
    np.testing.assert_array_equal(index, whole.argmax(axis=1))
    np.testing.assert_allclose(distance, np.clip(1 - whole.max(axis=1), 0, 2), rtol=0, atol=1e-12)
    assert index[9] == index[10] == 7
    assert distance[-1] == 1.0
