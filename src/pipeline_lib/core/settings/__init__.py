"""One way to read the configuration: a typed, frozen dataclass per config section.

``workflow/schemas/config.schema.yaml`` validates the whole config and fills in
defaults before any rule runs; each section's dataclass here mirrors its part of
the schema (same keys, same defaults: ``tests/test_settings.py`` checks both),
so library code called outside the workflow (tests, benchmarks, the CLI) gets
the same defaults and the same checks. :func:`read_settings` is the only way a
job turns a config block into settings.

The sections live in one module per stage: ``base`` (the kinds of keys, reading
a block, the value checks), ``imaging`` (input, ingest, preprocessing,
registration, slicing), ``datasets`` (the slice datasets), ``models`` (trainer,
training, sampling), ``evaluation``, ``reader_study``, ``report``, and
``sections`` (every section by path, a rule's params). Every public name is
re-exported here, so ``from pipeline_lib.core.settings import X`` works for all.

A model's config block holds :class:`TrainerSettings` keys plus its family's
hyperparameters; those are the family's ``DEFAULTS`` (published values, listed
in each family module), checked with :func:`check_known_keys` like every section.

Nothing here imports numpy or torch: Snakemake builds the DAG with it.
"""

from pipeline_lib.core.settings.base import (RESULT, RUNTIME, SCORING, WORKFLOW, block_part, canonical,
                                             check_known_keys, field_kind, keys_of_kind, read_by, read_by_rule,
                                             read_settings, reading_rules, result_part, runtime, scoring,
                                             section_block, workflow)
from pipeline_lib.core.settings.datasets import (AUGMENTATION_KEYS, DEFAULT_DATASET, FIT_POLICIES, SELECTION_KEYS,
                                                 SLICE_AXES, DatasetSettings, dataset_blocks, dataset_params,
                                                 dataset_problems, dataset_settings, model_dataset)
from pipeline_lib.core.settings.evaluation import (ConditioningSettings, DiversitySettings, DomainSettings,
                                                   FidSettings, KidSettings, MemorizationSettings,
                                                   PixelMetricsSettings, PrdcSettings, UtilitySettings)
from pipeline_lib.core.settings.imaging import (BRAIN_EXTRACTORS, BRAIN_OR_HEAD, LAYOUTS, SEQUENCE_NAME,
                                                SERIES_RULE_KEYS, TRANSFORMS, DemoSettings, ExecutionSettings,
                                                IngestSettings,
                                                InputSettings, PreprocessingSettings, RegistrationSettings,
                                                SlicingSettings, layout_pattern)
from pipeline_lib.core.settings.models import (AMP_MODES, AUGMENT_LIMITS, LR_SCHEDULES, Budget, SamplingSettings,
                                               TrainerSettings, TrainingSettings, augment_settings, enabled_models,
                                               family_hparams, model_seeds)
from pipeline_lib.core.settings.reader_study import (READER_BLOCKS, READER_PRESETS, REAL, SYNTHETIC,
                                                     ReaderStudySettings)
from pipeline_lib.core.settings.report import ReportSettings
from pipeline_lib.core.settings.sections import SECTIONS, rerun_settings, rule_settings, runtime_settings

__all__ = [
    "RESULT", "RUNTIME", "SCORING", "WORKFLOW", "block_part", "canonical", "check_known_keys", "field_kind",
    "keys_of_kind", "read_by", "read_by_rule", "read_settings", "reading_rules", "result_part", "runtime",
    "scoring", "section_block", "workflow",
    "AUGMENTATION_KEYS", "DEFAULT_DATASET", "FIT_POLICIES", "SELECTION_KEYS", "SLICE_AXES", "DatasetSettings",
    "dataset_blocks", "dataset_params", "dataset_problems", "dataset_settings", "model_dataset",
    "ConditioningSettings", "DiversitySettings", "DomainSettings", "FidSettings", "KidSettings",
    "MemorizationSettings", "PixelMetricsSettings", "PrdcSettings", "UtilitySettings",
    "BRAIN_EXTRACTORS", "BRAIN_OR_HEAD", "LAYOUTS", "SEQUENCE_NAME", "SERIES_RULE_KEYS", "TRANSFORMS",
    "DemoSettings", "ExecutionSettings", "IngestSettings", "InputSettings", "PreprocessingSettings", "RegistrationSettings",
    "SlicingSettings", "layout_pattern",
    "AMP_MODES", "AUGMENT_LIMITS", "LR_SCHEDULES", "Budget", "SamplingSettings", "TrainerSettings",
    "TrainingSettings", "augment_settings", "enabled_models", "family_hparams", "model_seeds",
    "READER_BLOCKS", "READER_PRESETS", "REAL", "SYNTHETIC", "ReaderStudySettings",
    "ReportSettings",
    "SECTIONS", "rerun_settings", "rule_settings", "runtime_settings",
]
