"""Ablations: the optimizations switched one at a time, each variant run in a fresh process."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import pandas as pd

from ragopt.config import RagoptConfig
from ragopt.ingest.registry import optimizations
from ragopt.measure.experiments import run_isolated


def switches() -> Dict[str, str]:
    """The config field of each optimization an ablation switches: the registry's, and the parse cache."""
    fields = {name: o.field for name, o in optimizations().items() if o.field != "adaptive_concurrency"}
    return {**fields, "parse_cache": "enable_parse_cache"}


def ablation_variants(base: RagoptConfig) -> Dict[str, tuple]:
    """Baseline, ragopt with everything off, each optimization alone on and alone off, and all on.

    Values are (mode, config). With all optimizations off, ragopt still
    pipelines parsing and queues all documents into one LightRAG run.
    """
    all_off = base.replace(**{field: False for field in switches().values()})
    variants: Dict[str, tuple] = {"RAG-Anything folder (baseline)": ("rag_folder", base), "ragopt, all off": ("ragopt", all_off)}
    for name, field in switches().items():
        variants[f"only {name}"] = ("ragopt", all_off.replace(**{field: True}))
    for name, field in switches().items():
        variants[f"all but {name}"] = ("ragopt", base.replace(**{field: False}))
    variants["ragopt, all on"] = ("ragopt", base)
    return variants


def run_ablation(corpus: str | Path, variants: Dict[str, tuple], out_dir: str | Path, repeats: int = 1) -> pd.DataFrame:
    """Each variant ``repeats`` times, each run in a fresh process; one tidy row per run."""
    out_dir = Path(out_dir)
    rows = []
    for repeat in range(repeats):
        for name, (mode, config) in variants.items():
            slug = "".join(c if c.isalnum() else "_" for c in name).strip("_").lower()
            record = out_dir / f"{slug}__{repeat}.json"
            run = run_isolated(mode, corpus, record, config)
            summary = run.summary()
            summary.pop("llm_calls_by_kind")
            rows.append({"variant": name, "mode": mode, "repeat": repeat, "record": str(record), **summary})
    return pd.DataFrame(rows)
