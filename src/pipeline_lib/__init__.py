"""Library behind the brain-MRI generative-model pipeline, one package per stage:

core (shared foundations) → imaging (subjects in, registered, sliced) → models (families,
trainer, sampler) → evaluation (metrics of samples) → reader_study (kit and scoring) → report (HTML).

All logic lives here; the Snakemake scripts under ``workflow/scripts`` only translate the
``snakemake`` object into calls of these functions. docs/ARCHITECTURE.md states which package may
import which (tests/test_architecture.py enforces it).
"""

__version__ = "0.1.0"
