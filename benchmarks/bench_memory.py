"""Memory benchmark: a long ingestion soak and repeated build/ingest/release cycles.

    .venv/bin/python benchmarks/bench_memory.py [--docs 1000] [--batch 50] [--cycles 20]

The LLM is SIMULATED (ragopt's in-process LLM service, preset "fast": K=8
slots, 10 ms to first token); embeddings are the real MiniLM model on CPU (or
the GPU if there is one), parsing is ragopt's offline parser. Each part runs
in a fresh Python process, so one part's memory never colours another's.

(a) Soak: ``--docs`` small synthetic documents go through ``ragopt.batch.ingest``
    into ONE RAGAnything, ``--batch`` documents per call. After every call,
    ``gc.collect()`` and this process's RSS are sampled (``ragopt.memory.soak``)
    and the RSS slope after warm-up is fitted, in MB per 100 documents (target
    <= 1). Beside it, to tell a leak from growth that is not one:
    * the slope of LightRAG's storage files on disk: its default storages
      (JSON KV, NanoVectorDB, NetworkX graph) hold all their data in memory,
      so RSS grows with the data itself;
    * the live heap: glibc malloc's bytes in use (``mallinfo2``) plus the
      bytes in Python's small-object allocator's used blocks
      (``sys._debugmallocstats``), both read without disturbing anything;
    * malloc's bytes freed but held: memory that torch, numpy or the JSON
      code freed stays in malloc's arenas, and so in RSS, until
      ``malloc_trim``. RSS growth there is allocator retention, not live
      data; RSS after one ``malloc_trim(0)`` at the end shows the difference.
(b) Cycles: ``--cycles`` times build a RAGAnything on a fresh working dir,
    ingest a tiny corpus, then release it, all in one process. RSS after the
    last cycle vs after the first (target: within 5%), with
    ``ragopt.memory.release_rag``, and with RAG-Anything's own behaviour
    (``del rag; gc.collect()``: its atexit hook and LightRAG's process-global
    shared storage keep every instance's data alive). The live heap per cycle
    is printed beside RSS: it shows what is still held without the allocator's
    noise.

Prints a table per part, then, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import ctypes
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
CYCLES_TARGET_PCT = 5.0


def _quiet() -> None:
    import lightrag.utils  # noqa: F401  (sets its logger to INFO on import: import first, then quieten)

    for name in ("lightrag", "raganything", "nano-vectordb", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _rss_mb() -> float:
    from ragopt.memory import process_tree_rss_mb

    # This process only: each ingest call's parse pool is shut down without waiting.
    return process_tree_rss_mb(include_children=False)


def _storage_mb(working_dir: Path) -> float:
    """LightRAG's storage files (KV JSON, vector DB JSON, graphml; in the workspace's folder): the data it holds in memory.

    The parser's output folder is left out: it is on disk only.
    """
    parsed = working_dir / "parsed"
    files = (p for p in working_dir.rglob("*") if p.is_file() and parsed not in p.parents)
    return sum(p.stat().st_size for p in files) / (1024 * 1024)


def _errors(result) -> list:
    failed = result.files[result.files["status"] != "ok"]
    return [f"{row.file}: {row.stage} {row.error_type}: {str(row.error).strip()[:200]}" for row in failed.itertuples()]


def _config():
    from ragopt.config import RagoptConfig

    return RagoptConfig(sim_preset=SIM_PRESET)


def _build(working_dir: Path):
    from ragopt.pipeline import build_rag

    # A workspace of its own per instance: without release, LightRAG's shared
    # storage would otherwise hand one cycle's documents to the next.
    return build_rag(
        _config(), working_dir, optimized=True, lightrag_kwargs={"workspace": f"bench-{uuid.uuid4().hex[:8]}"}
    )


def _warm_up_model() -> None:
    from ragopt.backends.embedding import encode

    encode(["warm up"], _config().embedding_device, _config().batch_size)


# --------------------------------------------------------------------------- glibc malloc


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return None


def _malloc_mb() -> dict:
    """glibc malloc's view of this process (all arenas): bytes in use, and bytes freed but still held.

    Memory that C/C++ code (torch, numpy, the JSON parser) freed stays in
    malloc's arenas and so in RSS; growth of ``malloc_free_mb`` is that
    retention, not live data. Small Python objects (<= 512 bytes) live in
    pymalloc's own mmap'd arenas and count in neither figure.
    """
    libc = _libc()
    if libc is None:
        return {"malloc_in_use_mb": float("nan"), "malloc_free_mb": float("nan")}
    info = libc.mallinfo2()
    return {"malloc_in_use_mb": (info.uordblks + info.hblkhd) / MB, "malloc_free_mb": info.fordblks / MB}


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


def _heap_mb() -> dict:
    """Live heap (malloc in use + pymalloc blocks in use) and malloc's freed-but-held bytes."""
    heap = _malloc_mb()
    heap["live_heap_mb"] = heap.pop("malloc_in_use_mb") + _pymalloc_mb()
    return heap


def _rss_after_malloc_trim() -> float:
    """Hand malloc's free memory back to the OS (``malloc_trim(0)``), then read RSS: the memory still in use."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
    return _rss_mb()


def _slope_per_100(frame, column: str) -> float:
    return float(np.polyfit(frame["docs"], frame[column], 1)[0]) * 100


# --------------------------------------------------------------------------- (a) soak


def run_soak(docs: int, batch: int, warmup_batches: int) -> dict:
    from ragopt.batch import ingest
    from ragopt.memory import release_rag, soak
    from ragopt.workloads import synthetic_corpus

    root = Path(tempfile.mkdtemp(prefix="bench-memory-soak-"))
    try:
        paths = synthetic_corpus(root / "corpus", docs, seed=1)
        batches = [paths[i : i + batch] for i in range(0, len(paths), batch)]
        working_dir = root / "rag"
        rag = _build(working_dir)
        _warm_up_model()
        extra, errors = [], []
        started = time.perf_counter()

        def next_batch() -> None:
            index = len(extra)
            batch_started = time.perf_counter()
            result = ingest(rag, batches[index], progress=False)
            errors.extend(_errors(result))
            extra.append({
                "docs": sum(len(b) for b in batches[: index + 1]),
                "failed": result.counts()["failed"],
                "batch_s": time.perf_counter() - batch_started,
            })

        def sample() -> float:  # soak() calls it after gc.collect()
            extra[-1].update(storage_mb=_storage_mb(working_dir), **_heap_mb())
            return _rss_mb()

        result = soak(next_batch, len(batches), warmup=warmup_batches, rss_fn=sample)
        wall_s = time.perf_counter() - started
        frame = pd.concat([result.frame, pd.DataFrame(extra)], axis=1)
        fitted = frame[~frame["warmup"]]
        rss_end = _rss_mb()
        rss_end_trimmed = _rss_after_malloc_trim()
        release_rag(rag)
        return {
            "docs": docs,
            "batch": batch,
            "warmup_batches": warmup_batches,
            "failed_docs": int(frame["failed"].sum()),
            "errors": errors[:5],
            "wall_s": wall_s,
            "s_per_doc": wall_s / docs,
            "rss_slope_mb_per_100_docs": _slope_per_100(fitted, "rss_mb"),
            "storage_slope_mb_per_100_docs": _slope_per_100(fitted, "storage_mb"),
            "live_heap_slope_mb_per_100_docs": _slope_per_100(fitted, "live_heap_mb"),
            "malloc_free_slope_mb_per_100_docs": _slope_per_100(fitted, "malloc_free_mb"),
            "rss_end_mb": rss_end,
            "rss_end_after_malloc_trim_mb": rss_end_trimmed,
            "rows": frame[["docs", "batch_s", "rss_mb", "live_heap_mb", "malloc_free_mb", "storage_mb", "warmup"]].to_dict("records"),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- (b) cycles


def run_cycles(cycles: int, release: bool) -> dict:
    from ragopt.batch import ingest
    from ragopt.memory import release_rag
    from ragopt.workloads import synthetic_corpus

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
            rows.append({"cycle": cycle + 1, "rss_mb": _rss_mb(), "not_ok": not_ok, **_heap_mb()})
        rss = [row["rss_mb"] for row in rows]
        return {
            "cycles": cycles,
            "release": release,
            "not_ok_docs": sum(row["not_ok"] for row in rows),
            "errors": errors[:5],
            "wall_s": time.perf_counter() - started,
            "rows": rows,
            "growth_pct": 100.0 * (rss[-1] - rss[0]) / rss[0],
            "live_heap_growth_mb": rows[-1]["live_heap_mb"] - rows[0]["live_heap_mb"],
            "rss_end_after_malloc_trim_mb": _rss_after_malloc_trim(),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- driver


def _in_fresh_process(part: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--part", part, "--docs", str(args.docs), "--batch", str(args.batch),
               "--cycles", str(args.cycles), "--warmup-batches", str(args.warmup_batches)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"part {part} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _simulator_description() -> str:
    from ragopt.pipeline import make_backends

    return make_backends(_config()).description


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000, help="documents in the soak (default 1000)")
    parser.add_argument("--batch", type=int, default=50, help="documents per ingest call in the soak (default 50)")
    parser.add_argument("--cycles", type=int, default=20, help="build/ingest/release cycles (default 20)")
    parser.add_argument("--warmup-batches", type=int, default=None,
                        help="soak batches left out of the fit (default: the first fifth, at least 2)")
    parser.add_argument("--part", choices=["soak", "release", "raganything"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = -(-args.docs // args.batch)
    if args.warmup_batches is None:
        args.warmup_batches = max(2, batches // 5)
    if batches - args.warmup_batches < 2:
        parser.error(f"need at least 2 batches after {args.warmup_batches} warm-up batches: raise --docs or lower --batch")

    if args.part:  # a child process: one part, its result as one JSON line
        _quiet()
        if args.part == "soak":
            out = run_soak(args.docs, args.batch, args.warmup_batches)
        else:
            out = run_cycles(args.cycles, release=args.part == "release")
        print(json.dumps(out))
        return

    llm = _simulator_description()
    print(f"LLM: {llm} -- every figure below is measured with a SIMULATED LLM.", flush=True)
    started = time.perf_counter()
    soak_out = _in_fresh_process("soak", args)
    release_out = _in_fresh_process("release", args)
    plain_out = _in_fresh_process("raganything", args)
    number = lambda v: f"{v:.1f}"  # noqa: E731

    print(f"\n(a) soak: {soak_out['docs']} documents in batches of {soak_out['batch']} into one RAGAnything "
          f"({soak_out['wall_s']:.0f} s, {soak_out['s_per_doc']:.2f} s/doc, failed {soak_out['failed_docs']}); "
          f"the first {soak_out['warmup_batches']} batches are warm-up, left out of the slopes")
    print(pd.DataFrame(soak_out["rows"]).to_string(index=False, float_format=number))
    for error in soak_out["errors"]:
        print(f"  failed: {error}")
    slopes = [
        ("RSS", soak_out["rss_slope_mb_per_100_docs"], f"target <= {SOAK_TARGET_MB_PER_100:g}"),
        ("LightRAG storage on disk", soak_out["storage_slope_mb_per_100_docs"], "the data itself; its storages hold it all in memory"),
        ("live heap", soak_out["live_heap_slope_mb_per_100_docs"], "malloc in use + Python objects: what is really held"),
        ("malloc freed but held", soak_out["malloc_free_slope_mb_per_100_docs"], "allocator retention, not live data"),
    ]
    print("slopes after warm-up, MB per 100 documents:")
    for name, value, note in slopes:
        print(f"  {name:<26}{value:8.2f}   {note}")
    print(f"RSS at the end {soak_out['rss_end_mb']:.0f} MB; after malloc_trim(0) {soak_out['rss_end_after_malloc_trim_mb']:.0f} MB")

    print(f"\n(b) {args.cycles} cycles of build / ingest {TINY_CORPUS_DOCS} docs / release, one process, fresh working dir each")
    cycles = pd.DataFrame({
        "cycle": [row["cycle"] for row in release_out["rows"]],
        "rss_mb release_rag": [row["rss_mb"] for row in release_out["rows"]],
        "live_heap_mb release_rag": [row["live_heap_mb"] for row in release_out["rows"]],
        "rss_mb del+gc": [row["rss_mb"] for row in plain_out["rows"]],
        "live_heap_mb del+gc": [row["live_heap_mb"] for row in plain_out["rows"]],
    })
    print(cycles.to_string(index=False, float_format=number))
    for error in release_out["errors"] + plain_out["errors"]:
        print(f"  not ok: {error}")
    print(f"RSS growth first -> last cycle: release_rag {release_out['growth_pct']:+.1f}% "
          f"(target within {CYCLES_TARGET_PCT:g}%); RAG-Anything's own del rag + gc.collect() {plain_out['growth_pct']:+.1f}%")
    print(f"live heap growth first -> last cycle: release_rag {release_out['live_heap_growth_mb']:+.1f} MB, "
          f"del+gc {plain_out['live_heap_growth_mb']:+.1f} MB")
    print(f"RSS at the end after malloc_trim(0): release_rag {release_out['rss_end_after_malloc_trim_mb']:.0f} MB, "
          f"del+gc {plain_out['rss_end_after_malloc_trim_mb']:.0f} MB")

    first_last = lambda out: [round(out["rows"][0]["rss_mb"], 1), round(out["rows"][-1]["rss_mb"], 1)]  # noqa: E731
    summary = {
        "llm": llm,
        "simulated_llm": True,
        "soak_docs": soak_out["docs"],
        "soak_batch": soak_out["batch"],
        "soak_warmup_batches": soak_out["warmup_batches"],
        "soak_failed_docs": soak_out["failed_docs"],
        "soak_s_per_doc": round(soak_out["s_per_doc"], 3),
        "soak_rss_slope_mb_per_100_docs": round(soak_out["rss_slope_mb_per_100_docs"], 3),
        "soak_storage_slope_mb_per_100_docs": round(soak_out["storage_slope_mb_per_100_docs"], 3),
        "soak_live_heap_slope_mb_per_100_docs": round(soak_out["live_heap_slope_mb_per_100_docs"], 3),
        "soak_malloc_free_slope_mb_per_100_docs": round(soak_out["malloc_free_slope_mb_per_100_docs"], 3),
        "soak_rss_first_last_mb": [round(soak_out["rows"][0]["rss_mb"], 1), round(soak_out["rows"][-1]["rss_mb"], 1)],
        "soak_rss_end_after_malloc_trim_mb": round(soak_out["rss_end_after_malloc_trim_mb"], 1),
        "cycles": args.cycles,
        "release_cycles_rss_growth_pct": round(release_out["growth_pct"], 2),
        "raganything_cycles_rss_growth_pct": round(plain_out["growth_pct"], 2),
        "release_cycles_rss_first_last_mb": first_last(release_out),
        "raganything_cycles_rss_first_last_mb": first_last(plain_out),
        "release_cycles_live_heap_growth_mb": round(release_out["live_heap_growth_mb"], 1),
        "raganything_cycles_live_heap_growth_mb": round(plain_out["live_heap_growth_mb"], 1),
        "release_cycles_rss_end_after_malloc_trim_mb": round(release_out["rss_end_after_malloc_trim_mb"], 1),
        "raganything_cycles_rss_end_after_malloc_trim_mb": round(plain_out["rss_end_after_malloc_trim_mb"], 1),
        "cycles_not_ok_docs": release_out["not_ok_docs"] + plain_out["not_ok_docs"],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
