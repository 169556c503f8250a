"""Settings of stage 5, the report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class ReportSettings:
    PATH: ClassVar[str] = "report"
    title: str = "Brain MRI generative models"
    #: A paper whose published tables the report shows beside this run's values: a study name of
    #: presets/published (e.g. han_2018) or a path to such a file; null = none.
    published: str | None = None

    def __post_init__(self) -> None:
        if self.published is not None:
            from pipeline_lib.core.published import load_published, published_path

            load_published(published_path(self.published))
