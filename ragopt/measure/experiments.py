"""Profiled runs: RAG-Anything's own entry points (the baseline) on one corpus.

Each run gets a fresh working directory and fresh backends (so the simulator's
counters describe that run alone), loads the embedding model and initializes
LightRAG before the clock starts, and releases the RAGAnything instance after
it stops. ``run_isolated`` runs one mode in a fresh Python process, so peak
RSS and leaks of one run never colour the next.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

from ragopt.aio import blocking
from ragopt.backends import Backends, make_backends
from ragopt.backends.embedding import worker_memo_stats
from ragopt.cache.content_cache import ContentCache
from ragopt.compat.raganything import ensure_initialized
from ragopt.config import RagoptConfig
from ragopt.engine.build import RAG_WORKERS, SUPPORTED_EXTENSIONS, build_rag
from ragopt.engine.release import arelease_rag
from ragopt.measure.live import LiveMetrics, published
from ragopt.measure.recorder import Recorder
from ragopt.measure.run import Run
from ragopt.measure.workloads import corpus_files

SHIPPED_MODES = ("rag_batch", "rag_folder")  # RAG-Anything's entry points as shipped
BASELINE_MODES = SHIPPED_MODES + ("rag_folder_tuned",)
MODES = BASELINE_MODES + ("ragopt",)


def tuned_baseline_settings(slots: int) -> Dict[str, Any]:
    """What a careful user sets on RAG-Anything's folder mode: LightRAG's LLM queue sized to the
    endpoint's K slots and a few documents in parallel.

    LightRAG's maintainers advise MAX_ASYNC = the endpoint's concurrency and
    MAX_PARALLEL_INSERT of 2-10, about MAX_ASYNC / 3 (LightRAG's issue on
    sizing concurrency; its default is 2). Here max(2, K // 2), 4 for K = 8;
    everything else as shipped.
    """
    return {"llm_model_max_async": slots, "max_parallel_insert": max(2, slots // 2)}


def parse_cache_for(config: RagoptConfig, working_dir: Path) -> ContentCache:
    """A profiled run's parse cache: off, CACHE_STORAGE, or a fresh one in its working dir
    (so one run's parses never speed up the next)."""
    return ContentCache.from_config(config, fallback_location=working_dir / "parse-cache")


async def _run_entry_point(rag: Any, mode: str, corpus: Path, config: RagoptConfig, recorder: Recorder) -> Dict[str, Any]:
    """Run ``mode`` on ``corpus``; returns what the run knows beyond the Recorder."""
    output_dir = str(Path(rag.config.parser_output_dir))
    workers = config.max_concurrent_files or RAG_WORKERS
    if mode == "ragopt":
        from ragopt.engine.orchestrator import aingest

        cache = parse_cache_for(config, Path(rag.working_dir))
        result = await aingest(rag, corpus_files(corpus), config=config, cache=cache, progress=False)
        recorder.set_cache_stats("parse_cache", result.cache_stats)
        return {"ingest": result.counts(), "memory_gate": result.memory_gate, "batches": result.batches, **rag.ragopt_stats}
    if mode == "rag_batch":
        result = await rag.process_documents_with_rag_batch(
            file_paths=[str(p) for p in corpus_files(corpus)],
            output_dir=output_dir,
            max_workers=workers,
            show_progress=False,
        )
        # Its pre-parse drops the files it cannot parse without a callback: record them here,
        # or a run would count neither the files nor their failures.
        parse_result = (result or {}).get("parse_result")
        if parse_result is not None:
            for path in parse_result.failed_files:
                recorder.record_event("document_error", file_path=path, stage="parse", error=parse_result.errors.get(path, "parse failed"))
    elif mode in ("rag_folder", "rag_folder_tuned"):
        await rag.process_folder_complete(
            str(corpus),
            output_dir=output_dir,
            display_stats=False,
            file_extensions=SUPPORTED_EXTENSIONS,
            recursive=True,
            max_workers=workers,
        )
    else:
        raise ValueError(f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")
    return {}


async def _measured(rag: Any, mode: str, corpus: Path, config: RagoptConfig, recorder: Recorder,
                    live: Optional[LiveMetrics], publisher: Any, simulator: Any = None, embedding_func: Any = None,
                    **meta: Any) -> Run:
    """One profiled ingestion by an initialized-or-not ``rag``: the clock runs from the first document
    to the last; ``meta`` goes into the run record, with ``simulator``'s counters and what ragopt's
    ``embedding_func``'s input memo saved read at the end."""
    await ensure_initialized(rag)
    recorder.start()
    details: Dict[str, Any] = {}
    try:
        with contextlib.nullcontext() if live is None else published(rag, publisher, live.attach(rag)):
            details = await _run_entry_point(rag, mode, corpus, config, recorder)
    finally:
        meta["simulator"] = simulator.counters() if simulator is not None else None
        meta["embedding_input_memo"] = worker_memo_stats(embedding_func)
        run = recorder.stop(mode=mode, corpus=str(corpus), working_dir=str(rag.working_dir), config=config.to_dict(),
                            details=details, **meta)
    return run


async def aprofile(
    mode: str,
    corpus: str | Path,
    config: Optional[RagoptConfig] = None,
    working_dir: Optional[str | Path] = None,
    backends: Optional[Backends] = None,
    label: Optional[str] = None,
    publisher: Any = None,
) -> Run:
    """Profile one ingestion of ``corpus`` under ``mode``, on ragopt's embedded stack.

    ``rag_batch``: RAG-Anything's ``process_documents_with_rag_batch``;
    ``rag_folder``: its ``process_folder_complete(max_workers=4)``, as shipped;
    ``rag_folder_tuned``: the same with LightRAG tuned as a careful user would
    (``tuned_baseline_settings``);
    ``ragopt``: ``ragopt.ingest`` with the optimizations ``config`` switches on.
    ``publisher`` (``ragopt.measure.live``): the run's live numbers are published to it while it runs.
    """
    config = config or RagoptConfig.from_env()
    corpus = Path(corpus)
    working_dir = Path(working_dir or tempfile.mkdtemp(prefix=f"ragopt-{mode}-"))
    backends = backends or make_backends(config)
    recorder = Recorder(slots=backends.slots, label=label or mode, sample_interval_s=config.sample_interval_s)
    tuned = tuned_baseline_settings(backends.slots) if mode == "rag_folder_tuned" else None
    rag = build_rag(config, working_dir, backends, recorder, lightrag_kwargs=tuned, optimized=mode == "ragopt")
    await backends.embedding_func.func(["warm-up"])  # model loading is set-up, not ingestion
    live = None if publisher is None else LiveMetrics(
        label or mode, slots=backends.slots, simulated=backends.simulated, backend=backends.description,
        simulator=backends.simulator, stats=getattr(rag, "ragopt_stats", None))
    try:
        return await _measured(rag, mode, corpus, config, recorder, live, publisher, backend=backends.description,
                               simulated=backends.simulated, simulator=backends.simulator,
                               embedding_func=backends.embedding_func)
    finally:
        await arelease_rag(rag)


profile = blocking(aprofile)


async def aprofile_rag(
    rag: Any,
    corpus: str | Path,
    mode: str = "rag_folder",
    config: Optional[RagoptConfig] = None,
    slots: Optional[int] = None,
    label: Optional[str] = None,
    simulated: Optional[bool] = None,
    publisher: Any = None,
) -> Run:
    """Profile one ingestion of ``corpus`` by a RAGAnything the user built (their parser, models, storages).

    ``mode``: ``rag_folder`` (its ``process_folder_complete``), ``rag_batch``,
    or ``ragopt`` (``ragopt.ingest``; pass the rag through ``ragopt.optimize``
    first). Use a rag that has not ingested yet. ``slots``: the endpoint's K
    (default MAX_CONCURRENT_PROCESSING), the limit the run is measured against.
    ``simulated``: whether its LLM is ragopt's simulator; by default, whether
    the calls reported the simulator's token counts. The rag stays open, for
    queries; ``ragopt.release_rag`` it after.
    """
    config = config or RagoptConfig.from_env()
    slots = slots or config.max_concurrent_processing
    if slots is None:
        raise ValueError("give slots=K, the endpoint's concurrent requests, or set MAX_CONCURRENT_PROCESSING")
    await rag.embedding_func.func(["warm-up"])  # loading the user's embedding model is set-up, not ingestion
    recorder = Recorder(slots=slots, label=label or mode, sample_interval_s=config.sample_interval_s).attach(rag)
    live = None if publisher is None else LiveMetrics(label or mode, slots=slots, simulated=simulated,
                                                       backend="the rag's own models", stats=getattr(rag, "ragopt_stats", None))
    try:
        run = await _measured(rag, mode, Path(corpus), config, recorder, live, publisher, backend="the rag's own models")
    finally:
        recorder.detach(rag)
    run.meta["simulated"] = simulated if simulated is not None else bool((run.llm_calls["token_source"] == "simulator").any())
    return run


profile_rag = blocking(aprofile_rag)


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


