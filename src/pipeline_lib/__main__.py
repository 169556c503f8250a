"""Use a trained model outside the workflow.

    python -m pipeline_lib generate MODEL -n 16 --seed 0 --format png --out samples/
    python -m pipeline_lib export results/models/vae/seed0 --out exported/vae-seed0
    python -m pipeline_lib info MODEL

MODEL is a folder written by ``export``, a workflow run folder (``results/models/<model>/seed<seed>``)
or its ``weights.pt``. The same seed, count and classes always give the same images.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline_lib.core.errors import InputError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    gen.add_argument("--format", choices=("png", "nifti", "npy"), default="png",
                     help="png: one 8-bit grey file per image; nifti: one volume, image k = slice k; "
                          "npy: one (N, H, W) float32 array in [0, 1]")
    gen.add_argument("--out", type=Path, required=True, help="output folder (labels.tsv is written too)")
    gen.add_argument("--device", default="cpu", help="cpu (default), cuda[:N] or auto")

    exp = commands.add_parser("export", help="write a workflow run as a self-describing model folder")
    exp.add_argument("run", type=Path, help="results/models/<model>/seed<seed> (or its weights.pt)")
    exp.add_argument("--out", type=Path, required=True, help="the folder to create")
    exp.add_argument("--results", type=Path, default=None,
                     help="results folder holding the run's metrics (default: the one the run lies in)")
    exp.add_argument("--overwrite", action="store_true", help="replace an earlier export at --out")

    info = commands.add_parser("info", help="print what a model is (its model.json)")
    info.add_argument("model", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # torch is imported here, not at start-up, so `--help` answers at once.
    from pipeline_lib.models import export

    try:
        if args.command == "generate":
            model, description = export.load_model(args.model, device=args.device)
            images, classes = export.generate(model, description, args.number, args.seed,
                                              classes=args.classes, per_class=args.per_class)
            written = export.write_images(images, classes, args.out, args.format)
            print(f"{len(images)} images of {description.get('model')} (seed {args.seed}) written to {args.out} "
                  f"({len(written)} {args.format} file(s) and labels.tsv)")
        elif args.command == "export":
            out = export.export_model(args.run, args.out, results=args.results, overwrite=args.overwrite)
            print(f"exported to {out}")
        else:
            print(json.dumps(export.describe(args.model), indent=2, sort_keys=True))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
