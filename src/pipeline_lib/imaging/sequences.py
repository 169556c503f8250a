"""Which registered volumes a subject has, by sequence.

The contract between registration and slicing: :func:`registered_volumes` lists a subject's
registered NIfTI volumes as ``sequence name -> path``, and slicing cuts every one of them into
slices that carry the name in the ``sequence`` column of ``slices.tsv`` (dataset filters such as
``{sequence: t1}`` select on it).

Today a subject has one volume, ``registered.nii.gz``; its sequence is the subject's ``sequence``
label from ``results/inputs/subjects.tsv`` when discovery gave one, else ``"image"``.
Multi-sequence subjects (several registered volumes per subject) extend this function.
"""

from __future__ import annotations

from pathlib import Path

#: The one registered volume of a subject (register rule's output).
REGISTERED = "registered.nii.gz"
#: The sequence name of a volume whose subject has no ``sequence`` label.
DEFAULT_SEQUENCE = "image"


def registered_volumes(stage_dir: str | Path, sequence: str | None = None) -> dict[str, Path]:
    """``sequence name -> registered volume`` of the subject whose register folder is ``stage_dir``.

    ``sequence`` is the subject's ``sequence`` label (None or "" = none: :data:`DEFAULT_SEQUENCE`).
    Only volumes that exist are listed.
    """
    path = Path(stage_dir) / REGISTERED
    name = str(sequence) if sequence not in (None, "") else DEFAULT_SEQUENCE
    return {name: path} if path.exists() else {}
