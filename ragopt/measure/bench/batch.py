"""Batch ingestion benchmark: RAG-Anything's batch and folder modes against ragopt.batch.

    .venv/bin/python benchmarks/bench_batch.py                      # sample corpus, presets default + hosted
    .venv/bin/python benchmarks/bench_batch.py --synthetic 60 --preset default --rate-429 0.05

Same corpus, same simulator settings, one fresh Python process per mode
(``ragopt.experiments.run_isolated``; every mode in the same working-dir path,
see ``run_mode``):

- ``rag_batch``: RAG-Anything's ``process_documents_with_rag_batch`` (documents
  inserted one after another: the serial baseline);
- ``rag_folder``: its ``process_folder_complete(max_workers=4)``;
- ``ragopt``: ``ragopt.batch.ingest`` with every optimization of the config on.
  Write-behind vector storage is one of them: an entity's vector that a later
  merge of the same entity overwrites before it was embedded is never
  embedded (the stored vectors are the same; the row "vector writes" shows
  how many writes were superseded, and "embedding texts" the texts embedded).

For each simulator preset it prints docs/min and the speedups, wall time over
the LLM-bound limit, LLM slot utilization, embedding calls and texts per call,
CPU% of all cores, p50/p95 document latency, successful LLM calls by kind
(extraction and gleaning must match the serial baseline's: the same work was
done), whether the knowledge graphs of rag_batch and ragopt hold the same
entities and relations, and lost or duplicated documents (each working dir's
doc status records against the corpus files). Run records and working dirs
are kept under --out-dir.

The LLM is the SIMULATED service unless RAGOPT_LLM_BASE_URL names a real
endpoint; every figure says which. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pandas as pd

from ragopt.config import RagoptConfig
from ragopt.measure.experiments import MODES, run_isolated
from ragopt.measure.graphs import compare_graphs
from ragopt.measure.run import Run
from ragopt.measure.workloads import SAMPLE_CORPUS, corpus_files, synthetic_corpus

SERIAL_BASELINE = "rag_batch"
WORK_KINDS = ("extract", "glean")  # the LLM work that decides the graph: must not change


def ok_calls_by_kind(run: Run) -> Dict[str, int]:
    """Successful LLM calls by kind (retried attempts left out)."""
    calls = run.llm_calls
    ok = calls[calls["outcome"] == "ok"]
    return {str(k): int(v) for k, v in ok["kind"].fillna("unknown").value_counts().sort_index().items()}


def doc_status_check(working_dir: str | Path, files: List[Path]) -> Dict[str, Any]:
    """Lost and duplicated documents: the doc status records of a working dir against the corpus."""
    path = Path(working_dir) / "kv_store_doc_status.json"
    records = json.loads(path.read_text()) if path.is_file() else {}
    by_file: Dict[str, List[dict]] = {}
    for doc_id, record in records.items():
        name = Path(str(record.get("file_path", ""))).name
        by_file.setdefault(name, []).append({"doc_id": doc_id, **record})
    names = [f.name for f in files]
    lost = [n for n in names if not any(str(r.get("status")) == "processed" for r in by_file.get(n, []))]
    dup_records = [k for k in records if k.startswith("dup-")]
    # A file with two records, or named by one of the failed "dup-" records LightRAG writes on re-insertion.
    duplicated = sorted({n for n in names if len(by_file.get(n, [])) > 1}
                        | {Path(str(records[k].get("file_path") or k)).name for k in dup_records})
    failed_records = [k for k, r in records.items() if str(r.get("status")) == "failed"]
    return {
        "records": len(records),
        "lost_docs": len(lost),
        "lost": lost[:10],
        "duplicate_docs": len(duplicated),
        "duplicated": duplicated[:10],
        "dup_records": len(dup_records),
        "failed_records": len(failed_records),
    }


def mode_figures(run: Run, files: List[Path]) -> Dict[str, Any]:
    s = run.summary()
    return {
        "docs_ok": s["docs_ok"],
        "docs_failed": s["docs_failed"],
        "wall_s": s["wall_s"],
        "docs_per_min": s["docs_per_min"],
        "llm_bound_limit_s": s["llm_bound_limit_s"],
        "wall_over_limit": s["wall_over_limit"],
        "llm_slot_utilization": s["llm_slot_utilization"],
        "llm_max_in_flight": s["llm_max_in_flight"],
        "llm_calls": s["llm_calls"],
        "llm_calls_failed": s["llm_calls_failed"],
        "llm_ok_calls_by_kind": ok_calls_by_kind(run),
        "embedding_calls": s["embedding_calls"],
        "embedding_texts": s["embedding_texts"],
        "embedding_texts_per_call": s["embedding_texts_per_call"],
        "storage_flushes": s["storage_flushes"],
        "cpu_pct_all_cores": s["cpu_pct_all_cores"],
        "peak_rss_mb": s["peak_rss_mb"],
        "doc_done_p95_s": s["doc_done_p95_s"],
        "doc_processing_p50_s": s["doc_processing_p50_s"],
        "doc_processing_p95_s": s["doc_processing_p95_s"],
        "retries": (run.meta.get("details") or {}).get("llm_retries") or {},
        "vector_writes": (run.meta.get("details") or {}).get("write_behind_vectors") or {},
        "working_dir": run.meta.get("working_dir"),
        **doc_status_check(run.meta["working_dir"], files),
    }


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def run_mode(mode: str, corpus: Path, out: Path, config: RagoptConfig, working_dir: Path) -> Run:
    """``run_isolated`` with every mode in the same working-dir path.

    RAG-Anything writes each image's path (under the working dir) into the
    text of its chunk, and the LLM reads names off that text: runs in
    differently named working dirs build graphs that differ for that reason alone.
    """
    return run_isolated(mode, corpus, out, config, working_dir=working_dir)


def bench_preset(preset: str, corpus: Path, files: List[Path], rate_429: float, out_dir: Path, work: Path) -> Dict[str, Any]:
    config = RagoptConfig.from_env(sim_preset=preset, sim_rate_429=rate_429)
    runs: Dict[str, Run] = {}
    errors: Dict[str, str] = {}
    for mode in MODES:
        started = time.perf_counter()
        shared, kept = work / "run", work / f"{preset}-{mode}"
        shutil.rmtree(shared, ignore_errors=True)
        shutil.rmtree(kept, ignore_errors=True)
        try:
            runs[mode] = run_mode(mode, corpus, out_dir / preset / f"{mode}.json", config, shared)
        except Exception as error:  # one mode failing must not hide the others' figures
            errors[mode] = f"{type(error).__name__}: {str(error)[-600:]}"
        if shared.exists():
            shared.rename(kept)
        if mode in runs:
            runs[mode].meta["working_dir"] = str(kept)
        print(f"  [{preset}] {mode}: {time.perf_counter() - started:.1f} s in its own process", file=sys.stderr, flush=True)

    figures = {mode: mode_figures(run, files) for mode, run in runs.items()}
    baseline = figures.get(SERIAL_BASELINE, {}).get("llm_ok_calls_by_kind")
    for mode, f in figures.items():
        kinds = f["llm_ok_calls_by_kind"]
        f["same_llm_work_as_serial"] = (
            None if baseline is None else all(kinds.get(k, 0) == baseline.get(k, 0) for k in WORK_KINDS)
        )
    graphs: Dict[str, Any] = {}
    for other in ("ragopt", "rag_folder"):
        if SERIAL_BASELINE in runs and other in runs:
            try:
                graphs[f"{SERIAL_BASELINE}_vs_{other}"] = compare_graphs(
                    runs[SERIAL_BASELINE].meta["working_dir"], runs[other].meta["working_dir"]
                )
            except FileNotFoundError as error:
                graphs[f"{SERIAL_BASELINE}_vs_{other}"] = {"same": None, "error": str(error)}
    ragopt_dpm = figures.get("ragopt", {}).get("docs_per_min")
    any_run = next(iter(runs.values()), None)
    return {
        "preset": preset,
        "backend": any_run.meta.get("backend") if any_run else None,
        "simulated_llm": any_run.simulated if any_run else config.uses_simulator,
        "modes": figures,
        "errors": errors,
        "speedup_vs_rag_batch": _ratio(ragopt_dpm, figures.get("rag_batch", {}).get("docs_per_min")),
        "speedup_vs_rag_folder": _ratio(ragopt_dpm, figures.get("rag_folder", {}).get("docs_per_min")),
        "graphs": graphs,
    }


TABLE_ROWS = (
    ("docs ok / failed", lambda f: f"{f['docs_ok']} / {f['docs_failed']}"),
    ("wall (s)", lambda f: f"{f['wall_s']:.1f}"),
    ("docs/min", lambda f: _fmt(f["docs_per_min"], ".2f")),
    ("LLM-bound limit (s)", lambda f: _fmt(f["llm_bound_limit_s"], ".1f")),
    ("wall / limit", lambda f: _fmt(f["wall_over_limit"], ".2f")),
    ("LLM slot utilization", lambda f: _fmt(f["llm_slot_utilization"], ".0%")),
    ("LLM max in flight", lambda f: str(f["llm_max_in_flight"])),
    ("LLM calls (failed attempts)", lambda f: f"{f['llm_calls']} ({f['llm_calls_failed']})"),
    ("LLM ok calls by kind", lambda f: " ".join(f"{k}={v}" for k, v in f["llm_ok_calls_by_kind"].items())),
    ("extract+glean = serial's", lambda f: str(f["same_llm_work_as_serial"])),
    ("retries", lambda f: " ".join(f"{k}={v}" for k, v in f["retries"].items()) or "-"),
    ("embedding calls", lambda f: str(f["embedding_calls"])),
    ("embedding texts", lambda f: str(f["embedding_texts"])),
    ("vector writes (superseded unembedded)",
     lambda f: f"{f['vector_writes']['writes']} ({f['vector_writes']['superseded']})" if f["vector_writes"] else "-"),
    ("embedding texts/call", lambda f: _fmt(f["embedding_texts_per_call"], ".1f")),
    ("storage flushes", lambda f: str(f["storage_flushes"])),
    ("CPU % of all cores", lambda f: _fmt(f["cpu_pct_all_cores"], ".0f")),
    ("peak RSS (MB)", lambda f: _fmt(f["peak_rss_mb"], ".0f")),
    ("p95 time to done since start (s)", lambda f: _fmt(f["doc_done_p95_s"], ".1f")),
    ("doc processing p50 / p95 (s)", lambda f: f"{_fmt(f['doc_processing_p50_s'], '.1f')} / {_fmt(f['doc_processing_p95_s'], '.1f')}"),
    ("lost docs", lambda f: f"{f['lost_docs']} {f['lost'] or ''}".strip()),
    ("duplicate docs (dup- records)", lambda f: f"{f['duplicate_docs']} ({f['dup_records']})"),
    ("failed doc_status records", lambda f: str(f["failed_records"])),
)


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_preset(result: Dict[str, Any]) -> None:
    figures = result["modes"]
    print()
    print(f"== preset {result['preset']}: {result['backend']}")
    if figures:
        table = pd.DataFrame({mode: {name: cell(f) for name, cell in TABLE_ROWS} for mode, f in figures.items()})
        print(table.to_string())
    for mode, error in result["errors"].items():
        print(f"{mode} FAILED: {error}")
    print(f"ragopt speedup: {_fmt(result['speedup_vs_rag_batch'], '.2f')}x vs rag_batch, "
          f"{_fmt(result['speedup_vs_rag_folder'], '.2f')}x vs rag_folder (docs/min)")
    same_work = {m: f["same_llm_work_as_serial"] for m, f in figures.items()}
    print(f"extract and glean calls equal to the serial baseline's ({SERIAL_BASELINE}): {same_work}")
    for name, comparison in result["graphs"].items():
        if comparison.get("same") is None:
            print(f"graph {name}: not compared ({comparison.get('error')})")
            continue
        print(
            f"graph {name}: same entities {comparison['same_entities']} "
            f"({comparison['entities_a']} vs {comparison['entities_b']}), same relations {comparison['same_relations']} "
            f"({comparison['relations_a']} vs {comparison['relations_b']})"
        )
        if not comparison["same"]:
            for key in ("entities_only_in_a", "entities_only_in_b", "relations_only_in_a", "relations_only_in_b"):
                if comparison[key]:
                    print(f"    {key}: {comparison[key]}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(SAMPLE_CORPUS), help="folder of documents (default: data/sample)")
    parser.add_argument("--synthetic", type=int, metavar="N", help="use N generated documents instead")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic corpus")
    parser.add_argument("--preset", nargs="+", default=["default", "hosted"],
                        help="simulator presets to run, the first one is the headline (default: default hosted)")
    parser.add_argument("--rate-429", type=float, default=0.0, help="share of LLM requests the simulator answers with 429")
    parser.add_argument("--out-dir", default="reports/bench_batch", help="run records and working dirs")
    args = parser.parse_args(argv)

    out_dir = Path(args.out_dir).resolve()
    work = out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)  # working dirs, kept as work/<preset>-<mode>
    if args.synthetic:
        corpus = work / f"synthetic-{args.synthetic}"
        synthetic_corpus(corpus, args.synthetic, seed=args.seed)
    else:
        corpus = Path(args.corpus).resolve()
    files = corpus_files(corpus)
    if not files:
        print(f"no documents in {corpus}", file=sys.stderr)
        return 2

    results = []
    for preset in args.preset:
        results.append(bench_preset(preset, corpus, files, args.rate_429, out_dir, work))
        print_preset(results[-1])

    simulated = all(r["simulated_llm"] for r in results)
    print()
    print(("All figures measured on the SIMULATED LLM service (no real model was called). "
           if simulated else "Figures measured on a real LLM endpoint. ")
          + f"corpus: {corpus} ({len(files)} documents), 429 rate {args.rate_429}, run records: {out_dir}")
    head = results[0]
    ragopt = head["modes"].get("ragopt", {})
    rag_batch = head["modes"].get("rag_batch", {})
    graph = head["graphs"].get("rag_batch_vs_ragopt", {})
    summary = {
        "simulated_llm": simulated,
        "corpus": str(corpus),
        "documents": len(files),
        "rate_429": args.rate_429,
        "preset": head["preset"],
        "docs_per_min_ragopt": ragopt.get("docs_per_min"),
        "docs_per_min_rag_batch": rag_batch.get("docs_per_min"),
        "docs_per_min_rag_folder": head["modes"].get("rag_folder", {}).get("docs_per_min"),
        "speedup_vs_rag_batch": head["speedup_vs_rag_batch"],
        "speedup_vs_rag_folder": head["speedup_vs_rag_folder"],
        "wall_over_limit": ragopt.get("wall_over_limit"),
        "llm_slot_utilization": ragopt.get("llm_slot_utilization"),
        "same_llm_work_as_serial": ragopt.get("same_llm_work_as_serial"),
        "same_graph": graph.get("same"),
        "lost_docs": ragopt.get("lost_docs"),
        "duplicate_docs": ragopt.get("duplicate_docs"),
        "errors": head["errors"],
        "presets": {
            r["preset"]: {
                "backend": r["backend"],
                "speedup_vs_rag_batch": r["speedup_vs_rag_batch"],
                "speedup_vs_rag_folder": r["speedup_vs_rag_folder"],
                "same_graph": r["graphs"].get("rag_batch_vs_ragopt", {}).get("same"),
                "errors": r["errors"],
                **{
                    mode: {k: v for k, v in f.items() if k not in ("lost", "duplicated")}
                    for mode, f in r["modes"].items()
                },
            }
            for r in results
        },
    }
    print(json.dumps(summary, default=str))
    return 0
