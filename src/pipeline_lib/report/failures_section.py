"""Model runs that failed (core/guard.py's failed records): listed with their reason, left out of
every table and figure, so that one killed or crashed run never holds up the report of the others."""

from __future__ import annotations

from typing import Any, Mapping

from pipeline_lib.core.guard import first_failure
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
                failed.append({"model": model, "seed": int(seed), "stage": record.get("stage", ""),
                               "reason": record.get("reason", "")})
    return kept, failed


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
