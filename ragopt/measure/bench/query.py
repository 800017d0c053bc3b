"""Query latency under load: concurrent ``aquery`` calls, idle and while an ingestion runs, RAG-Anything vs ragopt.

    ragopt bench --query                         # the sample as the knowledge base, preset default, concurrency 1 5 10 20
    ragopt bench --query --levels 1,20 --variants raganything,ragopt
    ragopt bench --query --smoke                 # a tiny run on the fast preset: the behaviour, not the figures

The corpus is ingested once (by ragopt, on the fast preset: the graph is the
same whatever the latency) and each variant queries its own copy, in a
fresh process of its own (``measure_variant_apart``), with a
fresh simulator of ``--preset`` and the same embedding model:

- ``raganything``: RAG-Anything as shipped (LightRAG's defaults) and its ``aquery``;
- ``raganything_tuned``: the same with LightRAG tuned as a careful user would (the batch benchmark's baseline);
- ``ragopt``: the same RAGAnything passed through ``ragopt.optimize`` (every optimization of the config on);
- ``ragopt_without_<switch>``: ragopt with one query optimization off (``QUERY_SWITCHES``).

At each concurrency level N clients ask distinct questions (modes naive,
local, global, hybrid, mix in turn), 2 x N of them (at least ``--min-queries``),
first idle, then while the variant's own entry point ingests
``--background-docs`` generated documents into the same knowledge base
(RAG-Anything's ``process_folder_complete``, ragopt's ``ingest``), stopped
when the last level's questions are answered; a query counts as "ingesting"
only if the ingestion was still running when it was answered (the share is
printed), and the LLM calls the ingestion made during each level show how
much it did. P50/P95/P99 latency and queries/min per
level; where the time goes (queue wait of the query's LLM calls, embedding
call time). The answer cache is reported apart: repeated questions, and
how many answers were served stale after a new document came in.

The LLM is the SIMULATED service unless RAGOPT_LLM_BASE_URL names a real
endpoint; every figure says which. The last line is one JSON object, with
``p95_s_c<N>_<idle|ingesting>_<variant>`` for every level, phase and variant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pandas as pd

from ragopt.config import RagoptConfig
from ragopt.measure.query_load import ask, latency_table, level_sizes, questions, slices
from ragopt.measure.workloads import SAMPLE_CORPUS, corpus_files, synthetic_corpus

VARIANTS = ("raganything", "raganything_tuned", "ragopt")
ENTRY_POINTS = {"raganything": "rag_folder", "raganything_tuned": "rag_folder_tuned", "ragopt": "ragopt"}
# The query optimizations of ragopt, each measured off in a variant of its own (config fields).
QUERY_SWITCHES = ("query_embeddings_first", "query_embedding_memo", "versioned_query_cache", "queries_skip_vector_backlog")
REPEATS = 5  # questions asked again for the cache figures
STALLED = 3  # what a variant's process exits with when its time is up


def variant_config(variant: str, config: RagoptConfig) -> RagoptConfig:
    for field in QUERY_SWITCHES:
        if variant == f"ragopt_without_{field}":
            return config.replace(**{field: False})
    return config


def entry_point(variant: str) -> str:
    return ENTRY_POINTS["ragopt" if variant.startswith("ragopt") else variant]


async def build_knowledge_base(corpus: Path, folder: Path, config: RagoptConfig) -> Dict[str, Any]:
    """Ingest ``corpus`` once (ragopt, fast preset); every variant then queries a copy."""
    from ragopt.engine.build import build_rag
    from ragopt.engine.orchestrator import aingest
    from ragopt.engine.release import arelease_rag

    fast = config.replace(sim_preset="fast", enable_parse_cache=False)
    rag = build_rag(fast, folder, optimized=True)
    started = time.perf_counter()
    result = await aingest(rag, corpus_files(corpus), config=fast, progress=False)
    await arelease_rag(rag)
    counts = result.counts()
    if counts["ok"] == 0:
        raise RuntimeError(f"the knowledge base could not be built from {corpus}: {result.files}")
    return {"documents": counts["ok"], "failed": counts["failed"], "built_s": time.perf_counter() - started}


class _Variant:
    """One variant on its own copy of the knowledge base: the rag and its simulator, a Recorder and a live view."""

    def __init__(self, variant: str, base: Path, work: Path, config: RagoptConfig):
        from ragopt.backends import make_backends
        from ragopt.engine.build import build_rag
        from ragopt.measure.experiments import tuned_baseline_settings
        from ragopt.measure.live import LiveMetrics
        from ragopt.measure.recorder import Recorder

        self.variant, self.config = variant, variant_config(variant, config)
        shutil.copytree(base, work)
        self.backends = backends = make_backends(self.config)
        self.recorder = Recorder(slots=backends.slots, label=variant)
        tuned = tuned_baseline_settings(backends.slots) if variant == "raganything_tuned" else None
        self.rag = build_rag(self.config, work, backends, self.recorder, lightrag_kwargs=tuned,
                             optimized=variant.startswith("ragopt"))
        self.live = LiveMetrics(f"bench-query {variant}", slots=backends.slots, simulated=backends.simulated,
                                backend=backends.description, simulator=backends.simulator).attach(self.rag)

    async def __aenter__(self) -> "_Variant":
        from ragopt.compat.raganything import ensure_initialized

        await self.backends.embedding_func.func(["warm-up"])
        await ensure_initialized(self.rag)
        self.recorder.start()
        self.live.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        from ragopt.engine.release import arelease_rag

        self.run = self.recorder.stop()
        self.live.finish()
        await arelease_rag(self.rag)

    def answer_calls(self) -> int:
        """Answers the LLM generated so far (one served from the cache makes no call)."""
        return int(self.live.llm_calls("query"))

    async def ingest(self, folder: Path) -> None:
        from ragopt.measure.experiments import _run_entry_point

        await _run_entry_point(self.rag, entry_point(self.variant), folder, self.config, self.recorder)

    def ingestion_calls(self) -> float:
        """LLM calls so far that no query made: the background ingestion's."""
        return self.live.llm_calls() - self.live.llm_calls("query") - self.live.llm_calls("keywords")

    async def ask_while_ingesting(self, folder: Path, levels: List[int], asked: List[List[str]]) -> List[Dict[str, Any]]:
        """Ingest ``folder`` in the background, ask each level's questions once it makes LLM calls, then stop it."""
        from ragopt.compat.lightrag import is_queue_worker

        rows: List[Dict[str, Any]] = []
        before = asyncio.all_tasks()
        ingestion = asyncio.create_task(self.ingest(folder))
        try:
            while not ingestion.done() and not self.ingestion_calls():
                await asyncio.sleep(0.1)
            for level, chunk in zip(levels, asked):
                calls_before = self.ingestion_calls()
                found = await ask(self.rag, chunk, level, busy=lambda: not ingestion.done())
                calls = self.ingestion_calls() - calls_before
                rows += [{**row, "phase": "ingesting", "ingestion_llm_calls": calls} for row in found]
        finally:
            # The ingestion first, alone, so it stops the way a cancelled ingest does (ragopt's asks LightRAG's
            # run to stop and writes what is done; cleanups in LightRAG's finally blocks must not be cancelled
            # a second time). Then what LightRAG started for it and left running (merges holding per-entity
            # locks the next variant's merges would wait for), but the LLM and embedding queues' workers,
            # which only their shutdown ends (the release does it).
            ingestion.cancel()
            await asyncio.gather(ingestion, return_exceptions=True)
            left = {t for t in asyncio.all_tasks() - before - {asyncio.current_task()} if not is_queue_worker(t)}
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
        return rows


async def measure_variant(variant: str, base: Path, work: Path, config: RagoptConfig, levels: List[int],
                          min_queries: int, background: Path) -> Dict[str, Any]:
    """The variant's latency rows, idle and ingesting, its cache figures and where its query time went."""
    rows: List[Dict[str, Any]] = []
    sizes = level_sizes(levels, min_queries)
    breakdown: Dict[str, Any] = {}
    async with _Variant(variant, base, work / f"{variant}-idle", config) as idle:
        asked = await questions(idle.rag, sum(sizes))
        for level, chunk in zip(levels, slices(asked, sizes)):
            rows += [{**row, "phase": "idle"} for row in await ask(idle.rag, chunk, level)]
        # In "mix" mode, as _cache_figures asks them again (the cache key includes the mode).
        answered = [r["question"] for r in rows if r["error"] is None and r["mode"] == "mix"][:REPEATS]
        cache = await _cache_figures(idle, answered, work) if answered else {"repeated": 0}
    breakdown["idle"] = _where_the_time_went(idle)
    async with _Variant(variant, base, work / f"{variant}-ingesting", config) as busy:
        rows += await busy.ask_while_ingesting(background, levels, slices(asked, sizes))
    breakdown["ingesting"] = _where_the_time_went(busy)
    return {"rows": [{**row, "variant": variant} for row in rows], "cache": cache, "breakdown": breakdown}


def measure_variant_apart(variant: str, base: Path, work: Path, config: RagoptConfig, levels: List[int],
                          min_queries: int, background: Path, timeout_s: float) -> Dict[str, Any]:
    """``measure_variant`` in a fresh process of its own.

    A variant then never inherits what the one before left in LightRAG's
    process-wide state (keyed locks, pipeline status, queue workers bound to
    the first event loop) after its background ingestion was stopped: in one
    process the next variant's merges once waited forever on such a lock. A
    variant still running after ``timeout_s`` prints where each of its tasks
    waits and is stopped; it comes back with ``failed`` set and no rows.
    """
    result = work / f"{variant}-measured.pickle"
    child = multiprocessing.get_context("spawn").Process(
        target=_measure_in_child, name=f"bench-query-{variant}",
        args=((variant, base, work, config, levels, min_queries, background), result, timeout_s))
    child.start()
    child.join(timeout_s + 60)  # the child's own watchdog first; this for a loop blocked in code that never awaits
    if child.is_alive():
        child.kill()
        child.join()
    if child.exitcode == 0 and result.exists():
        return pickle.loads(result.read_bytes())
    why = f"still running after {timeout_s:.0f} s" if child.exitcode in (STALLED, -9) else f"exit code {child.exitcode}"
    return {"rows": [], "cache": {}, "breakdown": {}, "failed": why}


def _measure_in_child(arguments: tuple, result: Path, timeout_s: float) -> None:
    from ragopt.backends.embedding import release_embedding_workers
    from ragopt.resources.lifeline import exit_with_parent

    exit_with_parent(spawned_from_main_thread=True)
    try:
        result.write_bytes(pickle.dumps(asyncio.run(_within(measure_variant(*arguments), timeout_s))))
    finally:
        release_embedding_workers(wait=True)


async def _within(work: Any, timeout_s: float) -> Any:
    """``work``'s result, or, past ``timeout_s``, where every task waits (on stderr) and exit ``STALLED``.

    Not ``asyncio.wait_for``: cancelling a stalled LightRAG run can wait forever too.
    """
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        print(f"bench --query: still running after {timeout_s:.0f} s; where each task waits:", file=sys.stderr)
        for other in asyncio.all_tasks():
            print(f"  {other.get_name()}: {' <- '.join(_awaiting(other))}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(STALLED)
    return task.result()


def _awaiting(task: asyncio.Task) -> List[str]:
    """The chain of coroutines ``task`` waits in, outermost first (``Task.get_stack`` gives only the outermost)."""
    chain, coro = [], task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_name} ({Path(frame.f_code.co_filename).name}:{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


async def _cache_figures(variant: _Variant, answered: List[str], work: Path) -> Dict[str, Any]:
    """Questions answered before, asked again: served from the cache, how fast; then after a new document
    about them: how many answers the cache served stale."""
    before, started = variant.answer_calls(), time.perf_counter()
    again = [await variant.rag.aquery(q, mode="mix") for q in answered]
    repeat_s = (time.perf_counter() - started) / len(answered)
    hits = len(answered) - (variant.answer_calls() - before)
    addition = work / f"{variant.variant}-addition"
    addition.mkdir()
    (addition / "addition.txt").write_text(
        "\n".join(f"New finding about {q}: an answer from before this document is out of date." for q in answered),
        encoding="utf-8")
    await variant.ingest(addition)
    before = variant.answer_calls()
    after = [await variant.rag.aquery(q, mode="mix") for q in answered]
    return {"repeated": len(answered), "repeat_hits": hits, "repeat_s_mean": repeat_s,
            "stale_after_ingest": len(answered) - (variant.answer_calls() - before),
            "same_answer_after_ingest": sum(a == b for a, b in zip(again, after))}


def _where_the_time_went(variant: _Variant) -> Dict[str, Any]:
    """The query LLM calls' wait for a slot of the service and their latency; the embedding model's calls;
    with ragopt's micro-batcher, the seconds queries waited for their vectors and the texts it did not encode again."""
    run, batcher = variant.run, getattr(variant.rag, "ragopt_stats", {}).get("micro_batch_embeddings", {})
    llm = run.llm_calls
    asked = llm[llm["kind"].isin(["keywords", "query"])]
    return {
        "query_embedding_wait_s": batcher.get("query_wait_s"),
        "query_embedding_memo_hits": batcher.get("query_memo_hits"),
        "query_llm_calls": len(asked),
        "query_llm_queue_wait_s_mean": float(asked["queue_wait_ns"].mean() / 1e9) if len(asked) else None,
        "query_llm_latency_s_mean": float(asked["latency_s"].mean()) if len(asked) else None,
        "embedding_calls": len(run.embedding_calls),
        "embedding_call_s_mean": float(run.embedding_calls["duration_s"].mean()) if len(run.embedding_calls) else None,
        "llm_calls_by_kind": {str(k): int(v) for k, v in llm["kind"].value_counts().sort_index().items()},
    }


def figures(table: pd.DataFrame) -> Dict[str, Any]:
    """``p95_s_c20_idle_ragopt`` and the like: p50, p95, p99, queries/min and the share while ingesting."""
    out: Dict[str, Any] = {}
    for row in table.to_dict("records"):
        suffix = f"c{row['concurrency']}_{row['phase']}_{row['variant']}"
        for name in ("p50_s", "p95_s", "p99_s"):
            out[f"{name}_{suffix}"] = row[name]
        out[f"queries_per_min_{suffix}"] = row["queries_per_min"]
        out[f"errors_{suffix}"] = row["errors"]
        if row["phase"] == "ingesting":
            out[f"share_while_ingesting_{suffix}"] = row["while_busy"]
    return out


def guide_rows(table: pd.DataFrame, variants: List[str]) -> str:
    """The original guide's row shape: concurrency, P95 response time (one column per variant and phase)."""
    columns = [(variant, phase) for phase in ("idle", "ingesting") for variant in variants]
    lines = ["| concurrency | " + " | ".join(f"P95 {v} {p} (s)" for v, p in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for level in sorted(table["concurrency"].unique()):
        cells = []
        for variant, phase in columns:
            row = table[(table["concurrency"] == level) & (table["variant"] == variant) & (table["phase"] == phase)]
            value = row["p95_s"].iloc[0] if len(row) else None
            cells.append("n/a" if value is None or pd.isna(value) else f"{value:.2f}")
        lines.append(f"| {level} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(SAMPLE_CORPUS), help="the knowledge base's documents (default: data/sample)")
    parser.add_argument("--preset", default=None, help="simulator latency preset (default RAGOPT_SIM_PRESET, else default)")
    parser.add_argument("--levels", default="1,5,10,20", help="concurrency levels, comma-separated")
    parser.add_argument("--min-queries", type=int, default=10, help="questions per level at least (else 2 x concurrency)")
    parser.add_argument("--background-docs", type=int, default=100, help="generated documents ingested while querying")
    parser.add_argument("--variants", default=",".join(VARIANTS + tuple(f"ragopt_without_{s}" for s in QUERY_SWITCHES)))
    parser.add_argument("--work-dir", help="knowledge bases go here (default: a fresh temporary folder)")
    parser.add_argument("--knowledge-base", help="a working dir ingested before (its copy is queried): skips ingesting --corpus")
    parser.add_argument("--smoke", action="store_true", help="tiny corpus, fast preset, levels 1 and 20: the behaviour only")
    parser.add_argument("--variant-timeout-s", type=float, default=3600,
                        help="a variant still running after this is stopped and reported failed (smoke: 300)")
    args = parser.parse_args(argv)

    config = RagoptConfig.from_env()
    levels = [int(level) for level in args.levels.split(",")]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS and v.removeprefix("ragopt_without_") not in QUERY_SWITCHES]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)} or ragopt_without_<{'|'.join(QUERY_SWITCHES)}>")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ragopt-bench-query-"))
    corpus, background = Path(args.corpus), work / "background"
    if args.smoke:
        config, levels, args.min_queries = config.replace(sim_preset="fast"), [1, 20], 1
        variants = [v for v in variants if v in ("raganything", "ragopt")]
        corpus, args.background_docs = work / "smoke-corpus", 3
        args.variant_timeout_s = min(args.variant_timeout_s, 300)
        synthetic_corpus(corpus, 2, seed=1, paragraphs_per_doc=2)
        synthetic_corpus(background, args.background_docs, seed=2, paragraphs_per_doc=2)
    else:
        synthetic_corpus(background, args.background_docs, seed=2)
    if args.preset:
        config = config.replace(sim_preset=args.preset)

    base = Path(args.knowledge_base) if args.knowledge_base else work / "knowledge-base"

    built = {"documents": "?", "built_s": 0.0} if args.knowledge_base else asyncio.run(build_knowledge_base(corpus, base, config))
    results = {v: measure_variant_apart(v, base, work, config, levels, args.min_queries, background, args.variant_timeout_s)
               for v in variants}
    failed = {v: r["failed"] for v, r in results.items() if "failed" in r}
    for variant, why in failed.items():
        print(f"bench --query: variant {variant} failed ({why}); its figures are missing", file=sys.stderr)
    rows = [row for r in results.values() for row in r["rows"]]
    if not rows:
        return 1
    keys = ["variant", "phase", "concurrency"]
    ingested = pd.DataFrame(rows).groupby(keys, as_index=False)["ingestion_llm_calls"].max()
    table = latency_table(rows, by=keys).merge(ingested, on=keys, how="left")
    simulated = config.uses_simulator
    backend = f"SIMULATED LLM service, preset {config.sim_preset}" if simulated else f"endpoint {config.llm_base_url}"

    if simulated:
        print(f"Figures measured on the SIMULATED LLM service (preset {config.sim_preset}).")
    print(f"knowledge base: {args.knowledge_base or corpus} ({built['documents']} documents, built in {built['built_s']:.0f} s, not timed below); "
          f"background ingestion: {args.background_docs} generated documents "
          f"(ingestion_llm_calls: the LLM calls it made while the level's questions were asked)")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
    print("\nwhere the query time went (per variant and phase):")
    for variant, result in results.items():
        for phase, numbers in result["breakdown"].items():
            print(f"  {variant:>24} {phase:>9}: {json.dumps(numbers)}")
    print("\nanswer cache (repeated questions, then a new document):")
    for variant, result in results.items():
        print(f"  {variant:>24}: {json.dumps(result['cache'])}")
    print("\n" + guide_rows(table, variants))
    print(json.dumps({
        "simulated": simulated, "backend": backend, "corpus": str(corpus), "levels": levels, "variants": variants,
        **figures(table),
        "cache": {v: r["cache"] for v, r in results.items()},
        "where_the_time_went": {v: r["breakdown"] for v, r in results.items()},
        "failed": failed,
    }, default=str))
    return 1 if failed else 0
