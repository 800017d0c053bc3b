"""Tables over Runs: headline figures, summaries side by side, the guide's before/after table."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable

import pandas as pd

from ragopt.measure.run import Run

BASELINE_FIGURES = ("docs_per_min", "wall_over_limit", "llm_calls", "simulator_llm_calls", "embedding_calls", "embedding_texts")


def headline(run: Run) -> Dict[str, Any]:
    """The figures a benchmark prints for one run, the simulator's own call count beside the profiler's."""
    summary = run.summary()
    simulator = run.meta.get("simulator") or {}
    return {
        **{key: summary[key] for key in BASELINE_FIGURES if key in summary},
        "simulator_llm_calls": simulator.get("calls"),
        "docs_ok": summary["docs_ok"],
        "docs_failed": summary["docs_failed"],
        "wall_s": summary["wall_s"],
        "llm_bound_limit_s": summary["llm_bound_limit_s"],
        "llm_max_in_flight": summary["llm_max_in_flight"],
        "storage_flushes": summary["storage_flushes"],
        "peak_rss_mb": summary["peak_rss_mb"],
        "simulated_llm": summary["simulated_llm"],
    }


def compare_runs(runs: Iterable[Run]) -> pd.DataFrame:
    """Summaries side by side: one column per run, one row per figure."""
    columns = {}
    for run in runs:
        summary = run.summary()
        summary["llm_calls_by_kind"] = json.dumps(summary["llm_calls_by_kind"])
        columns[run.label] = summary
    return pd.DataFrame(columns)


# The rows of the original optimization guide's before/after table, each from a Run summary.
GUIDE_ROWS = (
    ("Batch throughput (docs/min)", "docs_per_min"),
    ("Parse cache hit rate", "parse_cache_hit_rate"),
    ("CPU utilization (% of all cores)", "cpu_pct_all_cores"),
    ("Peak memory (RSS MB)", "peak_rss_mb"),
    ("Concurrency (max LLM requests in flight)", "llm_max_in_flight"),
    ("P95 time to done since the batch started (s)", "doc_done_p95_s"),
    ("P95 document processing time (s)", "doc_processing_p95_s"),
)


def before_after(before: Run, after: Run) -> pd.DataFrame:
    """The guide's before/after table with measured values only (None where not measured)."""
    b, a = before.summary(), after.summary()
    rows = []
    for name, key in GUIDE_ROWS:
        old, new = b.get(key), a.get(key)
        change = (new / old) if isinstance(old, (int, float)) and isinstance(new, (int, float)) and old else None
        rows.append({"metric": name, "before": old, "after": new, "after/before": change})
    return pd.DataFrame(rows)
