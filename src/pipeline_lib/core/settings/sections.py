"""Every config section by its schema path, and the parts of a section a rule's ``params`` hold."""

from __future__ import annotations

from typing import Any, Mapping

from pipeline_lib.core.settings.base import RUNTIME, block_part, canonical, read_by_rule, result_part, section_block
from pipeline_lib.core.settings.evaluation import (ConditioningSettings, DiversitySettings, DomainSettings,
                                                   FidSettings, KidSettings, MemorizationSettings,
                                                   PixelMetricsSettings, PrdcSettings, UtilitySettings)
from pipeline_lib.core.settings.imaging import (DemoSettings, ExecutionSettings, IngestSettings, InputSettings,
                                                PreprocessingSettings, RegistrationSettings, SlicingSettings)
from pipeline_lib.core.settings.models import SamplingSettings, TrainingSettings
from pipeline_lib.core.settings.reader_study import ReaderStudySettings
from pipeline_lib.core.settings.report import ReportSettings

#: Every config section read through this package, by its schema path.
SECTIONS: dict[str, type] = {cls.PATH: cls for cls in (
    InputSettings, DemoSettings, ExecutionSettings, IngestSettings, PreprocessingSettings, RegistrationSettings, SlicingSettings, TrainingSettings,
    SamplingSettings, PixelMetricsSettings,
    FidSettings, KidSettings, PrdcSettings, DomainSettings, MemorizationSettings, ConditioningSettings,
    UtilitySettings, DiversitySettings, ReaderStudySettings, ReportSettings)}


def rerun_settings(config: Mapping[str, Any], path: str, *kinds: str) -> dict[str, Any]:
    """The keys of a section that change its jobs' results (plus ``kinds``), sorted so that
    reordering keys in config.yaml reruns nothing (Snakemake compares params by their repr)."""
    return canonical(result_part(section_block(config, path), SECTIONS[path], *kinds))


def rule_settings(config: Mapping[str, Any], path: str, rule: str) -> dict[str, Any]:
    """The keys of a section that change the results of ``rule``, a later stage's rule (declared
    with ``read_by``; e.g. registration's ``on_poor_fit`` for ``slice_dataset``), sorted."""
    return canonical(read_by_rule(section_block(config, path), SECTIONS[path], rule))


def runtime_settings(config: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The runtime keys of a section, which jobs read from the config rather than from params."""
    return block_part(section_block(config, path), SECTIONS[path], RUNTIME)
