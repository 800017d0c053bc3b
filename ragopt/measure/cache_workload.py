"""The parse requests of a duplicate workload through both parse caches, side by side.

ragopt's ``ContentCache`` (keyed on the file's bytes, the parser and its
result-changing options) and RAG-Anything's own parse cache (keyed on path,
mtime and options, through ``rag.parse_document`` on one RAGAnything) see
the same requests in the same order. Per request: whether any cache keyed on
content alone could hit (a file with the same bytes was requested before),
whether each cache hit, whether each one's parser really ran, and its time.
No LLM is involved.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pandas as pd

from ragopt.aio import run_sync
from ragopt.backends import parser as offline_parser
from ragopt.cache.content_cache import ContentCache, file_sha256
from ragopt.config import RagoptConfig
from ragopt.measure.workloads import touch_originals

PASSES = ("1. folder with renames and copies", "2. touched files again", "3. unchanged rerun")
CACHES = {"ragopt ContentCache": "ragopt", "RAG-Anything parse cache": "raganything"}


@contextlib.contextmanager
def count_parser_calls() -> Iterator[Dict[str, int]]:
    """Count calls of the offline parser's ``parse_file`` (every entry point of it ends there)."""
    original = offline_parser.parse_file
    counter = {"calls": 0}

    def counted(*args: Any, **kwargs: Any):
        counter["calls"] += 1
        return original(*args, **kwargs)

    offline_parser.parse_file = counted
    try:
        yield counter
    finally:
        offline_parser.parse_file = original


def cache_requests(manifest: dict, work_dir: str | Path, config: RagoptConfig, rerun: bool = True,
                   backends: Any = None) -> pd.DataFrame:
    """Pass 1 (every file), touch the originals, pass 2 (the touched ones), and with ``rerun`` pass 3
    (every file again, unchanged); one row per request and cache outcome."""
    from ragopt.compat.raganything import ensure_initialized, wrap_parse_cache_lookup
    from ragopt.engine.build import build_rag
    from ragopt.engine.release import arelease_rag

    work_dir = Path(work_dir)
    cache = ContentCache(work_dir / "ragopt-parse-cache")
    rag = build_rag(config, work_dir / "raganything", backends)
    lookups = {"hits": 0}

    def counting(lookup):
        async def counted(*args: Any, **kwargs: Any):
            result = await lookup(*args, **kwargs)
            lookups["hits"] += result is not None
            return result

        return counted

    kind_of = {row["path"]: row["kind"] for row in manifest["duplicates"] if row["kind"] != "touched"}
    passes = [lambda: manifest["passes"][0], lambda: (touch_originals(manifest), manifest["passes"][1])[1]]
    if rerun:
        passes.append(lambda: manifest["files"])

    async def run() -> List[Dict[str, Any]]:
        await ensure_initialized(rag)  # as RAG-Anything's entry points do; creates its parse cache
        wrap_parse_cache_lookup(rag, counting)
        seen, rows = set(), []
        try:
            with count_parser_calls() as parser:
                for name, requests in zip(PASSES, passes):
                    for path in map(Path, requests()):
                        digest = file_sha256(path)
                        row = {"pass": name, "file": path.relative_to(manifest["out_dir"]).as_posix(),
                               "kind": "touched" if name.startswith("2.") else kind_of.get(str(path), "original"),
                               "can_hit": digest in seen}
                        calls, hits, started = parser["calls"], cache.hits, time.perf_counter()
                        cache.get_or_parse(path, offline_parser.parse_file, offline_parser.PARSER_NAME,
                                           offline_parser.PARSER_VERSION, output_dir=str(work_dir / "parsed"))
                        row.update(ragopt_hit=cache.hits > hits, ragopt_parsed=parser["calls"] > calls,
                                   ragopt_s=time.perf_counter() - started)
                        calls, hits, started = parser["calls"], lookups["hits"], time.perf_counter()
                        await rag.parse_document(str(path), output_dir=rag.config.parser_output_dir,
                                                 parse_method=rag.config.parse_method, display_stats=False)
                        row.update(raganything_hit=lookups["hits"] > hits, raganything_parsed=parser["calls"] > calls,
                                   raganything_s=time.perf_counter() - started)
                        rows.append(row)
                        seen.add(digest)
        finally:
            await arelease_rag(rag)
        return rows

    frame = pd.DataFrame(run_sync(run()))
    frame.attrs["ragopt_cache_stats"] = cache.stats()
    return frame


def hit_rates_by_pass(requests: pd.DataFrame) -> pd.DataFrame:
    """Per pass: lookups, the theoretical maximum hit rate, each cache's hit rate and parser calls."""
    per_pass = requests.groupby("pass", sort=False)
    return pd.DataFrame({
        "lookups": per_pass.size(),
        "theoretical max": per_pass["can_hit"].mean(),
        "ragopt ContentCache": per_pass["ragopt_hit"].mean(),
        "RAG-Anything parse cache": per_pass["raganything_hit"].mean(),
        "ragopt parser calls": per_pass["ragopt_parsed"].sum(),
        "RAG-Anything parser calls": per_pass["raganything_parsed"].sum(),
        "new contents (minimum parses)": per_pass.size() - per_pass["can_hit"].sum(),
    }).reset_index()


def cache_figures(requests: pd.DataFrame, cache: str) -> Dict[str, Any]:
    """One cache's totals over ``requests``: hits, misses, hit rate, parser calls, seconds."""
    key = CACHES[cache]
    hits = int(requests[f"{key}_hit"].sum())
    return {
        "requests": len(requests),
        "hits": hits,
        "misses": len(requests) - hits,
        "hit_rate": hits / len(requests) if len(requests) else 0.0,
        "parser_calls": int(requests[f"{key}_parsed"].sum()),
        "wall_s": float(requests[f"{key}_s"].sum()),
    }
