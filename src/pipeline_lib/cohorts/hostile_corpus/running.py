"""The hostile corpus built, run and judged: every case in its own folder of one tree, discovery and
ingest over the whole tree as the workflow runs them, each outcome compared with its case's
expected decision, and the Markdown scorecard."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from pipeline_lib.cohorts.hostile_corpus.building import ACCEPT, REFUSE, SETTINGS, WARN, Case
from pipeline_lib.cohorts.hostile_corpus.dicom_cases import dicom_cases
from pipeline_lib.cohorts.hostile_corpus.filesystem_cases import filesystem_cases
from pipeline_lib.cohorts.hostile_corpus.nifti_cases import nifti_cases
from pipeline_lib.core.io import write_json, write_text
from pipeline_lib.imaging.discovery import discover_inputs, display_path, write_staging
from pipeline_lib.imaging.ingest import ingest_subject

SALT = "hostile-corpus-salt"
SAMPLES_SCHEMA = Path(__file__).resolve().parents[4] / "workflow" / "schemas" / "samples.schema.yaml"


def cases() -> list[Case]:
    """Every case, in the scorecard's order: filesystem, NIfTI, DICOM."""
    return filesystem_cases() + nifti_cases() + dicom_cases()


def build_corpus(root: Path, selected: list[Case] | None = None) -> dict[str, str]:
    """Build every case under ``root`` (``NN-slug/``); return slug -> why it was not built."""
    root = Path(root)
    root.mkdir(parents=True)
    skipped = {}
    judged = {}
    for index, case in enumerate(selected or cases()):
        folder = root / f"{index + 1:03d}-{case.slug}"
        folder.mkdir()
        try:
            judged[case.slug] = f"{folder.name}/{case.build(folder)}"
        except PermissionError as exc:
            skipped[case.slug] = f"cannot be built here ({os.strerror(exc.errno or 0)})"
            shutil.rmtree(folder, ignore_errors=True)
    write_json(root.parent / f"{root.name}.judged.json", judged)
    return skipped


def run_corpus(root: Path, work: Path) -> pd.DataFrame:
    """Discovery over ``root`` and ingest of every subject, as the workflow does; one row per outcome."""
    root, work = Path(root), Path(work)
    found = discover_inputs(root, SALT, SAMPLES_SCHEMA)
    write_staging(found, work / "staging")
    rows = [{"path": path, "stage": "discovery", "decision": REFUSE, "reason": reason, "warning": "",
             "kind": kind} for path, kind, reason in found.ignored[["path", "kind", "reason"]].itertuples(index=False)]
    linkage = found.linkage.set_index("subject")
    for subject, fmt, kind in found.subjects[["subject", "format", "kind"]].itertuples(index=False):
        status = ingest_subject(work / "staging" / subject / "input", fmt, work / "ingest" / subject, subject,
                                kind=kind, settings=SETTINGS)
        decision = REFUSE if status["status"] != "ok" else WARN if status["warning"] else ACCEPT
        rows.append({"path": linkage.loc[subject, "path"], "stage": "ingest", "decision": decision,
                     "reason": status["reason"], "warning": status["warning"], "kind": kind,
                     "output": str(work / "ingest" / subject)})
    return pd.DataFrame(rows)


def judge(root: Path, outcomes: pd.DataFrame, selected: list[Case] | None = None,
          skipped: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per case: expected and actual decision, the stage, the reason and whether it matches."""
    root = Path(root)
    judged = json.loads((root.parent / f"{root.name}.judged.json").read_text())
    by_path = {row.path: row for row in outcomes.itertuples(index=False)}
    rows = []
    for case in selected or cases():
        if case.slug in (skipped or {}):
            rows.append({"slug": case.slug, "group": case.group, "kind": case.kind, "expected": case.expected,
                         "decision": "not built", "stage": "", "reason": skipped[case.slug], "ok": None})
            continue
        outcome = by_path.get(display_path(os.path.abspath(root / judged[case.slug])))
        if outcome is None:
            rows.append({"slug": case.slug, "group": case.group, "kind": case.kind, "expected": case.expected,
                         "decision": "no outcome", "stage": "", "reason": "", "ok": False})
            continue
        text = outcome.warning if case.expected == WARN else outcome.reason
        ok = outcome.decision == case.expected and bool(re.search(case.reason, text)) \
            and (case.expected != REFUSE or len(text) > 10)
        rows.append({"slug": case.slug, "group": case.group, "kind": case.kind, "expected": case.expected,
                     "decision": outcome.decision, "stage": outcome.stage,
                     "reason": outcome.reason or outcome.warning, "ok": ok,
                     "output": getattr(outcome, "output", "")})
    return pd.DataFrame(rows)


def run_without_dac_override(root: Path, work: Path) -> pd.DataFrame:
    """:func:`run_corpus` in a child process that cannot bypass file permissions (when root)."""
    result = Path(work) / "outcomes.json"
    command = [sys.executable, "-m", "pipeline_lib.cohorts.hostile_corpus", "--run", str(root), "--work", str(work)]
    preexec = drop_dac_capabilities if os.geteuid() == 0 else None
    done = subprocess.run(command, preexec_fn=preexec, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"corpus run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return pd.read_json(result, orient="records", dtype=False)


def drop_dac_capabilities() -> None:
    """Remove CAP_DAC_OVERRIDE (1) and CAP_DAC_READ_SEARCH (2) from the bounding set; root's
    capabilities are recomputed from it at exec, so the child program runs without them."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def scorecard(table: pd.DataFrame) -> str:
    """The Markdown scorecard: one row per case."""
    counts = table["decision"].value_counts().to_dict()
    lines = [
        "# Hostile and awkward inputs: the scorecard",
        "",
        "Generated by `python -m pipeline_lib.cohorts.hostile_corpus --scorecard docs/HOSTILE_INPUTS.md`",
        "from the corpus that `tests/test_hostile_corpus.py` builds and checks (every row must match its",
        "expected decision). Each case is one entry in its own folder of one input tree; discovery runs over",
        "the whole tree and ingest over every subject it finds, in one go, with `ingest.max_voxels` set to",
        f"{SETTINGS.max_voxels:,}. *Stage* says where the decision fell: discovery lists ignored entries (with",
        "kind and reason) in the ingest QC table; ingest refuses a subject with its reason. Reasons are",
        "quoted as the QC table shows them.",
        "",
        f"{len(table)} cases: " + ", ".join(f"{n} {decision}" for decision, n in sorted(counts.items())) + ".",
        "",
        "| # | input | expected | decision | stage | reason or warning |",
        "|---|---|---|---|---|---|",
    ]
    for index, row in enumerate(table.itertuples(index=False)):
        mark = "" if row.ok in (True, None) else " **(unexpected)**"
        reason = str(row.reason).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {index + 1} | {row.group}: {row.kind} | {row.expected} | {row.decision}{mark} | "
                     f"{row.stage} | {reason} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline_lib.cohorts.hostile_corpus",
                                     description="The hostile-input corpus: build, run, score.")
    parser.add_argument("--scorecard", type=Path, help="build and run the corpus, write the Markdown scorecard here")
    parser.add_argument("--build", type=Path, help="only build the corpus tree into this (new) folder")
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        run_corpus(args.run, args.work).to_json(args.work / "outcomes.json", orient="records")
        return
    if args.build:
        skipped = build_corpus(args.build)
        print(f"built {len(cases()) - len(skipped)} cases in {args.build}; not built: {skipped or 'none'}")
        return
    if args.scorecard:
        with tempfile.TemporaryDirectory(prefix="hostile-corpus-") as tmp:
            root, work = Path(tmp) / "corpus", Path(tmp) / "work"
            skipped = build_corpus(root)
            work.mkdir()
            table = judge(root, run_without_dac_override(root, work), skipped=skipped)
        write_text(args.scorecard, scorecard(table))
        bad = table[table["ok"] == False]  # noqa: E712 (None means not built)
        print(f"{len(table)} cases, {len(bad)} unexpected; scorecard written to {args.scorecard}")
        if len(bad):
            raise SystemExit(1)
        return
    parser.print_help()

