"""Use a trained model outside the workflow.

    brainmri-gen generate MODEL -n 16 --seed 0 --format png --out samples/
    brainmri-gen export results/models/vae/seed0 --out exported/vae-seed0
    brainmri-gen info MODEL

(``brainmri-gen`` is installed with the package; ``python -m pipeline_lib`` is the same command.)
MODEL is a folder written by ``export``, a workflow run folder (``results/models/<model>/seed<seed>``)
or its ``weights.pt``. The same seed, count and classes always give the same images.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import sys
from pathlib import Path
from typing import Any, Mapping

from pipeline_lib.core.errors import InputError


def _program() -> str:
    """The name the command was called by: the console script's, or ``python -m pipeline_lib``."""
    called = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return called if called and called not in ("__main__.py", "-c") else "python -m pipeline_lib"


def _version() -> str:
    try:
        return importlib.metadata.version("pipeline_lib")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (pipeline_lib is not installed; running from a source folder)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_program(), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="write new images from a trained model")
    gen.add_argument("model", type=Path, help="exported model folder, workflow run folder or weights.pt")
    gen.add_argument("-n", "--number", type=int, default=16,
                     help="images to draw (of each --class; split over the classes of a conditional model)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the latent draws (default 0)")
    gen.add_argument("--class", dest="classes", action="append", default=[], metavar="NAME",
                     help="class to draw (repeatable; conditional models only)")
    gen.add_argument("--per-class", type=int, default=None, metavar="K",
                     help="draw K images of every class (conditional models only)")
    gen.add_argument("--covariate", dest="covariates", action="append", default=[], metavar="NAME=VALUE",
                     help="a covariate's value in its column's units (repeatable; covariate-conditional "
                          "3-D models only; default: the middle of its training range)")
    gen.add_argument("--format", choices=("png", "nifti", "npy"), default="png",
                     help="png: one 8-bit grey file per image; nifti: one volume, image k = slice k; "
                          "npy: one (N, H, W) float32 array in [0, 1]. A 3-D model: nifti one file per "
                          "volume on its template grid, npy (N, C, X, Y, Z), png each volume's three "
                          "middle slices")
    gen.add_argument("--out", type=Path, required=True,
                     help="output folder, new or empty (labels.tsv is written too)")
    gen.add_argument("--overwrite", action="store_true",
                     help="replace an earlier output of generate at --out (whole: runs are never mixed)")
    gen.add_argument("--device", default="cpu", help="cpu (default), cuda[:N] or auto")

    exp = commands.add_parser("export", help="write a workflow run as a self-describing model folder")
    exp.add_argument("run", type=Path, help="results/models/<model>/seed<seed> (or its weights.pt)")
    exp.add_argument("--out", type=Path, required=True, help="the folder to create")
    exp.add_argument("--results", type=Path, default=None,
                     help="results folder holding the run's metrics (default: the one the run lies in)")
    exp.add_argument("--overwrite", action="store_true", help="replace an earlier export at --out")

    info = commands.add_parser("info", help="print what a model is")
    info.add_argument("model", type=Path, help="exported model folder, workflow run folder or weights.pt")
    info.add_argument("--json", action="store_true", help="print its description (model.json) as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # torch is imported here, not at start-up, so `--help` answers at once.
    from pipeline_lib.models import export

    try:
        if args.command == "generate":
            export.check_output_folder(args.out, args.overwrite)  # before the model is loaded
            model, description = export.load_model(args.model, device=args.device)
            images, classes = export.generate(model, description, args.number, args.seed,
                                              classes=args.classes, per_class=args.per_class,
                                              covariates=_covariate_values(args.covariates))
            written = export.write_generated(images, classes, args.out, args.format, overwrite=args.overwrite,
                                             grid=export.volume_grid(description))
            print(f"{len(images)} images of {description.get('model')} (seed {args.seed}) written to {args.out} "
                  f"({len(written)} {args.format} file(s) and labels.tsv)")
        elif args.command == "export":
            out = export.export_model(args.run, args.out, results=args.results, overwrite=args.overwrite)
            print(f"exported to {out}")
        elif args.json:
            print(json.dumps(export.describe(args.model), indent=2, sort_keys=True))
        else:
            print(readable(export.describe(args.model)))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _covariate_values(given: list[str]) -> dict[str, float]:
    values = {}
    for item in given:
        name, _, value = item.partition("=")
        try:
            values[name.strip()] = float(value)
        except ValueError:
            raise InputError(f"--covariate {item!r}: expected NAME=VALUE with a number") from None
    return values


def readable(description: Mapping[str, Any]) -> str:
    """A model's description (model.json) as aligned lines for people."""
    data = description.get("training_data") or {}
    classes = description.get("class_names") or []
    channels = int(description.get("channels") or 1)
    names = description.get("channel_names") or []
    size = description.get("image_size")
    steps = f"{description.get('steps')} of {description.get('target_steps')} steps"
    training = (f"INCOMPLETE (stopped by its time cap), {steps}" if description.get("incomplete")
                else f"complete, {steps}")
    slices = (f"{data['n_volumes']} volumes" if "n_volumes" in data else f"{data.get('n_slices', '?')} slices") \
        + f" of the {data.get('split', 'train')} split"
    if "n_subjects" in data:
        slices += f" from {data['n_subjects']} subjects"
    if data.get("axis"):
        slices += f", {data['axis']} slices"
    condition = (description.get("config") or {}).get("condition_on")
    rows = [
        ("model", f"{description.get('model')} (family {description.get('family')}, seed {description.get('seed')})"),
        ("images", " x ".join([str(size)] * (3 if "n_volumes" in data else 2)) + ", " + ("1 channel (grey)" if channels == 1 else
                                           f"{channels} channels ({', '.join(names) or 'names not recorded'})")),
        ("classes", f"{', '.join(classes)} (label column {condition})" if classes else
         "none (conditioned on covariates)" if description.get("covariates") else "none (unconditional)"),
        *([("covariates", ", ".join(f"{c['name']} ({c['min']:g} to {c['max']:g} in training)"
                                    for c in description["covariates"]))] if description.get("covariates") else []),
        ("training", f"{training}; budget {json.dumps(description.get('budget', {}))}; "
                     f"{description.get('device')}, {description.get('train_seconds')} s"),
        ("data", slices),
        ("hyperparameters", ", ".join(f"{key}={json.dumps(value)}"
                                      for key, value in sorted((description.get("hparams") or {}).items()))),
    ]
    if description.get("weights_sha256"):
        rows.append(("weights SHA-256", description["weights_sha256"]))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows) + "\n(--json prints every field)"


if __name__ == "__main__":
    sys.exit(main())
