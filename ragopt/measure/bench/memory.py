"""Memory benchmark: a long ingestion soak and repeated build/ingest/release cycles.

    .venv/bin/python benchmarks/bench_memory.py [--docs 1000] [--batch 50] [--cycles 20] [--one-store-docs 300]

The LLM is SIMULATED (ragopt's in-process LLM service, preset "fast": K=8
slots, 10 ms to first token); embeddings are the real MiniLM model on CPU (or
the GPU if there is one) through ``ragopt.backends.embedding``, parsing is
ragopt's offline parser. Each part runs in a fresh Python process, so one
part's memory never colours another's.

RSS is that of the whole process tree: this process plus the workers ragopt
keeps for it (the parse pool and, where the embedder has one, the embedding
worker that holds the model). Each is also shown apart.

(a) Soak: ``--docs`` small synthetic documents (a title and one paragraph)
    go through ``ragopt.batch.ingest``, ``--batch`` documents per call, each
    call into a fresh RAGAnything released after it: a long-running ingestion
    service that hands each batch's knowledge base on. After every call,
    ``gc.collect()`` and the memory figures are sampled (``ragopt.memory.soak``)
    and slopes after warm-up are fitted, in MB per 100 documents; the target
    for RSS is <= 1. Beside RSS, to tell a leak from allocator behaviour:
    * the live heap of this process and of the embedding worker: glibc
      malloc's bytes in use (``mallinfo2``) plus the bytes in Python's
      small-object allocator's used blocks (``sys._debugmallocstats``), read
      without disturbing anything;
    * malloc's free lists, per process: memory that torch, numpy or the JSON
      code freed stays in malloc's arenas, and so in RSS, until
      ``malloc_trim``. Growth there is allocator retention, not live data.
      ``mallinfo2`` keeps counting pages already trimmed (the parse and
      embedding workers trim after each call), so this is an upper bound on
      what RSS holds; RSS after one ``malloc_trim(0)`` at the end shows the
      real difference.
(a2) The same soak into ONE RAGAnything (``--one-store-docs``), shown with no
    target: LightRAG's default storages (JSON KV, NanoVectorDB, NetworkX)
    hold all their data in memory, so RSS grows with the knowledge base; the
    slope of its storage files on disk is printed beside it.
(b) Cycles: ``--cycles`` times build a RAGAnything on a fresh working dir,
    ingest a tiny corpus, then release it, all in one process. RSS after the
    last cycle vs after the first (target: within 5%), with
    ``ragopt.memory.release_rag``, and with RAG-Anything's own behaviour
    (``del rag; gc.collect()``: its atexit hook and LightRAG's process-global
    shared storage keep every instance's data alive). This process's live
    heap is shown beside RSS: what is still held, without allocator noise.

Prints a table per part, then, as the last line, one JSON object.
"""

from __future__ import annotations

from typing import List, Optional
import argparse
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pandas as pd

MB = 1024 * 1024
SIM_PRESET = "fast"
TINY_CORPUS_DOCS = 3
SOAK_TARGET_MB_PER_100 = 1.0
SOAK_PARAGRAPHS = 1  # "small documents": a title and one paragraph each
CYCLES_TARGET_PCT = 5.0


def _quiet() -> None:
    import lightrag.utils  # noqa: F401  (sets its logger to INFO on import: import first, then quieten)

    for name in ("lightrag", "raganything", "nano-vectordb", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _config():
    from ragopt.config import RagoptConfig

    return RagoptConfig(sim_preset=SIM_PRESET)


# --------------------------------------------------------------------------- memory of one process


def _pymalloc_mb() -> float:
    """Bytes in Python's small-object allocator's blocks now in use (``sys._debugmallocstats``)."""
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        saved = os.dup(2)  # the stats go to the C-level stderr
        try:
            os.dup2(captured.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("# bytes in allocated blocks"):
            return int(line.split("=")[1].replace(",", "")) / MB
    return float("nan")


def process_memory(trim: bool = False) -> dict:
    """This process: RSS, live heap, and the bytes on malloc's free lists (all arenas), in MB.

    The live heap is malloc's bytes in use plus pymalloc's used blocks (small
    Python objects live in pymalloc's own mmap'd arenas, outside malloc).
    With ``trim``, ``malloc_trim(0)`` first hands malloc's free memory back
    to the OS. Picklable, so it also runs in the embedding worker.
    """
    import psutil

    from ragopt.resources.heap import malloc_stats, trim_free_heap

    if trim:
        trim_free_heap()
    heap = malloc_stats()
    return {
        "rss_mb": psutil.Process().memory_info().rss / MB,
        "live_mb": heap["in_use_mb"] + _pymalloc_mb(),  # NaN off glibc
        "free_mb": heap["free_mb"],
    }


def _embedding_worker():
    """The embedder's worker process, if it has one (an executor), else None."""
    from ragopt.backends import embedding

    factory = getattr(embedding, "embedding_worker", None)
    return factory(_config().embedding_device) if factory is not None else None


def memory_snapshot(trim: bool = False) -> dict:
    """The process tree's RSS, and this process, the embedding worker and the parse pool apart.

    Keys: rss_mb (tree), main_rss_mb, main_live_mb, main_free_mb, embed_rss_mb,
    embed_live_mb, embed_free_mb (NaN when the embedder runs in this process),
    parse_rss_mb (the rest of the tree: the parse pool).
    """
    from ragopt.resources.rss import process_tree_rss_mb

    main = process_memory(trim)
    worker = _embedding_worker()
    embed = worker.submit(process_memory, trim).result() if worker is not None else dict.fromkeys(main, float("nan"))
    tree = process_tree_rss_mb(include_children=True)
    snapshot = {"rss_mb": tree}
    snapshot.update({f"main_{key}": value for key, value in main.items()})
    snapshot.update({f"embed_{key}": value for key, value in embed.items()})
    snapshot["parse_rss_mb"] = tree - main["rss_mb"] - np.nan_to_num(embed["rss_mb"])
    return snapshot


def _warm_up_model() -> None:
    """Load the embedding model before measuring, wherever the embedder keeps it."""
    from ragopt.backends import embedding

    if hasattr(embedding, "preload"):
        embedding.preload(_config().embedding_device)
    else:
        embedding.encode(["warm up"], _config().embedding_device, _config().batch_size)


# --------------------------------------------------------------------------- helpers


def _storage_mb(working_dir: Path) -> float:
    """LightRAG's storage files (KV JSON, vector DB JSON, graphml, in the workspace's folder).

    The parser's output folder is left out: it is on disk only.
    """
    parsed = working_dir / "parsed"
    files = (p for p in working_dir.rglob("*") if p.is_file() and parsed not in p.parents)
    return sum(p.stat().st_size for p in files) / MB


def _errors(result) -> list:
    failed = result.files[result.files["status"] != "ok"]
    return [f"{row.file}: {row.stage} {row.error_type}: {str(row.error).strip()[:200]}" for row in failed.itertuples()]


def _build(working_dir: Path):
    from ragopt.engine.build import build_rag

    # A workspace of its own per instance: without release, LightRAG's shared
    # storage would otherwise hand one cycle's documents to the next.
    return build_rag(
        _config(), working_dir, optimized=True, lightrag_kwargs={"workspace": f"bench-{uuid.uuid4().hex[:8]}"}
    )


def _slope_per_100(frame: pd.DataFrame, column: str) -> float:
    if frame[column].isna().any():
        return float("nan")
    return float(np.polyfit(frame["docs"], frame[column], 1)[0]) * 100


# --------------------------------------------------------------------------- (a) soak

SOAK_SLOPES = ["rss_mb", "main_rss_mb", "embed_rss_mb", "parse_rss_mb", "storage_mb",
               "main_live_mb", "main_free_mb", "embed_live_mb", "embed_free_mb"]


def run_soak(docs: int, batch: int, warmup_batches: int, one_store: bool) -> dict:
    """``docs`` documents through ``ingest``, ``batch`` per call; memory sampled after each call.

    ``one_store``: every call into the same RAGAnything (its data stays in
    memory). Otherwise each call gets a fresh RAGAnything that is released
    after it, as a long-running ingestion service would hand each batch's
    knowledge base on: RSS then shows what ragopt itself keeps.
    """
    from ragopt.engine.orchestrator import ingest
    from ragopt.engine.release import release_rag
    from ragopt.resources.leaks import soak
    from ragopt.measure.workloads import synthetic_corpus

    root = Path(tempfile.mkdtemp(prefix="bench-memory-soak-"))
    try:
        paths = synthetic_corpus(root / "corpus", docs, seed=1, paragraphs_per_doc=SOAK_PARAGRAPHS)
        batches = [paths[i : i + batch] for i in range(0, len(paths), batch)]
        state = {"rag": _build(root / "rag") if one_store else None, "storage_mb": 0.0}
        _warm_up_model()
        rows, errors = [], []
        started = time.perf_counter()

        def next_batch() -> None:
            index = len(rows)
            working_dir = root / ("rag" if one_store else f"rag-{index}")
            rag = state["rag"] or _build(working_dir)
            batch_started = time.perf_counter()
            result = ingest(rag, batches[index], progress=False)
            errors.extend(_errors(result))
            state["storage_mb"] = _storage_mb(working_dir)
            if not one_store:
                release_rag(rag)
                shutil.rmtree(working_dir, ignore_errors=True)
            rows.append({
                "docs": sum(len(b) for b in batches[: index + 1]),
                "failed": result.counts()["failed"],
                "batch_s": time.perf_counter() - batch_started,
            })

        def sample() -> float:  # soak() calls it after gc.collect()
            rows[-1].update(storage_mb=state["storage_mb"], **memory_snapshot())
            return rows[-1]["rss_mb"]

        result = soak(next_batch, len(batches), warmup=warmup_batches, rss_fn=sample)
        wall_s = time.perf_counter() - started
        frame = pd.DataFrame(rows).assign(warmup=result.frame["warmup"].to_numpy())
        fitted = frame[~frame["warmup"]]
        trimmed = memory_snapshot(trim=True)
        if one_store:
            release_rag(state["rag"])
        return {
            "one_store": one_store,
            "docs": docs,
            "batch": batch,
            "warmup_batches": warmup_batches,
            "failed_docs": int(frame["failed"].sum()),
            "errors": errors[:5],
            "wall_s": wall_s,
            "s_per_doc": wall_s / docs,
            "slopes_mb_per_100_docs": {column: _slope_per_100(fitted, column) for column in SOAK_SLOPES},
            "end": rows[-1],
            "end_after_malloc_trim": trimmed,
            "rows": frame.drop(columns=["failed"]).to_dict("records"),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- (b) cycles


def run_cycles(cycles: int, release: bool) -> dict:
    from ragopt.engine.orchestrator import ingest
    from ragopt.engine.release import release_rag
    from ragopt.measure.workloads import synthetic_corpus

    root = Path(tempfile.mkdtemp(prefix="bench-memory-cycles-"))
    try:
        paths = synthetic_corpus(root / "corpus", TINY_CORPUS_DOCS, seed=2)
        _warm_up_model()
        rows, errors = [], []
        started = time.perf_counter()
        for cycle in range(cycles):
            rag = _build(root / f"rag-{cycle}")
            result = ingest(rag, paths, parse_workers=1, progress=False)
            not_ok = result.counts()["failed"] + result.counts()["skipped"]
            errors.extend(_errors(result))
            del result
            if release:
                release_rag(rag)
            del rag
            gc.collect()
            rows.append({"cycle": cycle + 1, "not_ok": not_ok, **memory_snapshot()})
        first, last = rows[0], rows[-1]
        return {
            "cycles": cycles,
            "release": release,
            "not_ok_docs": sum(row["not_ok"] for row in rows),
            "errors": errors[:5],
            "wall_s": time.perf_counter() - started,
            "rows": rows,
            "growth_pct": 100.0 * (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"],
            "main_growth_pct": 100.0 * (last["main_rss_mb"] - first["main_rss_mb"]) / first["main_rss_mb"],
            "main_live_growth_mb": last["main_live_mb"] - first["main_live_mb"],
            "end_after_malloc_trim": memory_snapshot(trim=True),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- driver


def _warmup_batches(docs: int, args: argparse.Namespace) -> int:
    """Soak batches left out of the fit: --warmup-batches, else the first fifth (at least 2)."""
    return args.warmup_batches if args.warmup_batches is not None else max(2, -(-docs // args.batch) // 5)


def _in_fresh_process(part: str, args: argparse.Namespace) -> dict:
    docs = args.one_store_docs if part == "soak_one_store" else args.docs
    command = [sys.executable, "-m", "ragopt.measure.bench.memory", "--part", part, "--docs", str(docs), "--batch", str(args.batch),
               "--cycles", str(args.cycles), "--warmup-batches", str(_warmup_batches(docs, args))]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"part {part} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _simulator_description() -> str:
    from ragopt.backends import make_backends

    return make_backends(_config()).description


def _report_soak(out: dict) -> None:
    number = lambda v: f"{v:.1f}"  # noqa: E731
    if out["one_store"]:
        title = (f"\n(a2) the same kind of soak into ONE RAGAnything: {out['docs']} documents in batches of "
                 f"{out['batch']}. Shown for what a growing knowledge base costs, no target: LightRAG's default "
                 "storages hold all their data in memory, so RSS grows with it (compare the storage slope)")
    else:
        title = (f"\n(a) soak: {out['docs']} small documents in batches of {out['batch']}, each batch into a fresh "
                 "RAGAnything released after it (storage: that batch's files)")
    print(f"{title} ({out['wall_s']:.0f} s, {out['s_per_doc']:.2f} s/doc, failed {out['failed_docs']}); "
          f"the first {out['warmup_batches']} batches are warm-up, left out of the slopes. MB:")
    columns = ["docs", "batch_s", "rss_mb", "main_rss_mb", "embed_rss_mb", "parse_rss_mb", "storage_mb",
               "main_live_mb", "main_free_mb", "embed_live_mb", "embed_free_mb", "warmup"]
    frame = pd.DataFrame(out["rows"])[columns]
    frame.columns = [c.replace("_mb", "") for c in columns]
    print(frame.to_string(index=False, float_format=number))
    for error in out["errors"]:
        print(f"  failed: {error}")
    slopes = out["slopes_mb_per_100_docs"]
    notes = [
        ("rss_mb", "RSS, whole process tree", "no target" if out["one_store"] else f"target <= {SOAK_TARGET_MB_PER_100:g}"),
        ("main_rss_mb", "  RSS, this process", "LightRAG and its in-memory storages, the event loop"),
        ("embed_rss_mb", "  RSS, embedding worker", "the model and its forward passes"),
        ("parse_rss_mb", "  RSS, parse pool", ""),
        ("storage_mb", "LightRAG storage on disk", "the data itself; its storages hold all of it in memory"
         if out["one_store"] else "one batch's store, released"),
        ("main_live_mb", "live heap, this process", "malloc in use + Python objects"),
        ("main_free_mb", "malloc free lists, this process", "malloc's retention, not live data"),
        ("embed_live_mb", "live heap, embedding worker", ""),
        ("embed_free_mb", "malloc free lists, embedding worker", "trimmed after each call: not in RSS"),
    ]
    print("slopes after warm-up, MB per 100 documents:")
    for key, name, note in notes:
        print(f"  {name:<34}{slopes[key]:8.2f}   {note}")
    end, trimmed = out["end"], out["end_after_malloc_trim"]
    print(f"RSS at the end -> after malloc_trim(0): this process {end['main_rss_mb']:.0f} -> {trimmed['main_rss_mb']:.0f} MB, "
          f"embedding worker {end['embed_rss_mb']:.0f} -> {trimmed['embed_rss_mb']:.0f} MB")


def _report_cycles(cycles: int, release: dict, plain: dict) -> None:
    print(f"\n(b) {cycles} cycles of build / ingest {TINY_CORPUS_DOCS} docs / release, one process, fresh working dir each. MB:")
    table = pd.DataFrame({"cycle": [row["cycle"] for row in release["rows"]]})
    for label, out in (("release_rag", release), ("del+gc", plain)):
        table[f"rss {label}"] = [row["rss_mb"] for row in out["rows"]]
        table[f"this process {label}"] = [row["main_rss_mb"] for row in out["rows"]]
        table[f"live heap {label}"] = [row["main_live_mb"] for row in out["rows"]]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    for error in release["errors"] + plain["errors"]:
        print(f"  not ok: {error}")
    print(f"RSS growth, first -> last cycle, process tree: release_rag {release['growth_pct']:+.1f}% "
          f"(target within {CYCLES_TARGET_PCT:g}%); RAG-Anything's own del rag + gc.collect() {plain['growth_pct']:+.1f}%")
    print(f"  this process: release_rag {release['main_growth_pct']:+.1f}%, del+gc {plain['main_growth_pct']:+.1f}%; "
          f"its live heap: release_rag {release['main_live_growth_mb']:+.1f} MB, del+gc {plain['main_live_growth_mb']:+.1f} MB")
    print(f"  this process's RSS at the end after malloc_trim(0): release_rag {release['end_after_malloc_trim']['main_rss_mb']:.0f} MB, "
          f"del+gc {plain['end_after_malloc_trim']['main_rss_mb']:.0f} MB")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000, help="documents in the soak (default 1000)")
    parser.add_argument("--batch", type=int, default=50, help="documents per ingest call in the soak (default 50)")
    parser.add_argument("--cycles", type=int, default=20, help="build/ingest/release cycles (default 20)")
    parser.add_argument("--warmup-batches", type=int, default=None,
                        help="soak batches left out of the fit (default: the first fifth, at least 2)")
    parser.add_argument("--one-store-docs", type=int, default=300,
                        help="documents in the one-RAGAnything soak shown beside it (default 300; 0: skip)")
    parser.add_argument("--part", choices=["soak", "soak_one_store", "release", "raganything"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for docs in (args.docs, args.one_store_docs or args.docs):
        warmup = _warmup_batches(docs, args)
        if -(-docs // args.batch) - warmup < 2:
            parser.error(f"{docs} documents: need at least 2 batches after {warmup} warm-up batches: "
                         "raise the documents or lower --batch")
    if args.cycles < 2:
        parser.error("need at least 2 cycles")

    if args.part:  # a child process: one part, its result as one JSON line
        _quiet()
        if args.part.startswith("soak"):
            out = run_soak(args.docs, args.batch, args.warmup_batches, one_store=args.part == "soak_one_store")
        else:
            out = run_cycles(args.cycles, release=args.part == "release")
        print(json.dumps(out))
        return 0

    llm = _simulator_description()
    print(f"LLM: {llm} -- every figure below is measured with a SIMULATED LLM.", flush=True)
    started = time.perf_counter()
    soak_out = _in_fresh_process("soak", args)
    one_store_out = _in_fresh_process("soak_one_store", args) if args.one_store_docs else None
    release_out = _in_fresh_process("release", args)
    plain_out = _in_fresh_process("raganything", args)
    _report_soak(soak_out)
    if one_store_out is not None:
        _report_soak(one_store_out)
    _report_cycles(args.cycles, release_out, plain_out)

    slopes = soak_out["slopes_mb_per_100_docs"]
    rounded = lambda value, digits=1: None if value != value else round(value, digits)  # noqa: E731  (NaN -> null)
    summary = {
        "llm": llm,
        "simulated_llm": True,
        "soak_docs": soak_out["docs"],
        "soak_batch": soak_out["batch"],
        "soak_warmup_batches": soak_out["warmup_batches"],
        "soak_failed_docs": soak_out["failed_docs"],
        "soak_s_per_doc": round(soak_out["s_per_doc"], 3),
        "soak_rss_slope_mb_per_100_docs": rounded(slopes["rss_mb"], 3),
        "soak_storage_slope_mb_per_100_docs": rounded(slopes["storage_mb"], 3),
        **{f"soak_{key.removesuffix('_mb')}_slope_mb_per_100_docs": rounded(value, 3)
           for key, value in slopes.items() if key not in ("rss_mb", "storage_mb")},
        "soak_rss_first_last_mb": [rounded(soak_out["rows"][0]["rss_mb"]), rounded(soak_out["rows"][-1]["rss_mb"])],
        "soak_main_rss_end_after_malloc_trim_mb": rounded(soak_out["end_after_malloc_trim"]["main_rss_mb"]),
        "soak_embed_rss_end_after_malloc_trim_mb": rounded(soak_out["end_after_malloc_trim"]["embed_rss_mb"]),
        "soak_target_mb_per_100_docs": SOAK_TARGET_MB_PER_100,
        "one_store_soak_docs": one_store_out["docs"] if one_store_out else None,
        "one_store_soak_rss_slope_mb_per_100_docs":
            rounded(one_store_out["slopes_mb_per_100_docs"]["rss_mb"], 3) if one_store_out else None,
        "one_store_soak_main_rss_slope_mb_per_100_docs":
            rounded(one_store_out["slopes_mb_per_100_docs"]["main_rss_mb"], 3) if one_store_out else None,
        "one_store_soak_storage_slope_mb_per_100_docs":
            rounded(one_store_out["slopes_mb_per_100_docs"]["storage_mb"], 3) if one_store_out else None,
        "cycles": args.cycles,
        "release_cycles_rss_growth_pct": round(release_out["growth_pct"], 2),
        "raganything_cycles_rss_growth_pct": round(plain_out["growth_pct"], 2),
        "release_cycles_rss_first_last_mb": [rounded(release_out["rows"][0]["rss_mb"]), rounded(release_out["rows"][-1]["rss_mb"])],
        "raganything_cycles_rss_first_last_mb": [rounded(plain_out["rows"][0]["rss_mb"]), rounded(plain_out["rows"][-1]["rss_mb"])],
        "release_cycles_main_rss_growth_pct": round(release_out["main_growth_pct"], 2),
        "raganything_cycles_main_rss_growth_pct": round(plain_out["main_growth_pct"], 2),
        "release_cycles_main_live_heap_growth_mb": rounded(release_out["main_live_growth_mb"]),
        "raganything_cycles_main_live_heap_growth_mb": rounded(plain_out["main_live_growth_mb"]),
        "cycles_not_ok_docs": release_out["not_ok_docs"] + plain_out["not_ok_docs"],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":  # the parts run as python -m ragopt.measure.bench.memory --part ...
    sys.exit(main())
