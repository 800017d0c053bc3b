"""Scale-out benchmark: the parse stage on Celery workers against the local pool, and ingest end to end.

    ragopt bench --distributed [--corpus DIR | --synthetic N] [--workers 1 2] [--preset fast]
        [--project 4 8 16] [--skip-ingest] [--scratch DIR]

Starts its own redis-server and ``ragopt worker --queues parse`` processes
(one pool process each, as one machine each would run) on this machine
(``ragopt.distributed.local``), then measures:

1. Parse throughput (documents per second, every parse a cache miss): the
   local process pool (``LocalParseExecutor``, a process per core) and 1, 2, ...
   Celery parse workers (``CeleryParseExecutor``), all files at once; the
   pools are warmed on files outside the corpus first, one per process.
2. Task overhead: each file once more through the Celery workers, one at a
   time, now a cache hit: the round trip of a parse task that does no parsing
   (p50, p95 ms).
3. Ingest end to end into the same working-dir path: local pool, then Celery
   parse workers; wall seconds, whether the two graphs are the same, and
   documents lost or duplicated in the Celery run's doc status.
4. A projection (labelled as one) of parse throughput for N workers on N
   machines: N / (mean parse seconds per document + p50 task overhead), from
   the parse times measured with the fewest workers (the least shared CPU)
   and the overhead measured in 2.

Every worker here shares this machine's cores, so 2 workers cannot beat the
local pool by much. The last line is one JSON object. LLM figures come from
the simulated LLM service unless RAGOPT_LLM_BASE_URL names a real one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ragopt.config import RagoptConfig  # noqa: E402
from ragopt.measure.workloads import SAMPLE_CORPUS, corpus_files, synthetic_corpus  # noqa: E402


async def parse_all(executor: Any, files: List[Path], output_dir: Path, cache: Any, spec: Any) -> Dict[str, Any]:
    """Every file through ``executor`` at once; wall seconds and each file's parse seconds."""
    from ragopt.cache.content_cache import file_sha256

    digests = [file_sha256(f) for f in files]
    started = time.perf_counter()
    results = await asyncio.gather(*(executor.parse(str(f), d, str(output_dir), cache, spec) for f, d in zip(files, digests)),
                                   return_exceptions=True)
    wall = time.perf_counter() - started
    parsed = [r for r in results if not isinstance(r, BaseException)]
    return {"wall_s": wall, "docs": len(parsed), "failed": len(results) - len(parsed),
            "parse_s": [r[2] for r in parsed], "hits": sum(bool(r[1]) for r in parsed)}


async def round_trips(executor: Any, files: List[Path], output_dir: Path, cache: Any, spec: Any) -> List[float]:
    """Milliseconds per parse task, one at a time (each a cache hit after ``parse_all``)."""
    from ragopt.cache.content_cache import file_sha256

    times = []
    for f in files:
        digest = file_sha256(f)
        started = time.perf_counter()
        _, hit, _, _ = await executor.parse(str(f), digest, str(output_dir), cache, spec)
        times.append((time.perf_counter() - started) * 1000)
        if not hit:
            raise RuntimeError(f"{f}: expected a cache hit for the overhead figure")
    return times


def ingest_once(config: RagoptConfig, files: List[Path], working_dir: Path, executor: Any) -> Dict[str, Any]:
    from ragopt.cache.content_cache import ContentCache
    from ragopt.engine.build import build_rag
    from ragopt.engine.orchestrator import ingest
    from ragopt.engine.release import release_rag
    from ragopt.measure.integrity import inspect_knowledge_base

    shutil.rmtree(working_dir, ignore_errors=True)
    rag = build_rag(config, working_dir, optimized=True)
    try:
        result = ingest(rag, files, config=config, cache=ContentCache(None), executor=executor, progress=False)
    finally:
        release_rag(rag)
    check = inspect_knowledge_base(config, working_dir, files)
    return {"wall_s": result.wall_s, "counts": result.counts(), "graph": check.pop("graph"), "check": check}


def projection(parse_s: List[float], overhead_ms: float, workers: List[int]) -> Dict[int, float]:
    """PROJECTED docs/s for N workers on N machines: N / (mean parse seconds + p50 task overhead)."""
    per_doc = statistics.mean(parse_s) + overhead_ms / 1000
    return {n: n / per_doc for n in workers}


def measure(files: List[Path], config: RagoptConfig, scratch: Path, workers: List[int], project: List[int],
            skip_ingest: bool) -> Dict[str, Any]:
    from ragopt.aio import run_sync
    from ragopt.cache.content_cache import ContentCache
    from ragopt.distributed.executor import CeleryParseExecutor
    from ragopt.distributed.local import LocalCluster
    from ragopt.engine.parse_pool import OFFLINE, LocalParseExecutor, release_parse_pools
    from ragopt.measure.graphs import compare_graphs

    from ragopt.engine.parse_pool import pool_size

    # Warm-up files outside the corpus, one for each process that will parse (its imports are set-up, not parse time).
    warm = synthetic_corpus(scratch / "warm-up", max(pool_size(OFFLINE), *workers), seed=99, paragraphs_per_doc=1)
    out = scratch / "parsed"
    figures: Dict[str, Any] = {"docs": len(files), "corpus_bytes": sum(f.stat().st_size for f in files)}

    local = LocalParseExecutor()
    run_sync(parse_all(local, warm, out, ContentCache(None), OFFLINE))
    measured = run_sync(parse_all(local, files, out, ContentCache(None), OFFLINE))
    release_parse_pools()
    figures["parse_docs_per_s_local"] = measured["docs"] / measured["wall_s"]
    figures["local_failed"] = measured["failed"]

    with LocalCluster(folder=scratch / "cluster", RAGOPT_SIM_PRESET=config.sim_preset) as cluster:
        executor = CeleryParseExecutor(cluster.app)
        cache = executor.results
        per_doc: List[float] = []
        for count in range(1, max(workers) + 1):
            cluster.worker("parse")
            if count not in workers:
                continue
            cache.clear()
            run_sync(parse_all(executor, warm, out, cache, OFFLINE))
            cache.clear()
            measured = run_sync(parse_all(executor, files, out, cache, OFFLINE))
            figures[f"parse_docs_per_s_celery_{count}"] = measured["docs"] / measured["wall_s"]
            figures[f"celery_{count}_failed"] = measured["failed"]
            per_doc = per_doc or measured["parse_s"]  # the fewest workers: the least shared CPU
        overhead = run_sync(round_trips(executor, files, out, cache, OFFLINE))
        figures["task_overhead_ms_p50"] = statistics.median(overhead)
        figures["task_overhead_ms_p95"] = statistics.quantiles(overhead, n=20)[-1] if len(overhead) > 1 else overhead[0]
        figures["projected_parse_docs_per_s"] = projection(per_doc, figures["task_overhead_ms_p50"], project)
        if not skip_ingest:
            working = scratch / "kb"  # the same path for both: image paths are part of the chunk text
            try:
                by_local = ingest_once(config, files, working, LocalParseExecutor())
                cache.clear()
                by_celery = ingest_once(config, files, working, executor)
            except Exception as error:  # a run that fails is a figure too: no graph to compare, and exit 1
                figures["ingest_error"] = f"{type(error).__name__}: {error}"
                return figures
            comparison = compare_graphs(by_local["graph"], by_celery["graph"])
            figures.update(
                ingest_wall_s_local=by_local["wall_s"], ingest_wall_s_celery=by_celery["wall_s"],
                ingest_counts_local=by_local["counts"], ingest_counts_celery=by_celery["counts"],
                same_graph=comparison["same"], entities=comparison["entities_a"], relations=comparison["relations_a"],
                lost_docs=by_celery["check"]["lost_docs"], duplicate_docs=by_celery["check"]["duplicate_docs"],
            )
    return figures


def print_table(figures: Dict[str, Any], workers: List[int], simulated: bool) -> None:
    print(f"Parse stage, {figures['docs']} documents ({figures['corpus_bytes'] / 1e6:.1f} MB), every parse a cache miss:")
    print(f"  local pool ({os.cpu_count()} cores)   {figures['parse_docs_per_s_local']:8.2f} docs/s")
    for n in workers:
        print(f"  Celery, {n} parse worker(s)   {figures[f'parse_docs_per_s_celery_{n}']:8.2f} docs/s")
    print(f"Parse task round trip on a cache hit: p50 {figures['task_overhead_ms_p50']:.1f} ms, "
          f"p95 {figures['task_overhead_ms_p95']:.1f} ms")
    print("PROJECTION (not measured): N workers on N machines, from the measured parse times and p50 overhead:")
    for n, rate in figures["projected_parse_docs_per_s"].items():
        print(f"  {n:3d} workers   {rate:8.2f} docs/s (projected)")
    if "ingest_error" in figures:
        print(f"Ingest end to end failed: {figures['ingest_error']}")
    if "same_graph" in figures:
        label = " on the SIMULATED LLM service" if simulated else ""
        print(f"Ingest end to end{label}: local pool {figures['ingest_wall_s_local']:.1f} s, "
              f"Celery parse {figures['ingest_wall_s_celery']:.1f} s; same graph: {figures['same_graph']} "
              f"({figures['entities']} entities, {figures['relations']} relations); "
              f"lost {figures['lost_docs']}, duplicated {figures['duplicate_docs']}")
    print("Every worker here shares this machine's cores: the measured Celery figures are not a multi-machine speed-up.")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="ragopt bench --distributed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(SAMPLE_CORPUS), help="folder of documents (default: the committed sample)")
    parser.add_argument("--synthetic", type=int, default=0, help="N generated documents instead")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Celery parse worker counts to measure")
    parser.add_argument("--project", type=int, nargs="+", default=[4, 8, 16], help="worker counts to project")
    parser.add_argument("--preset", default="fast", help="simulator preset for the ingest runs (default fast)")
    parser.add_argument("--skip-ingest", action="store_true", help="only the parse-stage figures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch", default=None, help="folder for the cluster, caches and working dirs (default: a temp dir)")
    args = parser.parse_args(argv)

    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="ragopt-bench-distributed-"))
    if args.synthetic:
        files = synthetic_corpus(scratch / "corpus", args.synthetic, seed=args.seed)
        corpus = f"synthetic {args.synthetic} (seed {args.seed})"
    else:
        files, corpus = corpus_files(args.corpus), str(args.corpus)
    config = RagoptConfig.from_env(sim_preset=args.preset, enable_parse_cache=False)
    figures = measure(files, config, scratch, sorted(set(args.workers)), args.project, args.skip_ingest)
    print_table(figures, sorted(set(args.workers)), config.uses_simulator)
    line = {"benchmark": "distributed", "corpus": corpus, "simulated_llm": config.uses_simulator,
            "preset": args.preset, "cores": len(os.sched_getaffinity(0)), **figures}
    line["projection_note"] = "projected_parse_docs_per_s is a projection, not a measurement"
    print(json.dumps(line, default=str))
    failed = figures["local_failed"] or any(figures.get(f"celery_{n}_failed") for n in args.workers)
    return 1 if failed or "ingest_error" in figures or figures.get("lost_docs") or figures.get("duplicate_docs") else 0
