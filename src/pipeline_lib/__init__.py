"""Library behind the brain-MRI generative-model pipeline.

All logic lives here; the Snakemake scripts under ``workflow/scripts`` only
translate the ``snakemake`` object into calls of these functions.
"""

__version__ = "0.1.0"
