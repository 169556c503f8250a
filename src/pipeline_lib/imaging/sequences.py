"""Which registered volume is which sequence: the contract between registration and slicing.

A subject's register folder holds ``registered.nii.gz`` (the reference sequence, the only one
of a single-sequence subject) and, for a subject with several sequences (``input.layout``),
``registered-<sequence>.nii.gz`` per other sequence, listed with the reference's name in
``sequences.json`` (written by :mod:`~pipeline_lib.imaging.registration`).
"""

from __future__ import annotations

import json
from pathlib import Path

#: The reference sequence's (a single-sequence subject's only) registered volume.
REGISTERED = "registered.nii.gz"
MANIFEST_NAME = "sequences.json"
DEFAULT_SEQUENCE = "image"


def registered_volumes(stage_dir: str | Path, sequence: str | None = None) -> dict[str, Path]:
    """sequence -> registered NIfTI of one subject's register folder, reference sequence first.

    Without ``sequences.json`` (a single-sequence subject) the one volume is named ``sequence``
    (the subject's ``sequence`` label) or "image"; {} when nothing was registered.
    """
    stage_dir = Path(stage_dir)
    manifest = stage_dir / MANIFEST_NAME
    if manifest.is_file():
        listed = json.loads(manifest.read_text())
        files = listed["sequences"]  # "order": reference first, then discovery's stated order
        return {name: stage_dir / files[name] for name in listed.get("order", files)
                if (stage_dir / files[name]).is_file()}
    single = stage_dir / REGISTERED
    return {sequence or DEFAULT_SEQUENCE: single} if single.is_file() else {}
