"""A trained model outside the workflow: export it as a self-describing folder, load it back, and
write new images from it as PNG, NIfTI or ``.npy``.

An exported folder holds

* ``weights.pt``: the network's tensors only (a plain state dict, loadable with
  ``torch.load(..., weights_only=True)``, so loading runs no pickled code);
* ``model.json``: everything needed to rebuild the network and to know what it is: format
  version, family, image size, channels and their ``channel_names`` (a stacked dataset's
  sequences; [] for grey images), hyperparameters, classes, the run's config block and seed, its
  budget and whether it completed, the training data summary (axis, slice indices, size) and the
  weights' SHA-256;
* ``metrics.json``: the run's evaluation results, when the workflow computed them;
* ``README.md``: a model card for people (what it is, what it was trained on, how it scores,
  how to generate images, limitations).

The same loader takes a workflow run folder (``results/models/<model>/seed<seed>/``) or its
``weights.pt``, so a model can be used straight from the results too. Every ``weights.pt`` is
loaded with ``weights_only=True`` (``core/tensor_files.py``): a file that would need to run code
to load is refused with an error naming it. Generation is
deterministic: the same seed, count and classes give the same images (``sampling.draw_samples``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from pipeline_lib.core.errors import InputError
from pipeline_lib.core.figures import encode_png_gray8, save_orthogonal_views, to_uint8
from pipeline_lib.core.io import file_digest, read_json, replace_directory, write_json, write_text
from pipeline_lib.core.runtime import select_device
from pipeline_lib.core.tensor_files import load_tensor_file
from pipeline_lib.core.volumes import write_volume_nifti
from pipeline_lib.models import build_model, is_builtin
from pipeline_lib.models.sampling import draw_samples, sample_labels
from pipeline_lib.models.training import load_trained_payload

log = logging.getLogger(__name__)

FORMAT = "pipeline_lib-model/1"
WEIGHTS, CARD, DESCRIPTION, METRICS = "weights.pt", "README.md", "model.json", "metrics.json"
FORMATS = ("png", "nifti", "npy")

#: Where a workflow run's evaluation results live, relative to the results folder ({run} = <model>/seed<seed>).
RUN_METRICS = {
    "pixel": "metrics/{run}.json",
    "distribution": "metrics/{run}.distribution.json",
    "domain": "metrics/{run}.domain.json",
    "memorization": "memorization/{run}.json",
    "conditioning": "conditioning/{run}.json",
    "utility": "utility/{run}.json",
}
#: The numbers of each result that the model card lists (dotted paths into the JSON).
CARD_METRICS = {
    "distribution": {"FID (Inception, vs training slices)": "fid.mean", "KID": "kid.mean",
                     "precision": "prdc.precision", "recall": "prdc.recall"},
    "domain": {"domain Fréchet distance": "domain_fd"},
    "pixel": {"dataset similarity (MSE)": "dataset_similarity", "intra-sample diversity": "isd"},
    "memorization": {"likely copies (pixel MSE)": "pixel.fraction_likely_copies"},
}


# ----------------------------------------------------------------- loading


def _workflow_weights(path: Path) -> Path | None:
    """The workflow's weights.pt for a run folder or the file itself; None for an exported folder."""
    if path.is_file():
        return path
    if (path / WEIGHTS).is_file() and not (path / DESCRIPTION).is_file():
        return path / WEIGHTS
    return None


def describe(source: Path) -> dict[str, Any]:
    """The description of a model: an exported folder's model.json, or built from a workflow run's
    weights (its stored summary). Errors name the path and what is missing."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source}: no such model folder or weights file")
    weights = _workflow_weights(source)
    if weights is None:
        description = read_json(source / DESCRIPTION)
        if description.get("format") != FORMAT:
            raise InputError(f"{source / DESCRIPTION}: format {description.get('format')!r} is not {FORMAT!r}")
        if not (source / WEIGHTS).is_file():
            raise InputError(f"{source}: {WEIGHTS} is missing")
        return description
    return _description_from_summary(load_trained_payload(weights)["summary"])


def _description_from_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("model", "family", "image_size", "channels", "hparams", "n_classes", "class_names", "seed", "config",
            "steps", "target_steps", "incomplete", "budget", "device", "train_seconds", "training_data", "covariates")
    description = {"format": FORMAT, **{k: summary[k] for k in keys if k in summary}}
    description.setdefault("channels", 1)
    # the sequence of each channel ([] for a grey model), also under training_data
    description["channel_names"] = list((description.get("training_data") or {}).get("channel_names") or [])
    description.setdefault("class_names", [])
    description.setdefault("n_classes", len(description["class_names"]))
    description.setdefault("covariates", [])  # [{name, min, max}] of a covariate-conditional model
    return description


def load_model(source: Path, device: str = "auto"):
    """(model in eval mode, description) from an exported folder, a run folder or a weights.pt."""
    source = Path(source)
    description = describe(source)
    weights = _workflow_weights(source)
    if weights is None:
        path = source / WEIGHTS
        if description.get("weights_sha256") and file_digest(path) != description["weights_sha256"]:
            raise InputError(f"{path}: SHA-256 differs from the one in {DESCRIPTION}; the folder is damaged")
        state = load_tensor_file(path, "model weights file")
    else:
        state = load_trained_payload(weights)["state_dict"]
    model = build_model(description["family"], int(description["image_size"]), dict(description["hparams"]),
                        n_classes=int(description.get("n_classes") or 0),
                        channels=int(description.get("channels") or 1),
                        n_covariates=len(description.get("covariates") or ()))
    model.load_state_dict(state)
    model.to(select_device(device)).eval()
    return model, description


# ----------------------------------------------------------------- export


def export_model(run: Path, out: Path, *, results: Path | None = None, overwrite: bool = False) -> Path:
    """Write ``run`` (a workflow run folder or its weights.pt) as a self-describing folder ``out``.

    The run's evaluation results are looked up under ``results`` (default: the results folder the
    run lies in, ``results/models/<model>/seed<seed>`` → ``results``). ``out`` is written whole or
    not at all; an existing ``out`` is replaced only with ``overwrite``.
    """
    run, out = Path(run), Path(out)
    weights = _workflow_weights(run)
    if weights is None:
        raise InputError(f"{run}: not a workflow run folder (results/models/<model>/seed<seed>/) or weights.pt")
    description = describe(weights)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists; choose another folder or pass --overwrite")
    if results is None and weights.parent.parent.parent.name == "models":
        results = weights.parents[3]
    metrics = _run_metrics(results, description) if results is not None else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        torch.save(load_trained_payload(weights)["state_dict"], folder / WEIGHTS)
        description["weights_sha256"] = file_digest(folder / WEIGHTS)
        write_json(folder / DESCRIPTION, description)
        if metrics:
            write_json(folder / METRICS, metrics)
        write_text(folder / CARD, model_card(description, metrics))
        replace_directory(folder, out, ours=_earlier_export)
    log.info("exported %s (seed %s) to %s", description.get("model"), description.get("seed"), out)
    return out


def _earlier_export(folder: Path) -> str | None:
    """None when ``folder`` is an earlier export (it may be replaced), else why not."""
    try:
        if read_json(folder / DESCRIPTION).get("format") == FORMAT:
            return None
    except InputError:
        pass
    return "it is not a model folder written by this command"


def _run_metrics(results: Path, description: Mapping[str, Any]) -> dict[str, Any]:
    run = f"{description.get('model')}/seed{description.get('seed')}"
    found = {}
    for kind, pattern in RUN_METRICS.items():
        path = Path(results) / pattern.format(run=run)
        if path.is_file():
            found[kind] = read_json(path)
    return found


def _at(record: Any, path: str) -> Any:
    for part in path.split("."):
        record = record.get(part) if isinstance(record, Mapping) else None
    return record


def _channels_text(description: Mapping[str, Any]) -> str:
    names = description.get("channel_names") or (description.get("training_data") or {}).get("channel_names") or []
    channels = int(description.get("channels") or 1)
    if channels == 1:
        return "single-channel (grey) images"
    return (f"{channels}-channel images, one channel per sequence ({', '.join(names) or 'names not recorded'}), "
            "generated together")


def _slices_text(data: Mapping[str, Any]) -> str:
    """The training slices' axis, selection and size, as the training summary recorded them."""
    axis = data.get("axis")
    if not axis:
        return "axis and selection not recorded by this run (trained before they were)"
    text = f"{axis} slices"
    index = data.get("slice_index")
    if index:
        text += (f", indices {index['first']}–{index['last']} on the registered grid "
                 f"({index['positions']} positions)")
    size = data.get("size")
    if size:
        text += f", fitted to {size[0]} × {size[1]} pixels"
    return text


def _volumes_text(grid: Mapping[str, Any]) -> str:
    """A 3-D model's volume grid, as its training summary recorded it."""
    shape = " × ".join(str(v) for v in grid.get("shape") or ())
    spacing = " × ".join(f"{v:g}" for v in grid.get("spacing_mm") or ())
    return (f"{shape} voxels" + (f" of {spacing} mm" if spacing else "") + " on the registration template's "
            "grid (RAS); `--format nifti` writes each volume with that grid's affine, so it overlays the template")


def model_card(description: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    """The README.md of an exported model (Markdown)."""
    name, family = description.get("model", "model"), description.get("family")
    data = description.get("training_data") or {}
    classes = description.get("class_names") or []
    size = description.get("image_size")
    status = ("**incomplete**: stopped by its time cap at step "
              f"{description.get('steps')} of {description.get('target_steps')}; it is not the model its "
              "configuration describes" if description.get("incomplete") else
              f"complete ({description.get('steps')} steps)")
    lines = [
        f"# {name} (family `{family}`, seed {description.get('seed')})",
        "",
        f"A generative model of {'3-D brain MRI volumes' if volume_grid(description) else '2-D brain MRI slices'} "
        "trained by the brain-MRI generative-model pipeline.",
        "",
        "## What it is",
        f"- Family: `{family}` (see "
        + (f"`src/pipeline_lib/models/families/{family}.py`" if is_builtin(str(family)) else "its package")
        + " for the architecture and its published source)",
        f"- Output: {size} × {size} {_channels_text(description)}, intensities in [0, 1]",
        f"- Conditional on: {', '.join(classes) if classes else 'nothing (unconditional)'}"
        + (f" (label column `{(description.get('config') or {}).get('condition_on')}`)" if classes else ""),
        f"- Training: {status}; budget {json.dumps(description.get('budget', {}))}, device "
        f"{description.get('device')}, {description.get('train_seconds')} s",
        f"- Hyperparameters: `{json.dumps(description.get('hparams', {}), sort_keys=True)}`",
        "",
        "## Training data",
        (f"- {data['n_volumes']} volumes" if "n_volumes" in data else
         f"- {data.get('n_slices', 'an unrecorded number of')} slices") + f" of the {data.get('split', 'train')} split"
        + (f" from {data['n_subjects']} subjects" if "n_subjects" in data else "")
        + (f"; per class: {json.dumps(data['slices_per_class'])}" if data.get("slices_per_class") else ""),
        f"- Volumes: {_volumes_text(volume_grid(description))}" if volume_grid(description) else
        f"- Slices: {_slices_text(data)}",
        "- The pipeline's preprocessing: affine registration to MNI152, intensities clipped at a percentile "
        "and divided by the maximum, per volume (see the workflow's configuration).",
        "",
        "## How it scores",
    ]
    rows = [(label, _at(metrics.get(kind), path)) for kind, labels in CARD_METRICS.items()
            for label, path in labels.items() if _at(metrics.get(kind), path) is not None]
    if rows:
        lines += ["| metric | value |", "|---|---|"] + [f"| {label} | {value:.4g} |" for label, value in rows]
        lines += ["", "One training run; the workflow's report compares runs over seeds. "
                  "All numbers: `metrics.json`."]
    else:
        lines += ["No evaluation results were exported with this model."]
    lines += [
        "",
        "## Use",
        "```bash",
        "python -m pipeline_lib generate <this folder> -n 16 --seed 0 --format png --out samples/",
        "```",
        "The same seed, count and classes always give the same images.",
        "",
        "## Limitations",
        "- Trained on the data above only; it has not been validated for clinical use, and its images "
        "must not be used for diagnosis.",
        "- If the training set came from real patients, samples can resemble them (see the memorization "
        "audit in metrics.json) — treat the model as derived patient data.",
        "",
        f"Files: `{WEIGHTS}` (state dict, SHA-256 {description.get('weights_sha256', 'n/a')}), `{DESCRIPTION}`"
        + (f", `{METRICS}`" if metrics else "") + ".",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------- generation


def class_labels(description: Mapping[str, Any], n: int, classes: Sequence[str] = (),
                 per_class: int | None = None) -> np.ndarray | None:
    """One class index per image, or None for an unconditional model.

    ``classes`` names the classes to draw (``n`` images of each); ``per_class`` draws that many of
    every class; neither splits ``n`` evenly over all classes.
    """
    names = list(description.get("class_names") or [])
    if not names:
        if classes or per_class:
            raise InputError(f"model {description.get('model')} is unconditional: it takes no --class/--per-class")
        return None
    if classes:
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise InputError(f"unknown class(es) {', '.join(unknown)}; this model knows {', '.join(names)}")
        return np.repeat([names.index(c) for c in classes], n)
    return sample_labels(n, len(names), per_class)


def covariate_plan(description: Mapping[str, Any], n: int, given: Mapping[str, float]) -> tuple[np.ndarray, str] | None:
    """(the n x K scaled covariates to draw with, their "name=value; ..." label) of a
    covariate-conditional model, each covariate ``given`` in its column's units or the middle of its
    training range; None for another model (which takes none)."""
    from pipeline_lib.core.covariates import scale

    scaling = list(description.get("covariates") or [])
    names = [s["name"] for s in scaling]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise InputError(f"model {description.get('model')} conditions on "
                         f"{', '.join(names) if names else 'no covariates'}; got {', '.join(unknown)}")
    if not scaling:
        return None
    values = [float(given[s["name"]]) if s["name"] in given else (s["min"] + s["max"]) / 2 for s in scaling]
    label = "; ".join(f"{name}={value:g}" for name, value in zip(names, values))
    return np.repeat(scale(np.array([values]), scaling), n, axis=0), label


def generate(model, description: Mapping[str, Any], n: int, seed: int, *, classes: Sequence[str] = (),
             per_class: int | None = None, covariates: Mapping[str, float] | None = None
             ) -> tuple[np.ndarray, list[str]]:
    """(images (N, H, W) float32 in [0, 1], (N, C, H, W) from a model of a stacked dataset, (N, C, X,
    Y, Z) volumes from a 3-D model; class name per image ("" when unconditional; "name=value; ..."
    for a covariate-conditional model, drawn with ``covariates``, by default each one's middle of
    the training range))."""
    if n < 1:
        raise InputError(f"the number of images must be at least 1, got {n}")
    plan = covariate_plan(description, n, covariates or {})
    if plan is not None:
        return draw_samples(model, n, seed, labels=plan[0]), [plan[1]] * n
    labels = class_labels(description, n, classes, per_class)
    count = n if labels is None else len(labels)
    images = draw_samples(model, count, seed, labels=labels)
    names = list(description.get("class_names") or [])
    return images, ([names[i] for i in labels] if labels is not None else [""] * count)


def volume_grid(description: Mapping[str, Any]) -> dict[str, Any] | None:
    """The volume dataset's grid a 3-D model was trained on (shape, spacing, the voxel -> template
    mm affine of its grid.json; models.training.volume_geometry), None for a 2-D model."""
    return (description.get("training_data") or {}).get("grid")


def write_volumes(volumes: np.ndarray, out: Path, fmt: str, grid: Mapping[str, Any] | None) -> list[Path]:
    """(N, C, X, Y, Z) volumes from a 3-D model into the folder ``out``: ``nifti`` one file per volume,
    ``volume_<k>.nii.gz``, on the volume dataset's grid (its affine: the file overlays the template;
    a stacked volume's channels on the fourth axis); ``npy`` one (N, C, X, Y, Z) array; ``png`` one
    file per volume with its middle axial, coronal and sagittal slices."""
    width = max(4, len(str(len(volumes) - 1)))
    if fmt == "npy":
        path = out / "images.npy"
        np.save(path, volumes.astype(np.float32))
        return [path]
    if fmt == "png":
        written = [out / f"volume_{i:0{width}d}.png" for i in range(len(volumes))]
        for path, volume in zip(written, volumes):
            save_orthogonal_views(volume[None], path)
        return written
    if grid is None:
        raise InputError("this 3-D model's description has no training_data.grid (the volume dataset's "
                         "grid.json, recorded by training since issue 26): retrain it to write NIfTI, or use "
                         "--format npy")
    return [write_volume_nifti(volume, np.asarray(grid["affine"], dtype=np.float64),
                               out / f"volume_{i:0{width}d}.nii.gz") for i, volume in enumerate(volumes)]


def write_images(images: np.ndarray, classes: Sequence[str], out: Path, fmt: str,
                 grid: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``images`` to the folder ``out`` as ``fmt`` plus ``labels.tsv`` (file, index, class).

    Stacked (N, C, H, W) images: ``npy`` keeps that shape; ``nifti`` writes a 4-D volume with the
    channels on the fourth axis; ``png`` writes one file per image with its channels side by side
    (channel order left to right, each W pixels wide, so the file is C·W wide). Volumes (N, C, X, Y,
    Z) of a 3-D model: :func:`write_volumes`, on ``grid`` (:func:`volume_grid`).
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if images.ndim == 5:
        written = write_volumes(images, out, fmt, grid)
        files = [p.name for p in written] if len(written) == len(images) else [written[0].name] * len(images)
    elif fmt == "png":
        width = max(4, len(str(len(images) - 1)))
        for i, image in enumerate(images):
            path = out / f"image_{i:0{width}d}.png"
            side_by_side = np.concatenate(list(image), axis=1) if image.ndim == 3 else image
            path.write_bytes(encode_png_gray8(to_uint8(side_by_side)))
            written.append(path)
        files = [p.name for p in written]
    elif fmt == "npy":
        path = out / "images.npy"
        np.save(path, images.astype(np.float32))
        written, files = [path], ["images.npy"] * len(images)
    else:
        import nibabel as nib

        # Image k is the k-th section along the third voxel axis: x = image column, y = image row
        # counted from the bottom, 1 mm voxels, identity affine. That is the images' display
        # orientation, whatever the training axis (model.json's training_data.axis): it matches RAS
        # only for axial slices and then mirrored left-right (the display puts the patient's right on
        # the image's left); coronal and sagittal images are stacked the same way, so their third axis
        # is not superior. Stacked images put their channels on a fourth axis.
        if images.ndim == 4:
            volume = np.stack([np.transpose(images[:, c, ::-1, :], (2, 1, 0)) for c in range(images.shape[1])],
                              axis=-1)
        else:
            volume = np.transpose(images[:, ::-1, :], (2, 1, 0))
        volume = np.ascontiguousarray(volume, dtype=np.float32)
        path = out / "images.nii.gz"
        nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
        written, files = [path], ["images.nii.gz"] * len(images)
    lines = ["file\tindex\tclass"] + [f"{f}\t{i}\t{c}" for i, (f, c) in enumerate(zip(files, classes))]
    (out / "labels.tsv").write_text("\n".join(lines) + "\n")
    return written


#: The files ``write_images`` writes (a folder holding only these is an earlier ``generate`` output),
#: besides the numbered image_<k>.png and, from a 3-D model, volume_<k>.nii.gz and volume_<k>.png.
GENERATED = ("labels.tsv", "images.npy", "images.nii.gz")
NUMBERED = (("image_", (".png",)), ("volume_", (".png", ".nii.gz")))


def check_output_folder(out: Path, overwrite: bool = False) -> None:
    """InputError unless ``out`` may receive new images: it is missing or empty, or it is an earlier
    output of ``generate`` and ``overwrite`` is set (then it is replaced whole, never mixed)."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose a folder for the images")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if not overwrite:
        raise InputError(f"{out}: folder is not empty ({len(entries)} entries); choose a new folder, or pass "
                         "--overwrite to replace an earlier output of generate")
    problem = _earlier_generation(out)
    if problem:
        raise InputError(f"{out}: {problem}; refusing to replace it")


def _earlier_generation(folder: Path) -> str | None:
    """None when ``folder`` is empty or holds only what ``write_images`` writes, else why not."""
    others = [p.name for p in folder.iterdir()
              if not (p.is_file() and (p.name in GENERATED or any(p.name.startswith(prefix) and p.name.endswith(suffixes)
                                                                  for prefix, suffixes in NUMBERED)))]
    if others:
        return f"it holds files generate did not write ({', '.join(sorted(others)[:3])})"
    return None


def write_generated(images: np.ndarray, classes: Sequence[str], out: Path, fmt: str,
                    overwrite: bool = False, grid: Mapping[str, Any] | None = None) -> list[Path]:
    """:func:`write_images` into the folder ``out`` as a whole: a missing or empty ``out`` is
    written, an earlier output of ``generate`` is replaced only with ``overwrite``, so a folder
    never mixes two runs. Returns the image files' final paths."""
    out = Path(out)
    check_output_folder(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        written = write_images(images, classes, Path(tmp) / "images", fmt, grid)
        replace_directory(Path(tmp) / "images", out, ours=_earlier_generation)
    return [out / path.name for path in written]
