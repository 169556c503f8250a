"""Settings of stage 5, the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping

from pipeline_lib.core.errors import InputError


@dataclass(frozen=True)
class ReportSettings:
    PATH: ClassVar[str] = "report"
    title: str = "Brain MRI generative models"
    #: A paper whose published tables the report shows beside this run's values: a study name of
    #: presets/published (e.g. han_2018) or a path to such a file; null = none.
    published: str | None = None
    #: Why this run differs from the paper, per protocol item id of the published file's
    #: ``protocol`` (shown in the report's protocol table beside the item).
    protocol_notes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.protocol_notes, Mapping) or not all(
                isinstance(v, str) and v.strip() for v in self.protocol_notes.values()):
            raise InputError("protocol_notes: must map protocol item ids to non-empty text")
        if self.published is not None:
            from pipeline_lib.core.published import load_protocol, load_published, published_path

            load_published(published_path(self.published))
            known = {item.id for item in load_protocol(published_path(self.published))}
            unknown = sorted(set(self.protocol_notes) - known)
            if unknown:
                raise InputError(f"protocol_notes: {', '.join(unknown)}: no such protocol item in "
                                 f"{self.published} (items: {', '.join(sorted(known)) or 'none'})")
        elif self.protocol_notes:
            raise InputError("protocol_notes: given without report.published (no protocol to annotate)")
