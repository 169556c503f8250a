"""Settings of stage 3, the metrics of samples: pixel metrics, FID, KID, PRDC, the domain,
conditioning and utility CNNs, memorisation and diversity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings.base import optional_min, positive_int, positive_number, runtime


@dataclass(frozen=True)
class PixelMetricsSettings:
    """``metrics``: Ungría Hirte et al.'s pixel metrics."""

    PATH: ClassVar[str] = "metrics"
    sharpness_scale: float = 255
    n_original: int = 1000


@dataclass(frozen=True)
class FidSettings:
    """``evaluation.fid``: FID with pytorch-fid's Inception, repeated on random subsets."""

    PATH: ClassVar[str] = "evaluation.fid"
    weights: str | None = runtime(None)
    repeats: int = 20
    subset_size: int | None = None
    seed: int = 0
    batch_size: int = runtime(50)
    device: str = runtime("auto")
    channels_last: bool = runtime(True)
    #: Real slices featurised per split (a seeded subset beyond it; null: all). 50,000 is the size
    #: FID is customarily estimated from (Heusel et al. 2017); a published split of Ungría Hirte et
    #: al. (42,000) stays whole, a biobank's 832,000 would keep 27 GB of features and take 46 h of CPU.
    max_real: int | None = 50_000
    #: Each repeat draws a fresh sample set from the model (seed 003); off: all repeats share one.
    fresh_samples: bool = False
    #: [height, width]: every image (real and sampled) is centre-cropped to it before Inception,
    #: e.g. a paper's image inside the zero-padded square frame the models train on; null: whole.
    crop: tuple[int, int] | None = None
    #: Per-class FID on one subset size for every class (the smallest class's); off: each class
    #: min(its samples, its real images), so FIDs of classes of different sizes are biased apart.
    equal_per_class: bool = False

    def __post_init__(self) -> None:
        positive_int("repeats", self.repeats)
        positive_int("batch_size", self.batch_size)
        optional_min("subset_size", self.subset_size, 2)
        optional_min("max_real", self.max_real, 2)
        if self.crop is not None:
            if (not isinstance(self.crop, (list, tuple)) or len(self.crop) != 2
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < 2 for v in self.crop)):
                raise InputError(f"crop must be null or [height, width] in pixels (each at least 2), not {self.crop!r}")
            object.__setattr__(self, "crop", (int(self.crop[0]), int(self.crop[1])))


@dataclass(frozen=True)
class KidSettings:
    """``evaluation.kid``: kernel inception distance."""

    PATH: ClassVar[str] = "evaluation.kid"
    n_subsets: int = 100
    subset_size: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class PrdcSettings:
    """``evaluation.prdc``: precision, recall, density and coverage."""

    PATH: ClassVar[str] = "evaluation.prdc"
    nearest_k: int = 5
    max_real: int = 10000
    max_samples: int = 10000
    seed: int = 0


@dataclass(frozen=True)
class _SmallCnnSettings:
    """Seed and optimisation of one of the small evaluation CNNs (domain, conditioning, utility)."""

    seed: int = 0
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    width: int = 16

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "width"):
            positive_int(name, getattr(self, name))
        positive_number("lr", self.lr)


@dataclass(frozen=True)
class DomainSettings(_SmallCnnSettings):
    """``evaluation.domain``: the slice CNN whose features give the domain metrics."""

    PATH: ClassVar[str] = "evaluation.domain"
    feature_dim: int = 64
    label_column: str | None = None
    n_reference: int | None = 5000
    nearest_k: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int("feature_dim", self.feature_dim)
        positive_int("nearest_k", self.nearest_k)
        optional_min("n_reference", self.n_reference, 2)


@dataclass(frozen=True)
class MemorizationSettings:
    """``evaluation.memorization``: nearest training slice of every sample."""

    PATH: ClassVar[str] = "evaluation.memorization"
    percentile: float = 5.0
    gallery_k: int = 8
    n_test_reference: int | None = 1000
    seed: int = 0
    block: int = 256

    def __post_init__(self) -> None:
        if not 0 < self.percentile < 100:
            raise InputError(f"percentile must lie between 0 and 100, got {self.percentile}")
        if self.gallery_k < 0 or self.block < 1:
            raise InputError("gallery_k must be ≥ 0 and block ≥ 1")
        optional_min("n_test_reference", self.n_test_reference, 1)


@dataclass(frozen=True)
class ConditioningSettings(_SmallCnnSettings):
    """``evaluation.conditioning``: the classifier that checks a conditional model's classes."""

    PATH: ClassVar[str] = "evaluation.conditioning"


@dataclass(frozen=True)
class UtilitySettings(_SmallCnnSettings):
    """``evaluation.utility``: classifiers trained on real, synthetic and both."""

    PATH: ClassVar[str] = "evaluation.utility"
    steps: int = 200
    seeds: int = 3
    position_bins: int = 3
    n_synthetic: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_int("seeds", self.seeds)
        if self.position_bins < 2:
            raise InputError(f"position_bins must be at least 2, got {self.position_bins}")
        optional_min("n_synthetic", self.n_synthetic, 1)


@dataclass(frozen=True)
class DiversitySettings:
    """``evaluation.diversity``: MS-SSIM between sample pairs, SSIM/PSNR of reconstructions (MONAI)."""

    PATH: ClassVar[str] = "evaluation.diversity"
    n_pairs: int = 1000
    n_reference: int | None = 1000
    kernel_size: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        positive_int("n_pairs", self.n_pairs)
        optional_min("n_reference", self.n_reference, 2)
        if isinstance(self.kernel_size, bool) or not isinstance(self.kernel_size, int) or self.kernel_size < 2:
            raise InputError(f"kernel_size must be an integer >= 2, got {self.kernel_size!r}")
