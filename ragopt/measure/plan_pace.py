"""How one ingestion mode spent its wall time on the sample, and what capacity each stage has.

The stages are the LLM slots (work: service seconds), the parse workers
(work: parse seconds), the machine's CPU cores (work: CPU seconds of the
whole process tree: parsing, embedding on this CPU, LightRAG's merges and
storage writes) and, where the embedder is not this machine's CPU (a GPU,
an endpoint), the embedder (work: tokens).

A stage's pace is its work per wall second over its span (the LLM's from
its first call's start to its last call's end; the CPU's over the run),
read on each half of its work: the steadier (faster) half is its pace, the
slower one and the whole span give the low end. Ramp-up and drain are
one-off, so the sample's wall time beyond its bound stage's work at that
pace is overhead, added once. A stage the sample kept busy (at least
``BUSY`` of its nominal capacity: K slots, the cores) ran at what it can
do, so the corpus runs it at that pace; a stage with room to spare runs at
its nominal capacity. A mode none of whose stages was busy is held back by
its own concurrency (RAG-Anything processes documents one after another),
so every stage keeps the pace the sample showed. The bound is the busiest
stage. ``ModeFit.capacity`` gives any stage's rate under other settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np
import pandas as pd

PLANNER_MODES = {"ragopt": "ragopt", "rag_folder": "RAG-Anything (shipped)"}
STAGES = ("LLM slots", "embedding", "parse", "CPU")
BUSY = 0.8  # a stage kept at least this share of its nominal capacity busy ran at what it can do
Pace = Tuple[float, float, float]


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


@dataclass
class ModeFit:
    """How one mode's sample run spent its wall time: each stage's work and pace, which one bound it, and the rest."""

    mode: str
    label: str
    slots: int
    max_in_flight: int
    wall_s: float
    parse_workers: int
    cores: int
    work: Dict[str, float]
    """The sample's work per stage: LLM service seconds, parse seconds, CPU seconds, embedding tokens."""
    paces: Dict[str, Pace]
    """Per stage: (pace, lo, hi) of its work per wall second in the sample (see the module docstring)."""
    busy: Dict[str, float]
    """Per stage: its pace over its nominal capacity (1: the stage was full all along)."""
    bound: str
    """The busiest stage of the sample."""
    paced: Tuple[str, ...]
    """The stages that keep their sample pace for the corpus (the busy ones; all, where none was busy)."""
    overhead_s: float
    """The sample's wall time beyond its bound stage's work at its pace: start, ramp-up, drain, last flush."""
    embed_texts: float = 0.0
    embed_tokens: float = 0.0

    @property
    def cpu_s(self) -> float:
        return self.work["CPU"]

    @property
    def parse_s(self) -> float:
        return self.work["parse"]

    def nominal(self, stage: str, slots: int, parse_workers: int, scales_with_slots: bool) -> float:
        """The stage's capacity by the settings alone (the LLM's capped for a mode that never had more in flight)."""
        return {"LLM slots": float(slots if scales_with_slots else min(slots, self.max_in_flight)),
                "parse": float(parse_workers), "CPU": float(self.cores), "embedding": math.inf}[stage]

    def capacity(self, stage: str, slots: int, parse_workers: int, scales_with_slots: bool) -> Pace:
        """(rate, lo, hi) of ``stage``'s work per wall second at ``slots`` and ``parse_workers``.

        A paced stage runs at its sample pace (the LLM's scaled by slots if the
        mode fills them, else capped by them); the others at nominal capacity.
        """
        if stage == "parse" or stage not in self.paced:
            return (self.nominal(stage, slots, parse_workers, scales_with_slots),) * 3
        pace = self.paces[stage]
        if stage == "LLM slots":
            return tuple(p * slots / self.slots for p in pace) if scales_with_slots else tuple(min(p, slots) for p in pace)
        return pace


def span_pace(calls: pd.DataFrame, amounts: pd.Series) -> Pace:
    """(pace, lo, hi): work per wall second over the spans of the two halves of the work, and over the whole.

    A half is the calls in start order up to (from) half the work; its span
    runs from its first start to its last end. The pace is the faster half's.
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

    return _steady(rate(np.ones_like(first)), [rate(first), rate(~first)])


def _steady(whole: float, halves: list) -> Pace:
    """(the faster half's rate, or the whole's; the lowest; the highest)."""
    measured_halves = [r for r in halves if not math.isnan(r)]
    rates = [r for r in (whole, *measured_halves) if not math.isnan(r)]
    if not rates:
        return math.nan, math.nan, math.nan
    return (max(measured_halves) if measured_halves else whole), min(rates), max(rates)


def tree_cpu_seconds(run: Any) -> float:
    """CPU seconds the run's process tree used, from its first resource sample to its last."""
    cpu = run.resources["tree_cpu_s"].dropna()
    return float(cpu.iloc[-1] - cpu.iloc[0]) if len(cpu) > 1 else 0.0


def cpu_pace(run: Any) -> Pace:
    """(pace, lo, hi): CPU seconds per wall second over the two halves of the run's CPU work, and over the whole."""
    cpu = run.resources.dropna(subset=["tree_cpu_s"])
    t, used = cpu["t_s"].to_numpy(dtype=float), cpu["tree_cpu_s"].to_numpy(dtype=float)
    if len(t) < 3 or used[-1] <= used[0] or t[-1] <= t[0]:
        return math.nan, math.nan, math.nan
    middle = float(np.interp((used[0] + used[-1]) / 2, used, t))  # when half the CPU work was done
    half = (used[-1] - used[0]) / 2
    halves = [half / (middle - t[0]) if middle > t[0] else math.nan, half / (t[-1] - middle) if t[-1] > middle else math.nan]
    return _steady((used[-1] - used[0]) / (t[-1] - t[0]), halves)


def fit_mode(run: Any, sample_parse_s: float, parse_workers: int, cores: int, embeds_on_cpu: bool = True) -> ModeFit:
    """The mode's stages, paces and overhead from its sample run (see the module docstring)."""
    calls, embed = run.llm_calls, run.embedding_calls
    service = service_seconds(calls)
    slots = int(run.meta.get("slots") or 1)
    wall = float(run.meta.get("wall_s") or 0.0)
    tokens = float(pd.to_numeric(embed["tokens"], errors="coerce").fillna(0).sum())
    work = {"LLM slots": float(service.sum()), "parse": sample_parse_s, "CPU": tree_cpu_seconds(run)}
    paces = {"LLM slots": span_pace(calls, service), "CPU": cpu_pace(run), "parse": (float(parse_workers),) * 3}
    if not embeds_on_cpu:  # on this CPU its work is in the CPU stage's
        work["embedding"] = tokens
        paces["embedding"] = span_pace(embed, pd.to_numeric(embed["tokens"], errors="coerce").fillna(0))
    nominal = {"LLM slots": float(slots), "parse": float(parse_workers), "CPU": float(cores), "embedding": math.inf}
    busy = {stage: (pace[0] / nominal[stage] if not math.isnan(pace[0]) and work[stage] > 0 else 0.0)
            for stage, pace in paces.items() if stage != "parse"}
    busy["parse"] = sample_parse_s / parse_workers / wall if wall else 0.0
    if "embedding" in busy:  # no nominal rate for an embedder: how much of the run it was in flight
        busy["embedding"] = busy_seconds(embed) / wall if wall else 0.0
    bound = max(busy, key=busy.get)
    paced = tuple(s for s in busy if busy[s] >= BUSY and s != "parse") or tuple(s for s in paces if s != "parse")
    for stage in paced:
        if math.isnan(paces[stage][0]) or paces[stage][0] <= 0:  # too little work for a span: it took the whole run
            paces[stage] = (work[stage] / wall,) * 3 if wall and work[stage] else (1.0,) * 3
    bound_pace = paces[bound][0] if bound != "parse" else float(parse_workers)
    max_in_flight = int(run.llm_slots_in_use()["in_flight"].max()) if len(calls) else slots
    return ModeFit(
        mode=run.meta.get("mode", run.label), label=PLANNER_MODES.get(run.meta.get("mode"), run.label), slots=slots,
        max_in_flight=max(1, max_in_flight), wall_s=wall, parse_workers=parse_workers, cores=cores, work=work, paces=paces,
        busy=busy, bound=bound, paced=paced, overhead_s=max(0.0, wall - work[bound] / bound_pace) if bound_pace > 0 else 0.0,
        embed_texts=float(embed["texts"].sum()), embed_tokens=tokens,
    )
