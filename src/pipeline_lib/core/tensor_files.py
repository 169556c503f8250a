"""Torch files read without running code from them.

``torch.load`` unpickles: a file can name any Python function and have it called
while it loads (a ``weights.pt`` sent by a collaborator, a checkpoint on a
shared cluster file system). Every weights, checkpoint and feature-network file
the pipeline reads therefore goes through :func:`load_tensor_file`, which loads
with ``weights_only=True``: tensors, the plain containers (dict, list, tuple)
and plain values (str, int, float, bool, None) only. Anything else stops the
load before it is built and becomes an :class:`InputError` that names the file.

Writers keep to the same vocabulary: :func:`plain_values` turns numpy scalars
and arrays into Python numbers and tensors and refuses anything else, so a file
the pipeline writes is always one it can read back.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline_lib.core.errors import InputError

#: torch's message for a weights-only refusal (a global or opcode outside the allowed set).
_WEIGHTS_ONLY_FAILURE = "Weights only load failed"


def load_tensor_file(path: str | os.PathLike, what: str, *, map_location: Any = "cpu", mmap: bool = False,
                     advice: str = "") -> Any:
    """The content of the torch file ``path`` (a ``what``, for messages), loaded with
    ``weights_only=True``; ``mmap`` memory-maps it where the file format allows.

    A file that needs more than tensors and plain values to load is refused with
    an :class:`InputError` saying so (nothing in it runs); so is a file torch cannot
    read at all. ``advice`` is added to both messages (what the user can do).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such {what}")
    try:
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except RuntimeError:
            if not mmap:
                raise
            # Files written before torch 1.6 (legacy format) cannot be memory-mapped.
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if _WEIGHTS_ONLY_FAILURE not in str(exc):
            raise InputError(f"{path}: cannot read as a {what} (not a torch file: {exc}). {advice}".rstrip()) from exc
        refused = _refused_part(exc)
        why = (f"it holds pickled Python objects besides tensors and plain values ({refused}), and loading "
               "those could execute code" if refused.startswith("global") else
               f"the weights-only reader stopped at {refused}: it is not a torch file, or it holds "
               "pickled objects whose loading could execute code")
        raise InputError(f"{path}: refusing to load this {what}: {why}. Nothing from the file was run. "
                         f"{advice}".rstrip()) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types (zip, runtime, EOF) for foreign files
        raise InputError(f"{path}: cannot read as a {what} ({type(exc).__name__}: {exc}). {advice}".rstrip()) from exc


def _refused_part(exc: pickle.UnpicklingError) -> str:
    """What torch's weights-only reader refused: ``global posix.system``, ``opcode 110`` or, where its
    message names neither, a general phrase (torch words these messages differently by case)."""
    named = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if named:
        return f"global {named.group(1)}"
    opcode = re.search(r"Unsupported operand (\d+)", str(exc))
    return f"opcode {opcode.group(1)}" if opcode else "an object outside the allowed types"


def plain_values(value: Any, where: str = "value") -> Any:
    """``value`` with numpy scalars as Python numbers and numpy arrays as tensors (exact dtype), so
    that ``weights_only`` loading accepts it; anything besides tensors, plain containers and plain
    values is a ``TypeError`` naming ``where`` (a bug in the writer, caught before the file exists)."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor, torch.dtype, torch.device)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, dict):
        return type(value)((k, plain_values(v, f"{where}[{k!r}]")) for k, v in value.items())  # OrderedDict stays one
    if isinstance(value, (list, tuple)):
        return type(value)(plain_values(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"{where}: {type(value).__name__} cannot be stored in a file loaded with weights_only")
