"""Cluster requests computed from the data (core/resources.py): they grow with the data and the attempt."""

import math

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


@pytest.mark.parametrize("formula, grows_with_image_size", [
    # slicing writes the images as it makes them: only its table rows grow with the dataset
    (lambda s: resources.slice_dataset_mb(s, GRID), False),
    (lambda s: resources.train_mb("vae", 64, s), True),
    (lambda s: resources.sample_mb("dcgan", 1000, 64, s), True),
    (lambda s: resources.streamed_evaluation_mb(s), True),
    (lambda s: resources.features_mb(s), True),
    (lambda s: resources.report_mb(100, s), True),
])
def test_dataset_sized_requests_grow_with_the_dataset(formula, grows_with_image_size):
    small, large = resources.ImageSet(1_000, 128 * 128), resources.ImageSet(100_000, 128 * 128)
    assert formula(large) > formula(small)
    wider = resources.ImageSet(1_000, 256 * 256)
    assert (formula(wider) > formula(small)) == grows_with_image_size


@pytest.mark.parametrize("formula", [
    lambda s: resources.slice_dataset_mb(s, GRID),
    lambda s: resources.train_mb("vae", 64, s),
    lambda s: resources.sample_mb("vae", 2000, 64, s),
])
def test_jobs_that_stream_their_images_ask_far_less_than_the_dataset_at_biobank_size(formula):
    """40,000 subjects x 26 slices of 128 px are 68 GB of float32; slicing, training and sampling
    read or write them from disk, so only their table rows (4 KB a slice) grow with it."""
    biobank = resources.ImageSet(40_000 * 26, 128 * 128)
    assert formula(biobank) < biobank.mb / 8
    assert formula(biobank) - formula(resources.ImageSet(0, 128 * 128)) == pytest.approx(
        biobank.images * resources.TABLE_BYTES_PER_IMAGE / resources.MB)


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
    # the latent diffusion families' kept posterior moments are part of their request
    assert resources.train_mb("ldm", 64, data) - resources.train_mb("ddpm", 64, data) == resources.POSTERIOR_CACHE_MB
    # a family the table does not know gets the largest factor, never the smallest
    assert resources.train_mb("new_family", 64, data) >= resources.train_mb("stylegan", 64, data)


def test_published_train_peaks_fit_their_request():
    """The fitted factors reproduce bench/results/published_scale.md's peaks (whole process)."""
    tiny = resources.ImageSet(0, 128 * 128)
    for family, batch, peak_mb in [("vae", 64, 2487), ("stylegan", 16, 9644), ("dcgan", 64, 1470),
                                   ("intro_vae", 8, 3101), ("wgan", 64, 1221), ("dfc_vae", 64, 5453)]:
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

#: Rules on the SLURM profile's default time limit (1 h, doubled per attempt), deliberately: targets,
#: and jobs whose work does not grow with the cohort or the images (discovery lists the input tree:
#: 82 s at 40,000 subjects, bench/results/dag_40000.md; the weights' offline copy; the demo's 12
#: phantoms; scoring a reader study's answers).
ON_PROFILE_DEFAULT = {"all", "evaluation_beyond_fid", "distribution_metrics_all", "volume_datasets", "reader_volume_kits",
                      "discover_inputs", "fid_weights", "demo_cohort", "reader_scores", "reader_volume_scores"}

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
    # the images stay on disk and are read a batch at a time (bench/results/rule_rss.md)
    assert train["mem_mb"] < dataset.mb
    for key, row in first.items():
        assert second[key]["mem_mb"] > row["mem_mb"], key
    # every rule's time limit is its own, computed from the data (x1.5 per attempt), but for
    # ON_PROFILE_DEFAULT's, which take the SLURM profile's 1 h (x2)
    for key, row in first.items():
        if key[0] in ON_PROFILE_DEFAULT:
            assert (row["runtime"], second[key]["runtime"]) == (60, 120), key
        elif key[0] != "train":  # training's own limit (tests/test_step_timing.py) doubles without a speed
            assert row["runtime"] < second[key]["runtime"] < 2 * row["runtime"], key
    assert {rule for rule, _ in first} >= {"slice_dataset", "domain_network", "sample", "report", "qc_tables"}
    grid = (128, 128, 40)
    assert slicing["runtime"] == resources.capped_request_minutes(resources.slice_dataset_minutes(2000, grid), 1)
    domain = first[("domain_network", "dataset=default")]
    assert domain["runtime"] == resources.capped_request_minutes(resources.domain_network_minutes(200, 32, dataset), 1)


def test_dry_run_time_limits_stay_under_the_sites_maximum(tmp_path, monkeypatch):
    """The site's max_runtime_minutes caps every computed time limit, as it caps training's."""
    import sys
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "bench"))
    from job_requests import job_requests

    config = yaml.safe_load((repo / "config.yaml").read_text())
    work = discovered_checkout(tmp_path, config, subjects=40_000)
    monkeypatch.setenv("PIPELINE_SLURM_MAX_RUNTIME_MINUTES", "30")
    rows, _ = job_requests(work, ["all"], [], 3, work / "profiles/slurm")
    computed = [row for row in rows if row["rule"] not in ON_PROFILE_DEFAULT]
    assert computed and all(row["runtime"] <= 30 for row in computed), [r for r in computed if r["runtime"] > 30]
    # slicing 40,000 subjects' volumes needs more than the cap on a third attempt: it asks for the cap
    assert resources.request_minutes(resources.slice_dataset_minutes(40_000, tuple(config["registration"]["grid"])), 3) > 30
    assert [row["runtime"] for row in rows if row["rule"] == "slice_dataset"] == [30]


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


# ---- time limits (minutes) ----------------------------------------------------------------------

DATA = resources.ImageSet(10_000, 128 * 128)
MORE = resources.ImageSet(100_000, 128 * 128)
WIDER = resources.ImageSet(10_000, 256 * 256)


@pytest.mark.parametrize("formula", [
    lambda s: resources.domain_network_minutes(300, 32, s),
    lambda s: resources.domain_metrics_minutes(s, s.images // 2),
    lambda s: resources.conditioning_minutes(300, 32, s, s.images // 5, 1000),
    lambda s: resources.utility_minutes(3, 200, 32, s, s.images // 5, 1000),
    lambda s: resources.nearest_pairs_minutes(1000, s, encoded=s.images),
    lambda s: resources.intensity_minutes(s, 1000),
    lambda s: resources.sample_minutes("stylegan", s),
])
def test_time_limits_grow_with_the_images_and_their_size(formula, monkeypatch):
    monkeypatch.setattr(resources, "RULE_FLOOR_MINUTES", 0)  # the formula itself, not the floor
    assert formula(MORE) > formula(DATA)
    assert formula(WIDER) > formula(DATA)


def test_time_limits_grow_with_their_other_items(monkeypatch):
    monkeypatch.setattr(resources, "RULE_FLOOR_MINUTES", 0)
    assert resources.diversity_minutes(100_000, WIDER) > resources.diversity_minutes(100_000, DATA)
    assert resources.diversity_minutes(100_000, DATA) > resources.diversity_minutes(1_000, DATA)
    grid = (128, 128, 40)
    assert resources.slice_dataset_minutes(40_000, grid) > resources.slice_dataset_minutes(2_000, grid)
    assert resources.slice_dataset_minutes(2_000, grid, copies=10) > resources.slice_dataset_minutes(2_000, grid)
    assert resources.slice_dataset_minutes(2_000, (197, 233, 189)) > resources.slice_dataset_minutes(2_000, grid)
    assert resources.volume_dataset_minutes(40_000, grid) > resources.volume_dataset_minutes(2_000, grid)
    assert resources.table_minutes(400_000) > resources.table_minutes(100)
    assert resources.report_minutes(400_000, 4) > resources.report_minutes(100, 4)
    assert resources.report_minutes(100, 400) > resources.report_minutes(100, 4)
    assert resources.domain_network_minutes(30_000, 32, DATA) > resources.domain_network_minutes(300, 32, DATA)
    assert resources.utility_minutes(30, 200, 32, DATA, 2000, 0) > resources.utility_minutes(3, 200, 32, DATA, 2000, 0)
    assert resources.utility_minutes(3, 200, 32, DATA, 2000, 10**6) > resources.utility_minutes(3, 200, 32, DATA, 2000, 0)
    assert resources.conditioning_minutes(3000, 32, DATA, 2000, 0) > resources.conditioning_minutes(300, 32, DATA, 2000, 0)
    assert resources.kit_minutes(100_000) > resources.kit_minutes(100)
    assert resources.nearest_pairs_minutes(100_000, MORE) > resources.nearest_pairs_minutes(1_000, MORE)
    statistics = dict(kid_subsets=100, kid_subset_size=1000, prdc_max_real=10_000, prdc_max_samples=10_000)
    assert (resources.distribution_minutes(50_000, 10_000, fid_repeats=20, **statistics)
            > resources.distribution_minutes(50_000, 10_000, fid_repeats=1, **statistics))
    assert (resources.distribution_minutes(500_000, 10_000, fid_repeats=1, **statistics)
            > resources.distribution_minutes(5_000, 1_000, fid_repeats=1, **statistics))


def test_sampling_time_follows_the_family_and_unknown_families_get_the_slowest():
    images = resources.ImageSet(10_000, 128 * 128)
    assert resources.sample_minutes("ddpm", images) > resources.sample_minutes("stylegan", images) > resources.sample_minutes("vae", images)
    assert resources.sample_minutes("new_family", images) == max(resources.sample_minutes(f, images)
                                                                 for f in resources.SAMPLE_SECONDS_PER_IMAGE_MB)


def test_time_limits_have_a_floor_a_start_up_and_the_safety_factor():
    assert resources.rule_minutes(0) == resources.RULE_FLOOR_MINUTES
    hour = 3600
    assert resources.rule_minutes(hour) == resources.RULE_STARTUP_MINUTES + resources.RULE_SAFETY * 60


def test_time_limits_grow_with_the_attempt_up_to_the_sites_maximum():
    minutes = resources.slice_dataset_minutes(2_000, (128, 128, 40))
    requests = [resources.capped_request_minutes(minutes, attempt) for attempt in (1, 2, 3)]
    assert requests[0] < requests[1] < requests[2]
    assert requests[1] == math.ceil(minutes * resources.ATTEMPT_GROWTH)
    long = resources.slice_dataset_minutes(40_000, (197, 233, 189), copies=20)
    assert resources.capped_request_minutes(long, 1, cap_minutes=2880) == 2880
    assert resources.capped_request_minutes(long, 3, cap_minutes=2880) == 2880
    assert resources.capped_request_minutes(long, 1) == resources.DEFAULT_MAX_RUNTIME_MINUTES


def test_dataset_volumes_counts_sequences_channels_and_offline_copies():
    assert resources.dataset_volumes(DatasetSettings(), 100, sequences=3) == (300, 0)
    assert resources.dataset_volumes(DatasetSettings(channels=["t1", "t2"]), 100, sequences=3) == (200, 0)
    assert resources.dataset_volumes(DatasetSettings(filters={"sequence": "t1"}), 100, sequences=3) == (100, 0)
    assert resources.dataset_volumes(DatasetSettings(augmentation={"count": 4}), 100) == (100, 4)
    assert resources.dataset_volumes(DatasetSettings(augmentation={"count": 4, "mode": "on_the_fly"}), 100) == (100, 0)


def test_every_family_has_its_own_measured_training_memory_factor():
    # An unknown family falls back to the largest factor, which is safe but asks for up to 50x the
    # memory it needs; a new family adds its fitted factor with the bench it came from.
    from pipeline_lib.models import available_families

    missing = sorted(set(available_families()) - set(resources.TRAIN_MB_PER_BATCH_MB))
    assert not missing, f"families without a training memory factor in core/resources.py: {missing}"
