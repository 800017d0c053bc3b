"""Profiled runs: RAG-Anything's own entry points (the baseline) on one corpus.

Each run gets a fresh working directory and fresh backends (so the simulator's
counters describe that run alone), loads the embedding model and initializes
LightRAG before the clock starts, and releases the RAGAnything instance after
it stops. ``run_isolated`` runs one mode in a fresh Python process, so peak
RSS and leaks of one run never colour the next.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import pandas as pd

from ragopt.aio import run_sync
from ragopt.cache import ContentCache
from ragopt.config import RagoptConfig
from ragopt.memory import arelease_rag
from ragopt.metrics import Recorder, Run
from ragopt.pipeline import SUPPORTED_EXTENSIONS, Backends, build_rag, make_backends
from ragopt.workloads import corpus_files

BASELINE_MODES = ("rag_batch", "rag_folder")
MODES = BASELINE_MODES + ("ragopt",)
RAG_FOLDER_WORKERS = 4  # the guide's own example of process_folder_complete


def parse_cache_for(config: RagoptConfig, working_dir: Path) -> ContentCache:
    """The run's parse cache: off, the configured folder, or a fresh one in the working dir."""
    if not config.enable_parse_cache:
        return ContentCache(None)
    location = config.cache_storage or working_dir / "parse-cache"
    return ContentCache(location, size_limit_bytes=config.cache_size_limit_bytes, ttl_hours=config.cache_ttl_hours)


async def _run_entry_point(rag: Any, mode: str, corpus: Path, config: RagoptConfig, recorder: Recorder) -> Dict[str, Any]:
    """Run ``mode`` on ``corpus``; returns what the run knows beyond the Recorder."""
    output_dir = str(Path(rag.config.parser_output_dir))
    if mode == "ragopt":
        from ragopt.batch import aingest
        from ragopt.memory import MemoryBudget

        budget = MemoryBudget(config.max_memory_mb) if config.max_memory_mb else None
        cache = parse_cache_for(config, Path(rag.working_dir))
        result = await aingest(rag, corpus_files(corpus), cache=cache, recorder=recorder, budget=budget, progress=False)
        recorder.set_cache_stats("parse_cache", result.cache_stats)
        return {"ingest": result.counts(), "memory_gate": result.memory_gate, **rag.ragopt_stats}
    if mode == "rag_batch":
        result = await rag.process_documents_with_rag_batch(
            file_paths=[str(p) for p in corpus_files(corpus)],
            output_dir=output_dir,
            max_workers=config.max_concurrent_files,
            show_progress=False,
        )
        # Its pre-parse drops the files it cannot parse without a callback: record them here,
        # or a run would count neither the files nor their failures.
        parse_result = (result or {}).get("parse_result")
        if parse_result is not None:
            for path in parse_result.failed_files:
                recorder.record_event("document_error", file_path=path, stage="parse", error=parse_result.errors.get(path, "parse failed"))
    elif mode == "rag_folder":
        await rag.process_folder_complete(
            str(corpus),
            output_dir=output_dir,
            display_stats=False,
            file_extensions=SUPPORTED_EXTENSIONS,
            recursive=True,
            max_workers=RAG_FOLDER_WORKERS,
        )
    else:
        raise ValueError(f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")
    return {}


async def aprofile(
    mode: str,
    corpus: str | Path,
    config: Optional[RagoptConfig] = None,
    working_dir: Optional[str | Path] = None,
    backends: Optional[Backends] = None,
    label: Optional[str] = None,
) -> Run:
    """Profile one ingestion of ``corpus`` under ``mode``.

    ``rag_batch``: RAG-Anything's ``process_documents_with_rag_batch``;
    ``rag_folder``: its ``process_folder_complete(max_workers=4)``;
    ``ragopt``: ``ragopt.batch.ingest`` with the optimizations ``config`` switches on.
    """
    from ragopt.backends.embedding import preload

    config = config or RagoptConfig.from_env()
    corpus = Path(corpus)
    working_dir = Path(working_dir or tempfile.mkdtemp(prefix=f"ragopt-{mode}-"))
    backends = backends or make_backends(config)
    recorder = Recorder(slots=backends.slots, label=label or mode, sample_interval_s=config.sample_interval_s)
    rag = build_rag(config, working_dir, backends, recorder, optimized=mode == "ragopt")
    preload(config.embedding_device)  # model loading is set-up, not ingestion
    await rag._ensure_lightrag_initialized()
    recorder.start()
    details: Dict[str, Any] = {}
    try:
        details = await _run_entry_point(rag, mode, corpus, config, recorder)
    finally:
        run = recorder.stop(
            mode=mode,
            corpus=str(corpus),
            working_dir=str(working_dir),
            backend=backends.description,
            simulated=backends.simulated,
            simulator=backends.simulator.counters() if backends.simulated else None,
            config=config.to_dict(),
            details=details,
        )
        await arelease_rag(rag)
    return run


def profile(*args: Any, **kwargs: Any) -> Run:
    """Blocking form of ``aprofile`` (works in Jupyter and under %timeit)."""
    return run_sync(aprofile(*args, **kwargs))


def run_isolated(mode: str, corpus: str | Path, out: str | Path, config: Optional[RagoptConfig] = None,
                 working_dir: Optional[str | Path] = None, timeout_s: float = 3600) -> Run:
    """Run one mode in a fresh Python process and load the run record it writes."""
    config = config or RagoptConfig.from_env()
    env = {**os.environ, **config.to_env(), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, "-m", "ragopt.cli", "profile", "--mode", mode, "--corpus", str(corpus), "--out", str(out)]
    if working_dir is not None:
        command += ["--working-dir", str(working_dir)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    if completed.returncode != 0:
        raise RuntimeError(f"{mode} run failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}")
    return Run.from_json(out)


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
    ("P95 document latency (s)", "doc_latency_p95_s"),
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


# The optimizations an ablation switches, by config field.
OPTIMIZATIONS = {
    "tuned concurrency": "tuned_concurrency",
    "embedding micro-batching": "micro_batch_embeddings",
    "coalesced flushes": "coalesce_flushes",
    "write-behind vectors": "write_behind_vectors",
    "parse cache": "enable_parse_cache",
    "LLM retries": "llm_retries",
}


def ablation_variants(base: RagoptConfig) -> Dict[str, tuple]:
    """Baseline, ragopt with everything off, each optimization alone on and alone off, and all on.

    Values are (mode, config). With all optimizations off, ragopt still
    pipelines parsing and queues all documents into one LightRAG run.
    """
    all_off = base.replace(**{field: False for field in OPTIMIZATIONS.values()})
    variants: Dict[str, tuple] = {"RAG-Anything folder (baseline)": ("rag_folder", base), "ragopt, all off": ("ragopt", all_off)}
    for name, field in OPTIMIZATIONS.items():
        variants[f"only {name}"] = ("ragopt", all_off.replace(**{field: True}))
    for name, field in OPTIMIZATIONS.items():
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
