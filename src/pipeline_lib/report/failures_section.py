"""Model runs and datasets that failed (core/guard.py's failed records): listed with their reason,
left out of every table and figure, so that one killed or crashed job never holds up the report of
the others."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from pipeline_lib.core.guard import first_failure, read_failure
from pipeline_lib.report.html import escape


def split_failed_runs(models: Mapping[str, Mapping[int, Any]]) -> tuple[dict, list[dict]]:
    """``models`` (model → seed → that run's files, a ``ModelOutputs``: name → path in ``paths``)
    without the runs whose files hold a failed record, and those runs as records (model, seed, stage,
    reason)."""
    kept, failed = {}, []
    for model, by_seed in models.items():
        for seed, files in by_seed.items():
            record = first_failure(files.paths.values())
            if record is None:
                kept.setdefault(model, {})[seed] = files
            else:
                failed.append({"model": model, "seed": int(seed), "stage": _stage(record),
                               "reason": record.get("reason", "")})
    return kept, failed


def _stage(record: Mapping) -> str:
    """The rule that failed; a per-dataset job's record (passed on by every run of the dataset)
    names the dataset too."""
    stage = record.get("stage", "")
    return f"{stage} (dataset {record['dataset']})" if record.get("dataset") else stage


#: A dataset's reference outputs (report/inputs.DatasetOutputs fields) as the page names them.
REFERENCE_ROWS = {"original": "pixel metrics of the real slices",
                  "distribution_original": "FID, KID and PRDC of the real slices",
                  "domain_network": "the domain network",
                  "domain_original": "domain-feature metrics of the real slices",
                  "diversity_original": "diversity of the real slices",
                  "reader_scores": "reader-study scores"}


def split_failed_datasets(datasets: Mapping[str, Any]) -> tuple[dict, list[dict]]:
    """``datasets`` (name → ``DatasetOutputs``) without those whose slices are a failed record, the
    others with each failed reference output set to None; and what failed, as records (dataset,
    output, stage, reason). A dataset left out takes its models with it: their runs hold the same
    record and are listed by :func:`split_failed_runs`."""
    kept, failed = {}, []
    for name, files in datasets.items():
        record = first_failure([files.table, files.images])
        if record is not None:
            failed.append({"dataset": name, "output": "slices", "stage": record.get("stage", ""),
                           "reason": record.get("reason", "")})
            continue
        gone = {}
        for field, words in REFERENCE_ROWS.items():
            path = getattr(files, field)
            record = read_failure(path) if path is not None else None
            if record is not None:
                gone[field] = None
                failed.append({"dataset": name, "output": words, "stage": record.get("stage", ""),
                               "reason": record.get("reason", "")})
        kept[name] = dataclasses.replace(files, **gone)
    return kept, failed


def failed_datasets_html(failed: list[dict]) -> str:
    """The page's note of failed datasets and reference rows ("" when none failed)."""
    if not failed:
        return ""
    rows = "".join(f'<tr class="failed"><th>{escape(r["dataset"])}</th><td>{escape(r["output"])}</td>'
                   f'<td>{escape(r["stage"])}</td><td>{escape(r["reason"])}</td></tr>' for r in failed)
    return ('<section id="failed-datasets"><h2>Failed datasets</h2>\n<p>These per-dataset jobs failed on their '
            "last attempt. A dataset whose slices failed is left out of the page, and every run of its models is "
            "listed under Failed model runs; a reference row that failed is left out of its tables (the "
            "dataset's models are reported without it). Delete the failed job's outputs (for slices, "
            "<code>results/slices/&lt;dataset&gt;/</code>; every later job reruns, its input being newer) or use "
            "<code>snakemake --forcerun</code> to try again.</p>\n"
            '<table id="failed-datasets-table"><thead><tr><th>Dataset</th><th>Output</th><th>Stage</th>'
            f"<th>Reason</th></tr></thead><tbody>{rows}</tbody></table></section>")


def failed_runs_html(failed: list[dict]) -> str:
    """The page's block of failed runs ("" when none failed)."""
    if not failed:
        return ""
    rows = "".join(f'<tr class="failed"><th>{escape(r["model"])}</th><td class="num">{r["seed"]}</td>'
                   f'<td>{escape(r["stage"])}</td><td>{escape(r["reason"])}</td></tr>' for r in failed)
    return ('<section id="failed-runs"><h2>Failed model runs</h2>\n<p>These runs failed on their last attempt '
            "and are left out of every table and figure below; the other runs are reported as usual. The "
            "stage is the rule that failed; its log under <code>logs/</code> says more. Delete the run's "
            "outputs (or use <code>snakemake --forcerun</code>) to try again.</p>\n"
            '<table id="failed-runs-table"><thead><tr><th>Model</th><th>Seed</th><th>Stage</th><th>Reason</th>'
            f"</tr></thead><tbody>{rows}</tbody></table></section>")


def failed_run_rows(failed: list[dict]) -> list[dict]:
    """summary.tsv rows of the failed runs (their metric columns empty)."""
    return [{"model": r["model"], "runs": 0, "incomplete_runs": 0, "seeds": str(r["seed"]),
             "failed": f'{r["stage"]}: {r["reason"]}'} for r in failed]
