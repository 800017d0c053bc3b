"""A query workload: distinct questions about a knowledge base, asked by N concurrent clients.

Every question is asked once (a repeated question would measure the answer
cache, not the system); questions name the knowledge base's own entities, so
retrieval finds something, and the modes go round naive, local, global,
hybrid, mix. ``ask`` runs a closed loop: ``concurrency`` clients, each asking
its next question as soon as its last one is answered.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import pandas as pd

MODES = ("naive", "local", "global", "hybrid", "mix")
_TEMPLATES = ("What is {} and why does it matter?", "How is {} related to the rest of the documents?",
              "What do the documents say about {}?", "Which facts about {} are most important?")


async def questions(rag: Any, count: int) -> List[str]:
    """``count`` distinct questions about the entities of ``rag``'s knowledge graph (the same graph, the same questions)."""
    labels = sorted(await rag.lightrag.chunk_entity_relation_graph.get_all_labels())
    if not labels:
        raise ValueError("the knowledge base has no entities to ask about")
    asked = [template.format(label) for template in _TEMPLATES for label in labels]
    if count > len(asked):
        raise ValueError(f"asked for {count} distinct questions; this knowledge base gives {len(asked)}")
    return asked[:count]


async def ask(rag: Any, asked: Sequence[str], concurrency: int, busy: Callable[[], bool] = lambda: False,
              **query_options: Any) -> List[Dict[str, Any]]:
    """Ask every question once with ``concurrency`` clients; a row per question.

    ``busy()`` says whether something else (an ingestion) was running when
    the answer came; ``query_options`` go to ``rag.aquery``.
    """
    numbered: Iterator = iter(enumerate(asked))
    rows: List[Dict[str, Any]] = []
    started = time.perf_counter()

    async def client() -> None:
        for index, question in numbered:  # one shared iterator: each question once
            mode = MODES[index % len(MODES)]
            t0 = time.perf_counter()
            error: Optional[str] = None
            try:
                await rag.aquery(question, mode=mode, **query_options)
            except Exception as exc:  # one failed query is a row, not the end of the level
                error = f"{type(exc).__name__}: {exc}"
            end = time.perf_counter()
            rows.append({"question": question, "mode": mode, "concurrency": concurrency, "started_s": t0 - started,
                         "latency_s": end - t0, "error": error, "while_busy": busy()})

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return rows


def latency_table(rows: List[Dict[str, Any]], by: Sequence[str]) -> pd.DataFrame:
    """P50/P95/P99 latency (successful queries), errors and queries per minute per group of ``by``."""
    frame = pd.DataFrame(rows)
    out = []
    for key, group in frame.groupby(list(by), sort=False):
        ok = group[group["error"].isna()]
        span = float((group["started_s"] + group["latency_s"]).max() - group["started_s"].min())
        latency = ok["latency_s"]
        out.append({
            **dict(zip(by, key if isinstance(key, tuple) else (key,))),
            "queries": len(group), "errors": int(group["error"].notna().sum()),
            "while_busy": float(group["while_busy"].mean()),
            "p50_s": float(latency.quantile(0.5)) if len(ok) else None,
            "p95_s": float(latency.quantile(0.95)) if len(ok) else None,
            "p99_s": float(latency.quantile(0.99)) if len(ok) else None,
            "queries_per_min": len(ok) / span * 60 if span > 0 else None,
        })
    return pd.DataFrame(out)


def level_sizes(levels: Sequence[int], minimum: int) -> List[int]:
    """Questions per concurrency level: twice the clients (each asks at least twice), at least ``minimum``."""
    return [max(minimum, 2 * level) for level in levels]


def slices(asked: Sequence[str], sizes: Sequence[int]) -> List[List[str]]:
    """Consecutive slices of ``asked``: no question is asked at two levels."""
    bounds = list(itertools.accumulate(sizes, initial=0))
    return [list(asked[a:b]) for a, b in zip(bounds, bounds[1:])]
