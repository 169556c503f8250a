"""Cluster requests computed from the data (core/resources.py): they grow with the data and the attempt."""

import numpy as np
import pytest

from pipeline_lib.core import resources
from pipeline_lib.core.settings import DatasetSettings

from helpers.workflow import discovered_checkout

GRID = (128, 128, 40)


def test_every_request_grows_with_the_attempt():
    for attempt in (1, 2):
        assert resources.request_mb(3000, attempt + 1) > resources.request_mb(3000, attempt)
        assert resources.request_minutes(30, attempt + 1) > resources.request_minutes(30, attempt)
    assert resources.request_mb(3000, 1) == 3000
    assert resources.request_mb(3000, 2) == 4500


def test_requests_are_whole_hundreds_of_mb_and_never_below_the_floor():
    assert resources.request_mb(2001, 1) == 2100
    assert resources.request_mb(0.5, 1) == resources.request_mb(1001, 1) == resources.MIN_REQUEST_MB == 2000
    assert resources.request_mb(0.5, 2) == 3000  # the floor grows with the attempt too


@pytest.mark.parametrize("formula", [
    lambda s: resources.slice_dataset_mb(s, GRID),
    lambda s: resources.train_mb("vae", 64, s),
    lambda s: resources.sample_mb("dcgan", 1000, 64, s),
    lambda s: resources.streamed_evaluation_mb(s),
    lambda s: resources.features_mb(s),
    lambda s: resources.report_mb(100, s),
])
def test_dataset_sized_requests_grow_with_the_dataset(formula):
    small, large = resources.ImageSet(1_000, 128 * 128), resources.ImageSet(100_000, 128 * 128)
    assert formula(large) > formula(small)
    wider = resources.ImageSet(1_000, 256 * 256)
    assert formula(wider) > formula(small)


def test_per_subject_requests_grow_with_the_input():
    assert resources.ingest_mb(500 * resources.MB) > resources.ingest_mb(10 * resources.MB)
    assert resources.register_mb(300 * resources.MB, GRID) > resources.register_mb(30 * resources.MB, GRID)
    assert resources.register_mb(30 * resources.MB, (256, 256, 80)) > resources.register_mb(30 * resources.MB, GRID)
    assert resources.table_mb(40_000) > resources.table_mb(100)
    assert resources.distribution_mb(100_000) > resources.distribution_mb(1_000)
    assert resources.features_minutes(100_000) > resources.features_minutes(1_000)


def test_train_request_grows_with_batch_and_depends_on_the_family():
    data = resources.ImageSet(10_000, 128 * 128)
    assert resources.train_mb("vae", 128, data) > resources.train_mb("vae", 64, data)
    assert resources.train_mb("stylegan", 64, data) > resources.train_mb("dcgan", 64, data)
    # a family the table does not know gets the largest factor, never the smallest
    assert resources.train_mb("new_family", 64, data) >= resources.train_mb("stylegan", 64, data)


def test_published_train_peaks_fit_their_request():
    """The fitted factors reproduce bench/results/published_scale.md's peaks (whole process)."""
    tiny = resources.ImageSet(0, 128 * 128)
    for family, batch, peak_mb in [("vae", 64, 2430), ("stylegan", 16, 7909), ("dcgan", 64, 1537),
                                   ("intro_vae", 8, 3108), ("wgan", 64, 1256), ("dfc_vae", 64, 5671)]:
        assert resources.train_mb(family, batch, tiny) >= peak_mb, family


def test_npy_header_gives_the_written_shape(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, np.zeros((7, 2, 16, 8), dtype=np.float32))
    assert resources.npy_shape(path) == (7, 2, 16, 8)
    assert resources.image_set(path) == resources.ImageSet(7, 2 * 16 * 8)
    assert resources.npy_shape(tmp_path / "missing.npy") is None
    assert resources.dataset_size(tmp_path / "missing.npy", resources.ImageSet(3, 4)) == resources.ImageSet(3, 4)
    assert resources.dataset_size(path, resources.ImageSet(3, 4)) == resources.ImageSet(7, 256)


def test_a_file_that_holds_no_array_gives_no_size(tmp_path):
    """A failed run's record or a --touch placeholder where an array is expected: the request is
    estimated instead (raising here stopped every dry run after a failed run)."""
    for content in (b"", b'{"status": "failed", "stage": "sample", "reason": "signal 9"}\n'):
        path = tmp_path / "samples.npy"
        path.write_bytes(content)
        assert resources.npy_shape(path) is None
        assert resources.dataset_size(path, resources.ImageSet(3, 4)) == resources.ImageSet(3, 4)


def test_estimated_dataset_follows_selection_channels_and_augmentation():
    axial = DatasetSettings(selection={"mode": "drop", "low": 8, "high": 6})
    assert resources.slices_per_volume(axial, GRID) == 26
    assert resources.estimated_dataset(axial, GRID, 100) == resources.ImageSet(2600, 128 * 128)
    # every sequence is its own image unless stacked as channels
    assert resources.estimated_dataset(axial, GRID, 100, sequences=4).images == 4 * 2600
    stacked = DatasetSettings(channels=["t1", "t2"], selection={"mode": "range", "first": 10, "last": 19})
    assert resources.estimated_dataset(stacked, GRID, 100, sequences=4) == resources.ImageSet(1000, 2 * 128 * 128)
    sagittal = DatasetSettings(axis="sagittal", selection={"mode": "central", "n": 5}, size=[64, 64])
    assert resources.estimated_dataset(sagittal, GRID, 10) == resources.ImageSet(50, 64 * 64)
    augmented = DatasetSettings(selection={"mode": "central", "n": 1}, augmentation={"count": 10}, test_fraction=0.5)
    assert resources.estimated_dataset(augmented, GRID, 100).images == 100 + 50 * 10
    on_the_fly = DatasetSettings(selection={"mode": "central", "n": 1}, test_fraction=0.5,
                                 augmentation={"count": 48510, "mode": "on_the_fly"})
    assert resources.estimated_dataset(on_the_fly, GRID, 100).images == 100


def test_source_bytes_counts_files_and_series_folders(tmp_path):
    volume = tmp_path / "t1.nii.gz"
    volume.write_bytes(b"x" * 1000)
    series = tmp_path / "series"
    series.mkdir()
    for i in range(3):
        (series / f"IM{i}.dcm").write_bytes(b"")
    assert resources.source_bytes([volume]) == 1000
    assert resources.source_bytes([series]) == resources.SERIES_FOLDER_BYTES
    assert resources.source_bytes([tmp_path / "missing"]) == 0
    # a folder's real bytes where a stat per file is affordable (a subject's ingested volumes)
    assert resources.bytes_on_disk([series, volume]) == 1000


# ---- the workflow's requests, through a dry run -------------------------------------------------

def test_dry_run_shows_requests_sized_from_the_cohort(tmp_path):
    """bench/job_requests.py on a copy of the workflow whose discovery table lists 2,000 subjects:
    dataset-sized requests follow the configured grid and image size, and a retry asks for more."""
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "bench"))
    from job_requests import job_requests

    config = yaml.safe_load((repo / "config.yaml").read_text())
    config["registration"]["grid"] = [128, 128, 40]
    config["slicing"].update(image_size=128, drop_top=6, drop_bottom=8)
    work = discovered_checkout(tmp_path, config, subjects=2000)

    def requests(attempt):
        rows, _ = job_requests(work, ["all"], [], attempt, work / "profiles/slurm")
        return {(row["rule"], row["wildcards"]): row for row in rows}

    first, second = requests(1), requests(2)
    dataset = resources.ImageSet(2000 * 26, 128 * 128)  # 40 axial slices less 6 + 8 dropped
    slicing = first[("slice_dataset", "dataset=default")]
    assert slicing["mem_mb"] == resources.request_mb(resources.slice_dataset_mb(dataset, (128, 128, 40)), 1)
    train = first[("train", "model=vae,seed=0")]
    assert train["mem_mb"] == resources.request_mb(resources.train_mb("vae", 16, dataset), 1)
    assert train["mem_mb"] > 8000 > first[("train", "model=dcgan_kazuhiro,seed=0")]["mem_mb"] / 10
    for key, row in first.items():
        assert second[key]["mem_mb"] > row["mem_mb"], key


def test_inception_requests_grow_with_the_features_only_as_the_images_are_read_a_chunk_at_a_time():
    chunked = resources.ImageSet(2 * resources.EVAL_BLOCK_IMAGES, 128 * 128)
    large = resources.ImageSet(100_000, 128 * 128)
    features = (large.images - chunked.images) * resources.FEATURE_BYTES * 2 / resources.MB
    assert resources.features_mb(large) - resources.features_mb(chunked) == pytest.approx(features)
    # one chunk of images (and its cropped copy) in memory, never the split
    chunk = 2 * resources.EVAL_BLOCK_IMAGES * large.pixels * resources.FLOAT32 / resources.MB
    assert resources.features_mb(large) == pytest.approx(
        resources.INCEPTION_MB + large.images * resources.FEATURE_BYTES * 2 / resources.MB + chunk)
    # a run's samples, loaded whole, count twice (their grey view)
    samples = resources.ImageSet(1_000, 128 * 128)
    assert resources.features_mb(chunked, samples) == pytest.approx(resources.features_mb(chunked) + 2 * samples.mb)
