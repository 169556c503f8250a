"""Settings of stage 4: the blinded reader-study kit and the scoring of the readers' answers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.settings.base import one_of, positive_int, scoring

READER_PRESETS = ("ungria_hirte", "han", "kazuhiro")
READER_BLOCKS = ("none", "per_model", "per_model_and_group")
REAL, SYNTHETIC = "real", "synthetic"


@dataclass(frozen=True)
class ReaderStudySettings:
    """``reader_study``: the blinded kit and the scoring of the readers' answers."""

    PATH: ClassVar[str] = "reader_study"
    preset: str = "ungria_hirte"
    models: tuple[str, ...] | None = None
    n_real: int = 50
    n_per_model: int = 50
    n_total: int = 100
    synthetic_fraction: tuple[float, float] = (0.4, 0.6)
    group_by: str | None = None
    seed: int = 0
    display_size: int = 256
    interpolation: str = "bilinear"
    time_limit_s: float | None = None
    ask_confidence: bool = True
    title: str = "Real or synthetic? A brain MRI reader study"
    #: Per-reader kits (Kazuhiro et al.): each ID its own random composition, seeded by (seed, ID);
    #: null = one composition every reader reads (in a per-reader order).
    reader_ids: tuple[str, ...] | None = None
    #: Cases shown with their answers before scoring starts, never scored (Kazuhiro et al.: 10).
    n_familiarisation: int = 0
    #: Blocks a reader completes in turn (Han et al.): none, per_model, per_model_and_group.
    blocks: str = "none"
    #: Real images of a per_model block matched to these label values (group_by) in equal shares,
    #: e.g. Han et al.'s Concat against [t1, t1c, t2, flair]; null = any real image.
    block_real_groups: tuple[str, ...] | None = None
    responses_dir: str = scoring("reader_responses")
    positive_class: str = scoring(REAL)

    def __post_init__(self) -> None:
        one_of("preset", self.preset, READER_PRESETS)
        for key in ("n_real", "n_per_model", "n_total", "display_size"):
            positive_int(key, getattr(self, key))
        fraction = self.synthetic_fraction
        if (not isinstance(fraction, (list, tuple)) or len(fraction) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in fraction)
                or not 0 <= fraction[0] <= fraction[1] <= 1):
            raise InputError(f"synthetic_fraction must be [low, high] with 0 <= low <= high <= 1, not {fraction!r}")
        object.__setattr__(self, "synthetic_fraction", tuple(float(v) for v in fraction))
        one_of("interpolation", self.interpolation, ("bilinear", "nearest"))
        limit = self.time_limit_s
        if limit is not None and (not isinstance(limit, (int, float)) or isinstance(limit, bool) or limit <= 0):
            raise InputError(f"time_limit_s must be null or a positive number of seconds, not {limit!r}")
        one_of("positive_class", self.positive_class, (REAL, SYNTHETIC))
        if self.models is not None:
            if not isinstance(self.models, (list, tuple)) or not self.models:
                raise InputError(f"models must be null (every model) or a non-empty list, not {self.models!r}")
            object.__setattr__(self, "models", tuple(self.models))
        if self.reader_ids is not None:
            ids = self.reader_ids
            if (not isinstance(ids, (list, tuple)) or not ids or len(set(map(str, ids))) != len(ids)
                    or not all(re.fullmatch(r"[A-Za-z0-9._-]{1,40}", str(i)) for i in ids)):
                raise InputError(f"reader_ids must be null or a list of distinct IDs (1-40 letters, digits, "
                                 f"'-', '_', '.'), not {ids!r}")
            object.__setattr__(self, "reader_ids", tuple(str(i) for i in ids))
        if isinstance(self.n_familiarisation, bool) or not isinstance(self.n_familiarisation, int) \
                or self.n_familiarisation < 0:
            raise InputError(f"n_familiarisation must be a whole number >= 0, not {self.n_familiarisation!r}")
        one_of("blocks", self.blocks, READER_BLOCKS)
        if self.block_real_groups is not None:
            if not isinstance(self.block_real_groups, (list, tuple)) or not self.block_real_groups:
                raise InputError(f"block_real_groups must be null or a non-empty list, not {self.block_real_groups!r}")
            object.__setattr__(self, "block_real_groups", tuple(str(g) for g in self.block_real_groups))
            if self.group_by is None:
                raise InputError("block_real_groups matches real images by label: set group_by (e.g. sequence)")
