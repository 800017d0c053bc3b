"""Text and HTML for a report: the headline, the verdicts and the guide's before/after table.

Every number comes from the runs handed in; what a run could not measure says so.
"""

from __future__ import annotations

import html
import math
from typing import Any, Dict, Optional

import pandas as pd

from ragopt.measure.ablation import headline
from ragopt.measure.run import Run
from ragopt.measure.tables import before_after
from ragopt.ui.plots import SIMULATED_NOTE

NOT_MEASURED = "not measured"


def shown(value: Any, digits: int = 4) -> str:
    """A figure for a reader: 4 significant digits, or "not measured"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_MEASURED
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _mb(value: Optional[float]) -> str:
    return NOT_MEASURED if value is None else f"{value:,.0f} MB"


def _rate(figures: Dict[str, Any]) -> str:
    std = figures.get("docs_per_min_std")
    return f"{figures['docs_per_min']:.3g}" + ("" if std is None else f" ± {std:.2g}")


def headline_markdown(runs: pd.DataFrame) -> str:
    """ragopt against RAG-Anything's best entry point: docs/min, speedup, wall over the limit, peak RSS."""
    head = headline(runs)
    ours, theirs, best = head["ragopt"], head["raganything"], head["best_raganything"]
    if not ours or not theirs:
        return "**Headline not measured**: the runs lack ragopt (all on) or a RAG-Anything entry point."
    simulated = bool(runs.loc[runs["error"].isna(), "simulated_llm"].all())
    speedup = head["speedup_median"]
    rss_verdict = ("lower than" if ours["peak_rss_mb"] < theirs["peak_rss_mb"] else "higher than") if (
        ours["peak_rss_mb"] is not None and theirs["peak_rss_mb"] is not None) else "not comparable with"
    lines = [
        f"**ragopt ingests {_rate(ours)} docs/min; RAG-Anything's best entry point here, "
        f"{best}, {_rate(theirs)} docs/min: "
        f"{shown(speedup, 3)}x** (median over {min(ours['runs'], theirs['runs'])} repeat(s)).",
        f"- Wall time over the LLM-bound limit (1.0: every LLM slot busy all along): ragopt "
        f"{shown(ours['wall_over_limit'], 3)}, {best} {shown(theirs['wall_over_limit'], 3)}.",
        f"- Peak RSS of the process tree: ragopt {_mb(ours['peak_rss_mb'])}, {best} {_mb(theirs['peak_rss_mb'])} "
        f"(ragopt's is {rss_verdict} RAG-Anything's).",
    ]
    for name, figures in head["baselines"].items():
        if name != best:
            lines.append(f"- {name}: {figures['docs_per_min']:.3g} docs/min.")
    if simulated:
        lines.append(f"- Measured on the {SIMULATED_NOTE}.")
    return "\n".join(lines)


def speedups_of(runs: Dict[str, Run], of: str = "ragopt") -> Dict[str, Optional[float]]:
    """``of``'s docs/min over each other run's (None where either ingested nothing)."""
    rates = {name: run.summary()["docs_per_min"] for name, run in runs.items()}
    return {f"{of} vs {name}": (rates[of] / rate if rates.get(of) and rate else None) for name, rate in rates.items() if name != of}


def speedup_markdown(runs: Dict[str, Run], of: str = "ragopt") -> str:
    """docs/min of each run and ``of``'s speedup over each other one; "not measured" where none was ingested."""
    lines = [f"- **{name}**: {shown(run.summary()['docs_per_min'], 3)} docs/min" for name, run in runs.items()]
    lines += [f"- **{name}**: {shown(ratio, 3)}x" for name, ratio in speedups_of(runs, of).items()]
    if any(run.simulated for run in runs.values()):
        lines.append(f"- measured on the {SIMULATED_NOTE}")
    return "\n".join(lines)


def verdicts_markdown(table: pd.DataFrame, full_report_hint: str) -> str:
    """Per optimization: helped / within noise / hurt at this corpus size; or where the ablation is."""
    if table.empty:
        return f"Per-optimization verdicts come from the full ablation: {full_report_hint}."
    rows = ["| optimization | docs/min on | docs/min off | change | peak RSS on / off (MB) | verdict |", "|---|---|---|---|---|---|"]
    for row in table.itertuples():
        rows.append(f"| {row.optimization} | {row.docs_per_min_on:.3g} | {row.docs_per_min_off:.3g} | {row.change_pct:+.1f}% | "
                    f"{row.peak_rss_mb_on:,.0f} / {row.peak_rss_mb_off:,.0f} | **{row.verdict}** |")
    return ("Each optimization switched off alone against all on (\"within noise\": the difference of mean "
            "docs/min is under twice its standard error over the repeats):\n\n" + "\n".join(rows))


def before_after_html(before_record: str, after_record: str, simulated: bool) -> Dict[str, Any]:
    """The guide's before/after table as HTML, with the run records it was made from; and the table itself."""
    table = before_after(Run.from_json(before_record), Run.from_json(after_record))
    rows = "".join(
        f"<tr><td>{html.escape(row.metric)}</td><td>{shown(row.before)}</td><td>{shown(row.after)}</td>"
        f"<td>{shown(row[4])}</td></tr>"
        for row in table.itertuples()
    )
    page = (
        '<table id="before-after"><thead><tr><th>metric</th><th>before (RAG-Anything)</th><th>after (ragopt)</th>'
        f"<th>after/before</th></tr></thead><tbody>{rows}</tbody></table>"
        f"<p>Made from the run records <code>{html.escape(before_record)}</code> (before) and "
        f"<code>{html.escape(after_record)}</code> (after)"
        + (f"; measured on the {SIMULATED_NOTE}.</p>" if simulated else ".</p>")
    )
    return {"html": page, "table": table}


def representative_record(runs: pd.DataFrame, variant: str) -> Optional[str]:
    """The run record of ``variant``'s repeat with the median docs/min."""
    rows = runs[(runs["variant"] == variant) & runs["error"].isna()].sort_values("docs_per_min").reset_index(drop=True)
    return None if rows.empty else rows.loc[(len(rows) - 1) // 2, "record"]
