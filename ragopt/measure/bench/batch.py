"""Batch ingestion benchmark: RAG-Anything's entry points, shipped and tuned, against ragopt.

    ragopt bench --batch                                   # sample corpus, presets default + hosted, 3 repeats
    ragopt bench --batch --synthetic 200 --preset default --repeats 1
    ragopt bench --batch --rate-429 0.1

Same corpus, same simulator settings, each run in a fresh Python process and
in the same working-dir path (RAG-Anything writes image paths into chunk
text), the modes interleaved (A B C D A B C D ...) ``--repeats`` times:

- ``rag_batch``: RAG-Anything's ``process_documents_with_rag_batch`` (the serial baseline);
- ``rag_folder``: its ``process_folder_complete(max_workers=4)``, as shipped;
- ``rag_folder_tuned``: the same with LightRAG tuned as a careful user would
  (``llm_model_max_async = K``, ``max_parallel_insert = max(2, K // 2)``);
- ``ragopt``: ``ragopt.ingest`` with every optimization of the config on.

For each preset it prints mean ± std of each figure over the repeats, the
median speedup of ragopt over each baseline (the one over the tuned baseline
is the headline), wall time over the LLM-bound limit (planned service seconds
/ K, from the simulator's plan; measured busy beside it), successful LLM calls
by kind (extraction and gleaning must equal the serial baseline's: the same
work), whether rag_batch and ragopt built the same graph (never "same" for a
near-empty one), and lost or duplicated documents per mode.

Under injected 429s (``--rate-429``) the baselines retry as LightRAG's OpenAI
binding does (3 attempts, 4-10 s waits, Retry-After ignored) and ragopt with
its own retries (Retry-After honoured): each side's best; lost documents are
shown per mode, so a speedup is never made of the baseline's losses.

The LLM is the SIMULATED service unless RAGOPT_LLM_BASE_URL names a real
endpoint; every figure says which. A run that fails makes the command exit 1.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pandas as pd

from ragopt.config import RagoptConfig
from ragopt.measure.ablation import Variant, run_variants, speedups, spread
from ragopt.measure.experiments import MODES
from ragopt.measure.graphs import compare_graphs
from ragopt.measure.integrity import inspect_knowledge_base
from ragopt.measure.run import Run
from ragopt.measure.workloads import SAMPLE_CORPUS, corpus_files, synthetic_corpus

SERIAL_BASELINE = "rag_batch"
BASELINES = ("rag_batch", "rag_folder", "rag_folder_tuned")
WORK_KINDS = ("extract", "glean")  # the LLM work that decides the graph: must not change
FIGURES = ("docs_per_min", "wall_s", "wall_over_limit", "wall_over_limit_measured_busy", "llm_bound_limit_s",
           "llm_slot_utilization", "llm_max_in_flight", "embedding_calls", "embedding_texts", "storage_flushes",
           "cpu_pct_all_cores", "peak_rss_mb", "doc_done_p95_s", "doc_processing_p50_s", "doc_processing_p95_s")
FAULT_NOTE = ("under injected 429s the baselines retry as LightRAG's OpenAI binding does (3 attempts, 4-10 s waits, "
              "Retry-After ignored), ragopt with its own retries (Retry-After honoured); lost documents per mode below")


def ok_calls_by_kind(run: Run) -> Dict[str, int]:
    """Successful LLM calls by kind (retried attempts left out)."""
    calls = run.llm_calls
    ok = calls[calls["outcome"] == "ok"]
    return {str(k): int(v) for k, v in ok["kind"].fillna("unknown").value_counts().sort_index().items()}


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and pd.isna(value) else value


def _mode_figures(runs: pd.DataFrame, table: pd.DataFrame, mode: str) -> Dict[str, Any]:
    """Mean and std of each figure over the repeats, plus what the first repeat's run record and storage tell."""
    mine = runs[(runs["variant"] == mode) & runs["error"].isna()]
    figures: Dict[str, Any] = {"runs": int(len(mine)), "errors": [e for e in runs[runs["variant"] == mode]["error"] if e]}
    if mine.empty:
        return figures
    for name in FIGURES:
        figures[name] = _plain(table.loc[mode, ("mean", name)])
        figures[f"{name}_std"] = _plain(table.loc[mode, ("std", name)])
    first = mine.iloc[0]
    run = Run.from_json(first["record"])
    details = first["details"] or {}
    figures.update(
        docs_ok=int(mine["docs_ok"].min()),
        docs_failed=int(mine["docs_failed"].max()),
        llm_calls=int(first["llm_calls"]),
        llm_calls_failed=int(first["llm_calls_failed"]),
        llm_ok_calls_by_kind=ok_calls_by_kind(run),
        retries=details.get("llm_retries") or {},
        vector_writes=details.get("write_behind_vectors") or {},
        working_dir=first["working_dir"],
        graph=first["graph"],
    )
    checks = list(mine["check"])
    figures.update(checks[0], lost_docs=max(c["lost_docs"] for c in checks),
                   duplicate_docs=max(c["duplicate_docs"] for c in checks),
                   missing_chunks=max(c["missing_chunks"] for c in checks))
    return figures


def _storage_settings(storage: str) -> Dict[str, Any]:
    """RagoptConfig fields of a ``--storage`` choice."""
    return {
        "files": {},
        "redis": {"kv_storage": "RedisKVStorage", "doc_status_storage": "RedisDocStatusStorage"},
        "faiss": {"vector_storage": "FaissVectorDBStorage"},
    }[storage]


def _inspect(files: List[Path], storage_server: Any) -> Any:
    """After each run: check the knowledge base it left through LightRAG's storage APIs, then (on a
    server storage) empty the server for the next run."""

    def after_run(variant: Variant, row: Dict[str, Any]) -> None:
        found = inspect_knowledge_base(variant.config, row["working_dir"], files)
        row["graph"] = found.pop("graph")
        row["check"] = found
        if storage_server is not None:
            storage_server.flushdb()

    return after_run


def bench_preset(preset: str, corpus: Path, files: List[Path], args: argparse.Namespace, out_dir: Path,
                 storage_server: Any = None) -> Dict[str, Any]:
    config = RagoptConfig.from_env(sim_preset=preset, sim_rate_429=args.rate_429, parser=args.parser,
                                   **_storage_settings(args.storage))
    variants = [Variant(mode, mode, config) for mode in args.modes]
    runs = run_variants(corpus, variants, out_dir / preset, repeats=args.repeats, same_path=out_dir / "run",
                        after_run=_inspect(files, storage_server))
    table = spread(runs, FIGURES)
    figures = {mode: _mode_figures(runs, table, mode) for mode in args.modes}
    serial = figures.get(SERIAL_BASELINE, {}).get("llm_ok_calls_by_kind")
    for f in figures.values():
        kinds = f.get("llm_ok_calls_by_kind")
        f["same_llm_work_as_serial"] = (
            None if serial is None or kinds is None else all(kinds.get(k, 0) == serial.get(k, 0) for k in WORK_KINDS))
    graphs: Dict[str, Any] = {}
    for other in ("ragopt", "rag_folder", "rag_folder_tuned"):
        a, b = figures.get(SERIAL_BASELINE, {}).get("graph"), figures.get(other, {}).get("graph")
        if a is not None and b is not None:
            graphs[f"{SERIAL_BASELINE}_vs_{other}"] = compare_graphs(a, b)
    ok = runs[runs["error"].isna()]
    return {
        "preset": preset,
        "backend": ok["backend"].iloc[0] if len(ok) else None,
        "simulated_llm": bool(ok["simulated_llm"].all()) if len(ok) else config.uses_simulator,
        "modes": figures,
        "errors": {mode: f["errors"] for mode, f in figures.items() if f["errors"]},
        "speedups": speedups(runs, "ragopt", [m for m in BASELINES if m in args.modes]) if "ragopt" in args.modes else {},
        "graphs": graphs,
    }


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pm(f: Dict[str, Any], name: str, spec: str) -> str:
    """mean ± std (just the mean with one repeat)."""
    if f.get(name) is None:
        return "-"
    std = f.get(f"{name}_std")
    return _fmt(f[name], spec) + ("" if std is None else f" ± {_fmt(std, spec)}")


TABLE_ROWS = (
    ("runs ok", lambda f: str(f["runs"])),
    ("docs ok / failed (worst run)", lambda f: f"{f['docs_ok']} / {f['docs_failed']}"),
    ("wall (s)", lambda f: _pm(f, "wall_s", ".1f")),
    ("docs/min", lambda f: _pm(f, "docs_per_min", ".2f")),
    ("LLM-bound limit (s, planned / K)", lambda f: _pm(f, "llm_bound_limit_s", ".1f")),
    ("wall / limit", lambda f: _pm(f, "wall_over_limit", ".2f")),
    ("wall / measured-busy limit", lambda f: _pm(f, "wall_over_limit_measured_busy", ".2f")),
    ("LLM slot utilization", lambda f: _pm(f, "llm_slot_utilization", ".0%")),
    ("LLM max in flight", lambda f: _pm(f, "llm_max_in_flight", ".0f")),
    ("LLM calls (failed attempts)", lambda f: f"{f['llm_calls']} ({f['llm_calls_failed']})"),
    ("LLM ok calls by kind", lambda f: " ".join(f"{k}={v}" for k, v in f["llm_ok_calls_by_kind"].items())),
    ("extract+glean = serial's", lambda f: str(f["same_llm_work_as_serial"])),
    ("retries", lambda f: " ".join(f"{k}={v}" for k, v in f["retries"].items()) or "-"),
    ("embedding calls", lambda f: _pm(f, "embedding_calls", ".0f")),
    ("embedding texts", lambda f: _pm(f, "embedding_texts", ".0f")),
    ("vector writes (superseded unembedded)",
     lambda f: f"{f['vector_writes']['writes']} ({f['vector_writes']['superseded']})" if f["vector_writes"] else "-"),
    ("storage flushes", lambda f: _pm(f, "storage_flushes", ".0f")),
    ("CPU % of all cores", lambda f: _pm(f, "cpu_pct_all_cores", ".0f")),
    ("peak RSS (MB, process tree)", lambda f: _pm(f, "peak_rss_mb", ".0f")),
    ("p95 time to done since start (s)", lambda f: _pm(f, "doc_done_p95_s", ".1f")),
    ("doc processing p50 / p95 (s)", lambda f: f"{_pm(f, 'doc_processing_p50_s', '.1f')} / {_pm(f, 'doc_processing_p95_s', '.1f')}"),
    ("lost docs (worst run)", lambda f: f"{f['lost_docs']} {f['lost'] or ''}".strip()),
    ("chunks missing behind processed status", lambda f: str(f["missing_chunks"])),
    ("duplicate docs (dup- records)", lambda f: f"{f['duplicate_docs']} ({f['dup_records']})"),
    ("failed doc_status records", lambda f: str(f["failed_records"])),
)


def print_preset(result: Dict[str, Any], args: argparse.Namespace) -> None:
    figures = {mode: f for mode, f in result["modes"].items() if f["runs"]}
    print()
    print(f"== preset {result['preset']}: {result['backend']} ({args.repeats} repeat(s), interleaved)")
    if figures:
        table = pd.DataFrame({mode: {name: cell(f) for name, cell in TABLE_ROWS} for mode, f in figures.items()})
        print(table.to_string())
    for mode, errors in result["errors"].items():
        for error in errors:
            print(f"{mode} FAILED: {error}")
    for baseline, s in result["speedups"].items():
        print(f"ragopt speedup vs {baseline}: median {_fmt(s['median'], '.2f')}x "
              f"(per repeat {', '.join(f'{v:.2f}' for v in s['per_repeat'])}; of the means {_fmt(s['of_means'], '.2f')}x)")
    if args.rate_429:
        print(f"note: {FAULT_NOTE}")
    for name, comparison in result["graphs"].items():
        if comparison.get("same") is None:
            print(f"graph {name}: not compared ({comparison.get('error')})")
            continue
        verdict = "same" if comparison["same"] else ("different" if comparison["comparable"] else "too small to compare")
        print(f"graph {name}: {verdict}: entities {comparison['entities_a']} vs {comparison['entities_b']}, "
              f"relations {comparison['relations_a']} vs {comparison['relations_b']}")


@contextlib.contextmanager
def _storage_server(storage: str, out_dir: Path) -> Iterator[Any]:
    """The Redis the runs use (REDIS_URI, or a redis-server of the benchmark's own on a free port), or None."""
    if storage != "redis":
        yield None
        return
    import redis

    process = None
    if not os.environ.get("REDIS_URI"):
        import socket
        import subprocess

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--dir", str(out_dir)], stdout=subprocess.DEVNULL)
        os.environ["REDIS_URI"] = f"redis://127.0.0.1:{port}/0"  # LightRAG's Redis storages read it; the runs inherit it
    client = redis.Redis.from_url(os.environ["REDIS_URI"])
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process is not None and process.poll() is not None:
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    client.flushdb()
    try:
        yield client
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
            del os.environ["REDIS_URI"]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(SAMPLE_CORPUS), help="folder of documents (default: data/sample)")
    parser.add_argument("--synthetic", type=int, metavar="N", help="use N generated documents instead")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic corpus")
    parser.add_argument("--preset", nargs="+", default=["default", "hosted"],
                        help="simulator presets to run, the first one is the headline (default: default hosted)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode, interleaved (default 3)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES, help="modes to run (default: all)")
    parser.add_argument("--rate-429", type=float, default=0.0, help="share of LLM requests the simulator answers with 429")
    parser.add_argument("--storage", choices=("files", "redis", "faiss"), default="files",
                        help="LightRAG storages: its default files; Redis KV and doc status (REDIS_URI, else a "
                             "redis-server started for the benchmark); Faiss vectors")
    parser.add_argument("--parser", help="a parser RAG-Anything knows by name, or package.module:Class to register "
                                         "(default: ragopt's offline parser)")
    parser.add_argument("--out-dir", default="reports/bench_batch", help="run records and working dirs")
    args = parser.parse_args(argv)

    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.synthetic:
        corpus = out_dir / f"synthetic-{args.synthetic}"
        synthetic_corpus(corpus, args.synthetic, seed=args.seed)
    else:
        corpus = Path(args.corpus).resolve()
    files = corpus_files(corpus)
    if not files:
        print(f"no documents in {corpus}", file=sys.stderr)
        return 2

    results = []
    with _storage_server(args.storage, out_dir) as server:
        for preset in args.preset:
            results.append(bench_preset(preset, corpus, files, args, out_dir, server))
            print_preset(results[-1], args)

    simulated = all(r["simulated_llm"] for r in results)
    print()
    print(("All figures measured on the SIMULATED LLM service (no real model was called). "
           if simulated else "Figures measured on a real LLM endpoint. ")
          + f"corpus: {corpus} ({len(files)} documents), 429 rate {args.rate_429}, storage {args.storage}, "
          f"parser {args.parser or 'ragopt offline'}, run records: {out_dir}")
    head = results[0]
    modes = head["modes"]
    ragopt = modes.get("ragopt", {})

    def speedup(baseline: str) -> Optional[float]:
        return head["speedups"].get(baseline, {}).get("median")

    summary = {
        "simulated_llm": simulated,
        "corpus": str(corpus),
        "documents": len(files),
        "rate_429": args.rate_429,
        "storage": args.storage,
        "parser": args.parser,
        "repeats": args.repeats,
        "preset": head["preset"],
        **{f"docs_per_min_{mode}": modes.get(mode, {}).get("docs_per_min") for mode in args.modes},
        **{f"speedup_vs_{baseline}": speedup(baseline) for baseline in BASELINES if baseline in args.modes},
        "wall_over_limit": ragopt.get("wall_over_limit"),
        "wall_over_limit_measured_busy": ragopt.get("wall_over_limit_measured_busy"),
        "peak_rss_mb": {mode: f.get("peak_rss_mb") for mode, f in modes.items()},
        "same_llm_work_as_serial": ragopt.get("same_llm_work_as_serial"),
        "same_graph": head["graphs"].get("rag_batch_vs_ragopt", {}).get("same"),
        "lost_docs": ragopt.get("lost_docs"),
        "duplicate_docs": ragopt.get("duplicate_docs"),
        "errors": {r["preset"]: r["errors"] for r in results if r["errors"]},
        "presets": {
            r["preset"]: {
                "backend": r["backend"],
                "speedups": r["speedups"],
                "graphs": {k: {x: y for x, y in g.items() if not x.endswith(("_in_a", "_in_b"))} for k, g in r["graphs"].items()},
                **{mode: {k: v for k, v in f.items() if k not in ("lost", "duplicated", "graph")} for mode, f in r["modes"].items()},
            }
            for r in results
        },
    }
    print(json.dumps(summary, default=str))
    return 1 if summary["errors"] else 0
