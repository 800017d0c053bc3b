"""Each optimization one step at a time, in the order of the data flow, each step with its own before/after.

The staircase starts from ragopt with every optimization off (which still
pipelines parsing into one LightRAG run) and switches them on one by one:
first the LLM slots (tuned concurrency, gleaning priority, retries), then
embeddings and storage (micro-batching, write-behind vectors, coalesced
flushes). Step n's "before" is step n-1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd

from ragopt.config import RagoptConfig
from ragopt.measure.ablation import switches

GROUPS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("pipelined parse", ()),
    ("LLM slots", ("tuned_concurrency", "gleaning_priority", "llm_retries")),
    ("embeddings and storage", ("micro_batch_embeddings", "write_behind_vectors", "coalesce_flushes")),
)
FIGURES = ("docs_per_min", "wall_s", "wall_over_limit", "llm_slot_utilization", "llm_max_in_flight",
           "embedding_calls", "embedding_texts", "storage_flushes", "peak_rss_mb", "docs_ok")


def step_configs(base: RagoptConfig) -> List[Tuple[str, Optional[str], RagoptConfig]]:
    """(group, optimization switched on at this step or None, config) for each step."""
    fields = switches()
    config = base.replace(**{field: False for field in fields.values()})
    steps = []
    for group, names in GROUPS:
        if not names:
            steps.append((group, None, config))
        for name in names:
            config = config.replace(**{fields[name]: True})
            steps.append((group, name, config))
    return steps


def staircase(corpus: str | Path, base: RagoptConfig, out_dir: Optional[str | Path] = None, isolated: bool = False) -> pd.DataFrame:
    """Run each step once (in this process, or each in a fresh one with ``isolated``); one row per step."""
    from ragopt.measure.experiments import profile, run_isolated

    rows: List[Dict[str, Any]] = []
    for index, (group, name, config) in enumerate(step_configs(base)):
        label = "ragopt, all off" if name is None else f"+ {name}"
        if isolated:
            record = Path(out_dir or ".") / f"step_{index}.json"
            run = run_isolated("ragopt", corpus, record, config)
        else:
            run = profile("ragopt", corpus, config, label=label)
        summary = run.summary()
        rows.append({"step": index, "group": group, "optimization": name, "label": label, "run": run,
                     **{key: summary[key] for key in FIGURES}, "simulated_llm": summary["simulated_llm"]})
    return pd.DataFrame(rows)


def step_changes(stairs: pd.DataFrame, group: Optional[str] = None) -> pd.DataFrame:
    """Before (the previous step) and after of each step's figures, for one group or all."""
    rows = []
    for before, after in zip(stairs.itertuples(), stairs.iloc[1:].itertuples()):
        if group is not None and after.group != group:
            continue
        row = {"step": after.label}
        for key in ("docs_per_min", "wall_over_limit", "embedding_calls", "storage_flushes", "peak_rss_mb"):
            old, new = getattr(before, key), getattr(after, key)
            row[f"{key} before"], row[f"{key} after"] = old, new
        row["docs/min change"] = after.docs_per_min / before.docs_per_min - 1 if before.docs_per_min else None
        rows.append(row)
    return pd.DataFrame(rows)
