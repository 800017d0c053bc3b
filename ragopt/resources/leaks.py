"""Finding leaks: tracemalloc growth by file:line, and the RSS slope of a repeated call (soak)."""

from __future__ import annotations

import gc
import tracemalloc
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from ragopt.resources.rss import process_tree_rss_mb


class LeakCheck:
    """Find where memory grows, by file:line, using tracemalloc snapshots.

    ::

        with LeakCheck() as leaks:          # checkpoints "start" and "end"
            for doc in docs:
                ingest(doc)
        leaks.top_growth(10)

    Starts tracemalloc on enter if it was not running, and stops it on exit
    only in that case. Tracing slows allocation-heavy code several times over.
    """

    def __init__(self, frames: int = 1):
        self.frames = frames
        self.snapshots: "OrderedDict[str, tracemalloc.Snapshot]" = OrderedDict()
        self._started_tracing = False

    def __enter__(self) -> "LeakCheck":
        if not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)
            self._started_tracing = True
        self.checkpoint("start")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.checkpoint("end")
        if self._started_tracing:
            tracemalloc.stop()
            self._started_tracing = False

    def checkpoint(self, label: str) -> None:
        if not tracemalloc.is_tracing():
            raise RuntimeError("tracemalloc is not tracing: use LeakCheck as a context manager")
        gc.collect()  # count only what is still reachable
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
                tracemalloc.Filter(False, "<unknown>"),
            ]
        )
        self.snapshots[label] = snapshot

    def top_growth(self, n: int = 10, first: Optional[str] = None, last: Optional[str] = None) -> pd.DataFrame:
        """Top ``n`` lines by growth from checkpoint ``first`` to ``last`` (default: first and last taken).

        Columns: location ("file:line"), size_diff_kb, count_diff, size_kb.
        """
        if len(self.snapshots) < 2:
            raise ValueError("need at least two checkpoints")
        labels = list(self.snapshots)
        before = self.snapshots[first or labels[0]]
        after = self.snapshots[last or labels[-1]]
        diffs = [d for d in after.compare_to(before, "lineno") if d.size_diff > 0][:n]
        return pd.DataFrame(
            [
                {
                    "location": f"{d.traceback[0].filename}:{d.traceback[0].lineno}",
                    "size_diff_kb": d.size_diff / 1024,
                    "count_diff": d.count_diff,
                    "size_kb": d.size / 1024,
                }
                for d in diffs
            ],
            columns=["location", "size_diff_kb", "count_diff", "size_kb"],
        )


@dataclass
class SoakResult:
    """RSS per sampled iteration and the fitted growth after warm-up."""

    frame: pd.DataFrame  # iteration, rss_mb, warmup (bool)
    slope_mb_per_iteration: float
    warmup: int

    def mb_per(self, items: int = 100) -> float:
        """Projected RSS growth over ``items`` further iterations, e.g. per 100 documents."""
        return self.slope_mb_per_iteration * items


def soak(
    fn: Callable[[], Any],
    iterations: int,
    warmup: Optional[int] = None,
    sample_every: int = 1,
    rss_fn: Optional[Callable[[], float]] = None,
) -> SoakResult:
    """Call ``fn()`` ``iterations`` times and fit RSS growth per iteration.

    Warm-up iterations (default: the first 10%, at least 1) fill caches and
    pools and are left out of the fit. ``gc.collect()`` runs before each
    sample so the slope reflects memory still reachable, not pending garbage.
    A slope near 0 means no leak; compare it with your per-item budget.
    """
    rss_fn = rss_fn or (lambda: process_tree_rss_mb(include_children=False))
    warmup = max(1, iterations // 10) if warmup is None else warmup
    rows = []
    for i in range(iterations):
        fn()
        if i % sample_every == 0 or i == iterations - 1:
            gc.collect()
            rows.append({"iteration": i, "rss_mb": rss_fn(), "warmup": i < warmup})
    frame = pd.DataFrame(rows, columns=["iteration", "rss_mb", "warmup"])
    fitted = frame[~frame["warmup"]]
    if len(fitted) < 2:
        raise ValueError("need at least two samples after warm-up to fit a slope")
    slope, _intercept = np.polyfit(fitted["iteration"], fitted["rss_mb"], 1)
    return SoakResult(frame=frame, slope_mb_per_iteration=float(slope), warmup=warmup)
