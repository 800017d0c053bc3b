"""Parse-cache benchmark: renamed, copied and touched files, RAG-Anything's cache beside ragopt's.

    ragopt bench --cache [--preset fast] [--fractions 0.25 0.5]
        [--synthetic N] [--no-sample] [--skip-ingest] [--seed S] [--scratch DIR]

For each duplicate fraction f, ``ragopt.measure.workloads.duplicate_workload`` builds a
corpus from the committed sample (data/sample) and/or N synthetic documents in
which a share f of the parse requests repeat content already seen: renamed
copies, copies in sub-folders, and originals requested again after
``touch_originals`` changed their mtime. Its ``hit_rate_max`` is the share a
cache keyed on content alone can answer.

1. Parse cache, side by side, over the same requests (pass 1: every file;
   touch; pass 2: the touched originals), by
   ``ragopt.measure.cache_workload.cache_requests``: RAG-Anything's own cache
   (``rag.parse_document`` per request, as its entry points call it) and
   ragopt's ``ContentCache.get_or_parse``, both starting empty. Hit rate,
   parser calls (counted at the offline parser itself) and seconds.
2. Ingestion: ``profile("ragopt", corpus, config, working_dir=W)`` with
   ``config.cache_storage`` a fixed folder, then the same again on the
   unchanged corpus into W (second_run_*: must make no parser and no LLM
   calls), then once more after touching the originals (touched_run_*).

Prints tables, then as the last line one JSON object: the first fraction's
figures at top level and every fraction's under ``fractions``. LLM figures
come from the simulated LLM service unless RAGOPT_LLM_BASE_URL names a real one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from ragopt.config import RagoptConfig  # noqa: E402
from ragopt.measure.cache_workload import CACHES, cache_figures, cache_requests  # noqa: E402
from ragopt.measure.workloads import SAMPLE_CORPUS, corpus_files, duplicate_workload, synthetic_corpus, touch_originals  # noqa: E402


# --------------------------------------------------------------------------- ingestion

def measure_reingest(manifest: dict, config: RagoptConfig, working_dir: str | Path, cache_storage: str | Path,
                     touched_run: bool = True) -> Dict[str, Any]:
    """``profile("ragopt")`` on the workload's corpus twice into one working dir (then once after a touch)."""
    from ragopt.measure.experiments import profile

    config = config.replace(cache_storage=str(cache_storage), enable_parse_cache=True)
    corpus = Path(manifest["out_dir"])
    labels = ["first", "second"] + (["touched"] if touched_run else [])
    runs = {}
    for label in labels:
        if label == "touched":
            touch_originals(manifest)
        runs[label] = profile("ragopt", corpus, config, working_dir=working_dir, label=f"ragopt {label} run")
    figures: Dict[str, Any] = {"backend": runs["first"].meta.get("backend"), "simulated_llm": runs["first"].simulated}
    for label, run in runs.items():
        summary = run.summary()
        parse_cache = run.caches.get("parse_cache", {})
        counts = run.meta.get("details", {}).get("ingest", {})
        figures[label] = {
            "docs_ok": counts.get("ok", summary["docs_ok"]),
            "docs_skipped": counts.get("skipped"),
            "docs_failed": counts.get("failed", summary["docs_failed"]),
            "parser_calls": parse_cache.get("misses"),
            "parse_cache_hits": parse_cache.get("hits"),
            "llm_calls": summary["llm_calls"],
            "simulator_llm_calls": (run.meta.get("simulator") or {}).get("calls"),
            "wall_s": summary["wall_s"],
        }
    figures["second_run_parser_calls"] = figures["second"]["parser_calls"]
    figures["second_run_llm_calls"] = figures["second"]["llm_calls"]
    if touched_run:
        figures["touched_run_parser_calls"] = figures["touched"]["parser_calls"]
        figures["touched_run_llm_calls"] = figures["touched"]["llm_calls"]
    return figures


# --------------------------------------------------------------------------- driver

def bench_fraction(sources: List[Path], fraction: float, scratch: Path, config: RagoptConfig, seed: int,
                   ingest: bool = True, backends: Any = None) -> Dict[str, Any]:
    """Every figure of one duplicate fraction, in folders under ``scratch``."""
    scratch.mkdir(parents=True, exist_ok=True)
    manifest = duplicate_workload(sources, scratch / "corpus", fraction, seed=seed)
    (scratch / "manifest.json").write_text(json.dumps(manifest, indent=1))
    requests = cache_requests(manifest, scratch / "caches", config, rerun=False, backends=backends)
    ragopt, raganything = (cache_figures(requests, name) for name in CACHES)
    result: Dict[str, Any] = {
        "duplicate_fraction": fraction,
        "files": len(manifest["files"]),
        "unique_contents": manifest["unique_contents"],
        "requests": manifest["requests"],
        "duplicates_by_kind": {k: v for k, v in manifest["counts"].items() if k != "originals"},
        "hit_rate_max": manifest["hit_rate_max"],
        "hit_rate_ragopt": ragopt["hit_rate"],
        "hit_rate_raganything": raganything["hit_rate"],
        "parser_calls_ragopt": ragopt["parser_calls"],
        "parser_calls_raganything": raganything["parser_calls"],
        "wall_s_ragopt": ragopt["wall_s"],
        "wall_s_raganything": raganything["wall_s"],
    }
    if ingest:
        reingest = measure_reingest(manifest, config, scratch / "ingest-working-dir", scratch / "ingest-parse-cache")
        result.update(
            second_run_parser_calls=reingest.pop("second_run_parser_calls"),
            second_run_llm_calls=reingest.pop("second_run_llm_calls"),
            touched_run_parser_calls=reingest.pop("touched_run_parser_calls"),
            touched_run_llm_calls=reingest.pop("touched_run_llm_calls"),
            ingestion=reingest,
        )
    return result


def _cache_table(results: List[Dict[str, Any]]) -> str:
    import pandas as pd

    rows = []
    for r in results:
        for name, key in (("RAG-Anything parse cache", "raganything"), ("ragopt ContentCache", "ragopt")):
            rows.append({
                "fraction": r["duplicate_fraction"],
                "cache": name,
                "requests": r["requests"],
                "hit rate": round(r[f"hit_rate_{key}"], 3),
                "hit rate max": round(r["hit_rate_max"], 3),
                "parser calls": r[f"parser_calls_{key}"],
                "wall s": round(r[f"wall_s_{key}"], 3),
            })
    return pd.DataFrame(rows).to_string(index=False)


def _ingest_table(results: List[Dict[str, Any]]) -> str:
    import pandas as pd

    rows = []
    for r in results:
        for label in ("first", "second", "touched"):
            figures = r.get("ingestion", {}).get(label)
            if figures:
                rows.append({"fraction": r["duplicate_fraction"], "ragopt run": label, **{
                    k: (round(v, 2) if isinstance(v, float) else v) for k, v in figures.items()}})
    return pd.DataFrame(rows).to_string(index=False)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default=None, help="simulator preset (default: RAGOPT_SIM_PRESET or 'default')")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5], help="duplicate fractions")
    parser.add_argument("--synthetic", type=int, default=0, help="add N synthetic documents to the sources")
    parser.add_argument("--no-sample", action="store_true", help="leave the committed sample out of the sources")
    parser.add_argument("--skip-ingest", action="store_true", help="only the side-by-side cache figures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch", default=None, help="folder for corpora, caches and working dirs (default: a temp dir)")
    args = parser.parse_args(argv)

    for name in ("lightrag", "raganything", "nano-vectordb"):
        logging.getLogger(name).setLevel(logging.WARNING)
    overrides = {"sim_preset": args.preset} if args.preset else {}
    config = RagoptConfig.from_env(**overrides)
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="ragopt-bench-cache-"))
    sources: List[Path] = [] if args.no_sample else corpus_files(SAMPLE_CORPUS)
    if args.synthetic:
        sources += synthetic_corpus(scratch / "synthetic-sources", args.synthetic, seed=args.seed)
    if not sources:
        parser.error("no sources: drop --no-sample or add --synthetic N")

    from ragopt.backends import make_backends

    backends = make_backends(config)
    results = []
    for fraction in args.fractions:
        results.append(bench_fraction(sources, fraction, scratch / f"fraction-{fraction:g}", config, args.seed,
                                      ingest=not args.skip_ingest, backends=backends))

    backend = backends.description
    print(f"sources: {len(sources)} files ({'' if args.no_sample else 'data/sample'}"
          f"{' + ' if args.synthetic and not args.no_sample else ''}{f'{args.synthetic} synthetic' if args.synthetic else ''})"
          f"  scratch: {scratch}")
    print("\nParse cache, side by side (pass 1: every file; touch originals; pass 2: touched originals):")
    print(_cache_table(results))
    if not args.skip_ingest:
        print("\nragopt ingestion into one working dir: first run, unchanged corpus again, after touching originals")
        print(f"LLM figures come from the {'SIMULATED LLM service' if backends.simulated else 'LLM endpoint'}: {backend}")
        print(_ingest_table(results))
    first = results[0]
    keys = ("hit_rate_ragopt", "hit_rate_raganything", "hit_rate_max", "second_run_parser_calls",
            "second_run_llm_calls", "touched_run_parser_calls", "touched_run_llm_calls")
    line = {
        **{key: first[key] for key in keys if key in first},
        "duplicate_fraction": first["duplicate_fraction"],
        "simulated_llm": backends.simulated,
        "llm_backend": backend,
        "fractions": {f"{r['duplicate_fraction']:g}": r for r in results},
    }
    print(json.dumps(line, default=str))
    return 0
