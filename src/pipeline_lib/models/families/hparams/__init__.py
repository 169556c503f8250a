"""The families' hyperparameter declarations, one torch-free module per family.

Each family's module (``models/families/<family>.py``) names its declaration in ``HYPERPARAMETERS``;
the declarations live here, apart from the networks, so that the workflow checks model blocks
while it builds the DAG without importing torch (``models/hyperparameters.py``). How to write one:
:mod:`pipeline_lib.models.families.hparams.fields`.
"""

from pipeline_lib.models.families.hparams.fields import hyperparameter

__all__ = ["hyperparameter"]
