"""Memory experiments: the memory gate on a real ingestion, and the repeated-experiment leak.

- ``budget_during_ingest``: ``ingest(budget=MemoryBudget(...))`` while a
  ballast array holds RSS over the budget; the gate holds documents back
  before insertion until the ballast is freed, then lets all through.
- ``release_cycles``: build a RAGAnything, ingest with RAG-Anything's own
  ``process_document_complete``, drop it, with or without ``release_rag``;
  RAG-Anything 1.4.3 keeps every instance alive through ``atexit``, so a
  notebook that experiments grows with each experiment.
- ``leak_check_cycles``: one such cycle of each kind under ``LeakCheck``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import pandas as pd

from ragopt.aio import run_sync
from ragopt.compat.raganything import ensure_initialized
from ragopt.config import RagoptConfig
from ragopt.engine.build import build_rag
from ragopt.engine.orchestrator import aingest
from ragopt.engine.release import arelease_rag
from ragopt.resources.budget import MemoryBudget
from ragopt.resources.leaks import LeakCheck
from ragopt.resources.rss import RSSMonitor, process_tree_rss_mb, settled_rss_mb

SERIES = (("with release_rag", True), ("without release_rag", False))
_workspaces = itertools.count()


def budget_during_ingest(config: RagoptConfig, paths: Sequence[Path], working_dir: str | Path, ballast_mb: float) -> Dict[str, Any]:
    """Ingest ``paths`` through a memory gate that a ballast of ``ballast_mb`` MB keeps closed until it is freed.

    The budget is the process tree's settled RSS plus half the ballast, reopening below a quarter
    of it; the ballast (written, so resident) is freed as soon as the gate holds a document. Returns
    the IngestResult, the budget (its hold events) and the RSS timeline of the process tree.
    """
    rag = build_rag(config, working_dir, optimized=True)

    async def run() -> Any:
        await ensure_initialized(rag)
        await rag.embedding_func.func(["warm-up"])  # the embedding worker's memory is there before the budget is set
        before = process_tree_rss_mb()
        ballast = [np.ones(int(ballast_mb * 2**20 // 8))]
        budget = MemoryBudget(max_mb=before + ballast_mb / 2, low_water_mb=before + ballast_mb / 4, poll_s=0.02)

        async def free_once_held() -> None:
            while not budget.holding:
                await asyncio.sleep(0.01)
            ballast.clear()
            settled_rss_mb()

        releaser = asyncio.ensure_future(free_once_held())
        try:
            result = await aingest(rag, paths, config=config, budget=budget, progress=False)
        finally:
            releaser.cancel()
            await arelease_rag(rag)
        return result, budget

    with RSSMonitor(interval_s=0.05) as monitor:
        result, budget = run_sync(run())
    return {"result": result, "budget": budget, "rss": monitor.frame()}


async def _cycle(config: RagoptConfig, backends: Any, paths: Sequence[Path], release: bool) -> weakref.ref:
    """Build, ingest with RAG-Anything's own entry point, drop (after ``release_rag`` or not)."""
    rag = build_rag(config, tempfile.mkdtemp(prefix="ragopt-cycle-"), backends,
                    lightrag_kwargs={"workspace": f"cycle-{next(_workspaces)}"})
    await ensure_initialized(rag)
    for path in paths:
        await rag.process_document_complete(str(path), display_stats=False)
    alive = weakref.ref(rag)
    if release:
        await arelease_rag(rag)
    del rag
    return alive


def release_cycles(config: RagoptConfig, paths: Sequence[Path], cycles: int, backends: Any = None) -> pd.DataFrame:
    """``cycles`` cycles of each series, interleaved, after one warm-up; one row per cycle.

    Before and after each cycle, once ``gc.collect()`` has run: settled RSS and the live
    objects the collector tracks; after it, how many of the series' instances are still alive.
    """
    from ragopt.backends import make_backends

    backends = backends or make_backends(config)
    run_sync(_cycle(config, backends, paths, True))  # warm-up: lazy imports and first-use caches are no leak

    def measure() -> tuple:
        return settled_rss_mb(), len(gc.get_objects())

    refs: Dict[str, List[weakref.ref]] = {name: [] for name, _ in SERIES}
    rows = []
    for index in range(1, cycles + 1):
        for name, release in SERIES:  # interleaved: a slow drift of the process weighs on both alike
            rss_before, objects_before = measure()
            started = time.perf_counter()
            refs[name].append(run_sync(_cycle(config, backends, paths, release)))
            rss_after, objects_after = measure()
            rows.append({"series": name, "cycle": index, "rss_mb": rss_after, "rss_delta_mb": rss_after - rss_before,
                         "objects_delta": objects_after - objects_before,
                         "alive": sum(ref() is not None for ref in refs[name]), "seconds": time.perf_counter() - started})
    frame = pd.DataFrame(rows)
    frame["rss_growth_mb"] = frame.groupby("series")["rss_delta_mb"].cumsum()
    frame["objects_growth"] = frame.groupby("series")["objects_delta"].cumsum()
    frame.attrs["simulated"], frame.attrs["backend"] = backends.simulated, backends.description
    return frame


def growth(cycles: pd.DataFrame) -> pd.DataFrame:
    """Per series: RSS and live objects added over all its cycles, per cycle, and instances still alive."""
    table = cycles.groupby("series", sort=False).agg(
        rss_growth_mb=("rss_growth_mb", "last"), objects_growth=("objects_growth", "last"),
        instances_alive=("alive", "last"), cycles=("cycle", "max"))
    table["rss_mb_per_cycle"] = table["rss_growth_mb"] / table["cycles"]
    table["objects_per_cycle"] = table["objects_growth"] / table["cycles"]
    return table


def leak_check_cycles(config: RagoptConfig, paths: Sequence[Path], backends: Any = None, top: int = 10) -> Dict[str, Dict[str, Any]]:
    """One cycle of each series under ``LeakCheck``: whether the instance lives on, and the lines holding most."""
    from ragopt.backends import make_backends

    backends = backends or make_backends(config)
    checks = {}
    for name, release in reversed(SERIES):
        with LeakCheck() as leaks:
            ref = run_sync(_cycle(config, backends, paths, release))
            gc.collect()
        lines = leaks.top_growth(top)
        lines["location"] = lines["location"].str.replace(r"^.*/(site-packages|python3\.\d+)/", "", regex=True)
        checks[name] = {"instance_alive": ref() is not None, "top_kib": float(lines["size_diff_kb"].sum()), "top": lines}
        del ref
    return checks
