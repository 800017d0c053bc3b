"""Variants run side by side, with repeats: baselines, ragopt, and each optimization switched off.

Runs are interleaved (A B C A B C ...), each in a fresh process, so a slow
minute of a shared machine falls on every variant alike; the spread of the
repeats is the noise a verdict is judged against.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

import pandas as pd

from ragopt.config import RagoptConfig
from ragopt.engine.registry import optimizations
from ragopt.measure.experiments import run_isolated

SHIPPED = "RAG-Anything folder (shipped)"
TUNED = "RAG-Anything folder (tuned)"
ALL_ON = "ragopt, all on"
ALL_OFF = "ragopt, all off"
BASELINES = (SHIPPED, TUNED)
SPREAD_FIGURES = ("docs_per_min", "wall_s", "wall_over_limit", "wall_over_limit_measured_busy", "peak_rss_mb",
                  "llm_slot_utilization", "doc_done_p95_s", "doc_processing_p95_s")


@dataclass(frozen=True)
class Variant:
    name: str
    mode: str
    config: RagoptConfig


def switches() -> Dict[str, str]:
    """The config field of each optimization an ablation switches: the registry's that are on by default
    (AIMD concurrency and rate-limit pacing depend on the endpoint) and the parse cache."""
    default = RagoptConfig()
    fields = {name: o.field for name, o in optimizations().items() if o.enabled is None and getattr(default, o.field) is True}
    return {**fields, "parse_cache": "enable_parse_cache"}


def ablation_variants(base: RagoptConfig, which: str = "core") -> List[Variant]:
    """The variants of an ablation over ``base``.

    ``quick``: RAG-Anything's folder mode shipped and tuned, and ragopt all on;
    ``minimal``: shipped folder mode and ragopt all on;
    ``core``: the quick three, ragopt all off, and each optimization alone off;
    ``all``: core, and each optimization alone on. With everything off ragopt
    still pipelines parsing and queues all documents into one LightRAG run.
    """
    all_off = base.replace(**{field: False for field in switches().values()})
    shipped, tuned, on = Variant(SHIPPED, "rag_folder", base), Variant(TUNED, "rag_folder_tuned", base), Variant(ALL_ON, "ragopt", base)
    if which == "minimal":
        return [shipped, on]
    if which == "quick":
        return [shipped, tuned, on]
    if which not in ("core", "all"):
        raise ValueError(f"unknown ablation {which!r}: quick, minimal, core or all")
    variants = [shipped, tuned, Variant(ALL_OFF, "ragopt", all_off)]
    variants += [Variant(f"all but {name}", "ragopt", base.replace(**{field: False})) for name, field in switches().items()]
    if which == "all":
        variants += [Variant(f"only {name}", "ragopt", all_off.replace(**{field: True})) for name, field in switches().items()]
    return variants + [on]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()


class _Lines:
    """Progress as one printed line per run (for a report executed headless, whose output streams to a shell).

    Time left: each remaining run counted at its variant's mean so far (the mean of all runs until
    the variant has one), since variants differ several-fold.
    """

    def __init__(self, plan: List[str]):
        self.plan, self.done = plan, 0
        self.started = self.last = time.perf_counter()
        self.durations: Dict[str, List[float]] = {}
        self.name = ""

    def set_description(self, name: str) -> None:
        self.name = name

    def update(self, n: int) -> None:
        now = time.perf_counter()
        variant = self.plan[self.done]
        self.durations.setdefault(variant, []).append(now - self.last)
        self.done, self.last = self.done + n, now
        every = [d for ds in self.durations.values() for d in ds]
        left = sum(sum(self.durations.get(v, every)) / len(self.durations.get(v, every)) for v in self.plan[self.done:])
        print(f"[{self.done}/{len(self.plan)}] {self.name} done; {_clock(now - self.started)} elapsed, "
              f"about {_clock(left)} left", flush=True)

    def close(self) -> None:
        pass


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def run_variants(corpus: str | Path, variants: Iterable[Variant], out_dir: str | Path, repeats: int = 1,
                 same_path: Optional[str | Path] = None, progress: bool | str = True,
                 after_run: Optional[Callable[[Variant, Dict[str, Any]], None]] = None) -> pd.DataFrame:
    """Each variant ``repeats`` times, interleaved, each run in a fresh process; one row per run.

    ``same_path``: every run ingests into this one working-dir path (RAG-Anything
    writes image paths into chunk text, so graphs compare only across runs made
    in the same path), moved to ``out_dir/work/<variant>__<repeat>`` after it.
    A run that fails is a row with its ``error`` (and no figures); the others go on.
    ``progress``: a bar (variant, repeat, elapsed, time left) in the shell or the
    notebook; ``"lines"``: a printed line per run; False: nothing. ``after_run(variant, row)``
    runs after each successful run, before the next one (e.g. to inspect the knowledge base it
    left on a shared storage) and may add to the row.
    """
    from tqdm.auto import tqdm

    variants, out_dir = list(variants), Path(out_dir)
    rows: List[Dict[str, Any]] = []
    plan = [variant.name for _ in range(repeats) for variant in variants]
    bar = _Lines(plan) if progress == "lines" else tqdm(total=len(plan), unit="run", disable=not progress)
    try:
        for repeat in range(repeats):
            for variant in variants:
                bar.set_description(f"{variant.name} · repeat {repeat + 1}/{repeats}")
                slug = f"{_slug(variant.name)}__{repeat}"
                record = out_dir / f"{slug}.json"
                working_dir = Path(same_path) if same_path else None
                if working_dir is not None:
                    shutil.rmtree(working_dir, ignore_errors=True)
                row: Dict[str, Any] = {"variant": variant.name, "mode": variant.mode, "repeat": repeat, "record": str(record), "error": None}
                try:
                    run = run_isolated(variant.mode, corpus, record, variant.config, working_dir=working_dir)
                    summary = run.summary()
                    summary.pop("llm_calls_by_kind")
                    row.update(summary, working_dir=run.meta.get("working_dir"), details=run.meta.get("details"))
                    if after_run is not None:
                        after_run(variant, row)
                except Exception as error:  # one failed run must not hide the others' figures
                    row["error"] = f"{type(error).__name__}: {str(error)[-800:]}"
                if working_dir is not None and working_dir.exists():
                    kept = out_dir / "work" / slug
                    shutil.rmtree(kept, ignore_errors=True)
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    working_dir.rename(kept)
                    row["working_dir"] = str(kept)
                rows.append(row)
                bar.update(1)
    finally:
        bar.close()
    return pd.DataFrame(rows)


def spread(runs: pd.DataFrame, figures: Iterable[str] = SPREAD_FIGURES) -> pd.DataFrame:
    """Mean, standard deviation and count of each figure per variant (failed runs left out)."""
    ok = runs[runs["error"].isna()] if "error" in runs else runs
    figures = [f for f in figures if f in ok]
    grouped = ok.groupby("variant", sort=False)[figures]
    table = pd.concat({"mean": grouped.mean(), "std": grouped.std(), "n": grouped.count()}, axis=1)
    return table.reindex(pd.unique(runs["variant"]))


def speedups(runs: pd.DataFrame, of: str = ALL_ON, over: Iterable[str] = BASELINES) -> Dict[str, Dict[str, Any]]:
    """docs/min of ``of`` over each variant in ``over``: per repeat, their median, and the ratio of means."""
    ok = runs[runs["error"].isna()]
    mine = ok[ok["variant"] == of].set_index("repeat")["docs_per_min"]
    result = {}
    for other in over:
        theirs = ok[ok["variant"] == other].set_index("repeat")["docs_per_min"]
        per_repeat = (mine / theirs).dropna()
        result[other] = {
            "per_repeat": [float(v) for v in per_repeat],
            "median": float(per_repeat.median()) if len(per_repeat) else None,
            "of_means": float(mine.mean() / theirs.mean()) if len(mine) and len(theirs) and theirs.mean() else None,
        }
    return result


def verdict(with_it: pd.Series, without_it: pd.Series) -> str:
    """helped / within noise / hurt: the difference of mean docs/min against twice its standard error."""
    if len(with_it) < 2 or len(without_it) < 2:
        return "no verdict (needs 2 repeats)"
    delta = with_it.mean() - without_it.mean()
    noise = 2 * math.sqrt(with_it.var() / len(with_it) + without_it.var() / len(without_it))
    if abs(delta) <= noise:
        return "within noise"
    return "helped" if delta > 0 else "hurt"


def verdicts(runs: pd.DataFrame) -> pd.DataFrame:
    """Per optimization: ragopt all on against all on but it, docs/min and peak RSS, with a verdict."""
    ok = runs[runs["error"].isna()]
    on = ok[ok["variant"] == ALL_ON]
    rows = []
    for name in switches():
        off = ok[ok["variant"] == f"all but {name}"]
        if off.empty or on.empty:
            continue
        rows.append({
            "optimization": name,
            "docs_per_min_on": on["docs_per_min"].mean(),
            "docs_per_min_off": off["docs_per_min"].mean(),
            "change_pct": 100 * (on["docs_per_min"].mean() / off["docs_per_min"].mean() - 1),
            "peak_rss_mb_on": on["peak_rss_mb"].mean(),
            "peak_rss_mb_off": off["peak_rss_mb"].mean(),
            "repeats": min(len(on), len(off)),
            "verdict": verdict(on["docs_per_min"], off["docs_per_min"]),
        })
    return pd.DataFrame(rows, columns=["optimization", "docs_per_min_on", "docs_per_min_off", "change_pct",
                                       "peak_rss_mb_on", "peak_rss_mb_off", "repeats", "verdict"])


def headline(runs: pd.DataFrame) -> Dict[str, Any]:
    """ragopt against RAG-Anything's best entry point (shipped or tuned): docs/min, wall/limit, peak RSS."""
    table = spread(runs, ("docs_per_min", "wall_over_limit", "peak_rss_mb"))
    means = table["mean"]
    present = [b for b in BASELINES if b in means.index and not pd.isna(means.loc[b, "docs_per_min"])]
    best = max(present, key=lambda b: means.loc[b, "docs_per_min"]) if present else None

    def figures(variant: Optional[str]) -> Dict[str, Any]:
        if variant is None or variant not in means.index:
            return {}
        return {key: (None if pd.isna(means.loc[variant, key]) else float(means.loc[variant, key]))
                for key in ("docs_per_min", "wall_over_limit", "peak_rss_mb")} | {
            "docs_per_min_std": None if pd.isna(table["std"].loc[variant, "docs_per_min"]) else float(table["std"].loc[variant, "docs_per_min"]),
            "runs": int(table["n"].loc[variant, "docs_per_min"]),
        }

    ragopt, baseline = figures(ALL_ON), figures(best)
    speedup = speedups(runs, ALL_ON, [best]).get(best, {}) if best else {}
    return {"ragopt": ragopt, "best_raganything": best, "raganything": baseline, "speedup_median": speedup.get("median"),
            "baselines": {b: figures(b) for b in present}}
