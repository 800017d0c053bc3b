"""How one ingestion mode spent its wall time on the sample, and what capacity each stage has.

The stages are the LLM slots (work: service seconds), the embedding worker
(work: texts), the parse workers (work: parse seconds) and the machine's
CPU cores (work: CPU seconds of the whole process tree: parsing, embedding
on CPU, LightRAG's merges and storage writes). The stage whose work took
the sample longest at its nominal capacity (K slots, one embedding worker,
the parse workers, the cores) bound it; a sample that kept every core busy
was bound by the CPU, whatever else was in flight (a call waiting for a
core counts as busy). Its pace is its work over its span,
from its first call's start to its last call's end: that span holds the
stage's gaps as well as its busy time (in a sequential mode the other
stages run in those gaps), and unlike a pace read from call end times it
is not thrown by a few large batched calls. The rest of the sample's wall
time is overhead (start before the stage's first call, the last flush after
it). The spread: the pace of the first and of the second half of its work.
``ModeFit.capacity`` gives any stage's rate under other settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np
import pandas as pd

from ragopt.measure.growth import growth_points

PLANNER_MODES = {"ragopt": "ragopt", "rag_folder": "RAG-Anything (shipped)"}


def busy_seconds(intervals: pd.DataFrame) -> float:
    """Seconds covered by the union of [start_s, end_s] intervals (the embedding worker serves one call at a time)."""
    total, end = 0.0, -math.inf
    for start, stop in sorted(zip(intervals["start_s"], intervals["end_s"])):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def service_seconds(calls: pd.DataFrame) -> pd.Series:
    """Each call's service seconds: the simulator's plan where it has one, else the measured busy time."""
    planned = pd.to_numeric(calls["planned_ns"], errors="coerce")
    return planned.fillna(calls["service_ns"].astype(float)) / 1e9


STAGES = ("LLM slots", "embedding", "parse", "CPU")
CPU_SATURATED = 0.9  # a sample that used this share of the cores or more was bound by them


@dataclass
class ModeFit:
    """How one mode's sample run spent its wall time: which stage bound it, at what pace, and the rest."""

    mode: str
    label: str
    slots: int
    max_in_flight: int
    wall_s: float
    service_s: float
    embed_busy_s: float
    seconds_per_text: float
    parse_s: float
    parse_workers: int
    cpu_s: float
    """CPU seconds of the whole process tree over the sample run (the sample's parsing included)."""
    cores: int
    bound: str
    """The stage whose work took the sample longest at its nominal capacity (K slots, one embedder, the parse workers)."""
    pace: Tuple[float, float, float]
    """The bound stage's work per wall second over its span (first call's start to last call's end), and its halves' lo, hi."""
    overhead_s: float
    """The sample's wall time outside its bounding stage: start, drain, last flush."""
    texts_points: Tuple[np.ndarray, np.ndarray]
    embed_tokens_points: Tuple[np.ndarray, np.ndarray]

    def capacity(self, stage: str, slots: int, parse_workers: int, scales_with_slots: bool) -> Tuple[float, float, float]:
        """(rate, lo, hi) of ``stage``'s work per wall second at ``slots`` and ``parse_workers``.

        The sample's bound stage runs at its measured pace (for the LLM scaled by
        slots, if the mode fills them); the others at their nominal capacity, the
        LLM's capped for a mode that never had more requests in flight.
        """
        if stage == "parse":
            return (float(parse_workers),) * 3
        if stage == "CPU":
            return self.pace if stage == self.bound else (float(self.cores),) * 3
        if stage == "embedding":
            nominal = 1 / self.seconds_per_text if self.seconds_per_text else math.inf
            return self.pace if stage == self.bound else (nominal,) * 3
        if stage == self.bound:
            scale = slots / self.slots
            return tuple(p * scale for p in self.pace) if scales_with_slots else tuple(min(p, slots) for p in self.pace)
        return (float(slots if scales_with_slots else min(slots, self.max_in_flight)),) * 3


def span_pace(calls: pd.DataFrame, amounts: pd.Series) -> Tuple[float, float, float]:
    """(rate, lo, hi): work per wall second over the calls' span, and over the spans of its two halves.

    A half is the calls in start order up to (from) half the work; its span
    runs from its first start to its last end.
    """
    order = np.argsort(calls["start_s"].to_numpy(), kind="stable")
    starts, ends = calls["start_s"].to_numpy()[order], calls["end_s"].to_numpy()[order]
    work = amounts.to_numpy(dtype=float)[order]
    total = work.sum()
    if total <= 0 or len(work) < 2:
        return math.nan, math.nan, math.nan
    first = np.cumsum(work) <= total / 2
    first[0] = True  # each half has a call
    if first.all():
        first[-1] = False

    def rate(picked: np.ndarray) -> float:
        span = float(ends[picked].max() - starts[picked].min())
        return float(work[picked].sum()) / span if span > 0 else math.nan

    rates = [r for r in (rate(np.ones_like(first)), rate(first), rate(~first)) if not math.isnan(r)]
    return (rates[0], min(rates), max(rates)) if rates else (math.nan, math.nan, math.nan)


def tree_cpu_seconds(run: Any) -> float:
    """CPU seconds the run's process tree used, from its first resource sample to its last."""
    cpu = run.resources["tree_cpu_s"].dropna()
    return float(cpu.iloc[-1] - cpu.iloc[0]) if len(cpu) > 1 else 0.0


def cpu_pace(run: Any, cpu_s: float) -> Tuple[float, float, float]:
    """(rate, lo, hi): CPU seconds per wall second over the run, and over its two halves in time."""
    cpu = run.resources.dropna(subset=["tree_cpu_s"])
    if len(cpu) < 3 or cpu_s <= 0:
        return math.nan, math.nan, math.nan
    t, used = cpu["t_s"].to_numpy(), cpu["tree_cpu_s"].to_numpy()
    middle = (t[0] + t[-1]) / 2
    halves = [np.interp([a, b], t, used) for a, b in ((t[0], middle), (middle, t[-1]))]
    rates = [cpu_s / (t[-1] - t[0]), *((b - a) / (middle - t[0]) for a, b in halves)]
    return rates[0], min(rates), max(rates)


def fit_mode(run: Any, doc_units: Dict[str, float], sample_parse_s: float, parse_workers: int, cores: int) -> ModeFit:
    """The mode's pace from its sample run (see the module docstring)."""
    calls, embed = run.llm_calls, run.embedding_calls
    service = service_seconds(calls)
    slots = int(run.meta.get("slots") or 1)
    embed_busy = busy_seconds(embed)
    texts = float(embed["texts"].sum())
    wall = float(run.meta.get("wall_s") or 0.0)
    cpu_s = tree_cpu_seconds(run)
    nominal = {"LLM slots": float(service.sum()) / slots, "embedding": embed_busy, "parse": sample_parse_s / parse_workers,
               "CPU": cpu_s / cores}
    saturated = wall > 0 and cpu_s / wall >= CPU_SATURATED * cores
    bound = "CPU" if saturated else max(nominal, key=nominal.get)
    pace = {"LLM slots": lambda: span_pace(calls, service),
            "embedding": lambda: span_pace(embed, embed["texts"]),
            "parse": lambda: (float(parse_workers),) * 3,
            "CPU": lambda: cpu_pace(run, cpu_s)}[bound]()
    work = {"LLM slots": float(service.sum()), "embedding": texts, "parse": sample_parse_s, "CPU": cpu_s}[bound]
    if math.isnan(pace[0]) or pace[0] <= 0:  # too few calls for a span: its nominal capacity
        pace = (work / nominal[bound],) * 3 if nominal[bound] else (1.0,) * 3
    max_in_flight = int(run.llm_slots_in_use()["in_flight"].max()) if len(calls) else slots
    return ModeFit(
        mode=run.meta.get("mode", run.label), label=PLANNER_MODES.get(run.meta.get("mode"), run.label), slots=slots,
        max_in_flight=max(1, max_in_flight), wall_s=wall, service_s=float(service.sum()), embed_busy_s=embed_busy,
        seconds_per_text=embed_busy / texts if texts else 0.0, parse_s=sample_parse_s, parse_workers=parse_workers,
        cpu_s=cpu_s, cores=cores, bound=bound, pace=pace, overhead_s=max(0.0, wall - work / pace[0]),
        texts_points=growth_points(run, doc_units, embed["end_s"], embed["texts"]),
        embed_tokens_points=growth_points(run, doc_units, embed["end_s"], pd.to_numeric(embed["tokens"], errors="coerce").fillna(0)),
    )
