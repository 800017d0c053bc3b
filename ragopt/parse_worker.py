"""What a parse process runs: one file through the parse cache and the offline parser.

Kept to the parser and the cache, so a freshly spawned worker starts in a
fraction of a second instead of importing RAG-Anything, LightRAG and pandas.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Dict, List, Tuple

from ragopt.backends import parser as offline_parser
from ragopt.cache import ContentCache
from ragopt.heap import trim_free_heap


def _collect_garbage() -> None:
    """Free this file's reference cycles now, then malloc's freed memory.

    python-docx leaves each document in reference cycles that hold its lxml
    tree: C memory the collector does not weigh, so the cycles wait for a
    rare full collection and a worker grew by ~0.2 MB per file. After the
    first file, what is alive (modules, the parser's imports) is frozen out
    of the collector, so each later collection scans only the new objects
    (under 5 ms instead of ~30).
    """
    gc.collect()
    if not gc.get_freeze_count():
        gc.freeze()
    trim_free_heap()


def parse_through_cache(path: str, output_dir: str, cache: ContentCache) -> Tuple[List[dict], bool, float, Dict[str, Any]]:
    """(content_list, cache hit, seconds, this call's cache stats) for one file."""
    start = time.perf_counter()
    misses_before = cache.stats()["misses"]
    content = cache.get_or_parse(
        path, offline_parser.parse_file, offline_parser.PARSER_NAME, offline_parser.PARSER_VERSION, output_dir=output_dir
    )
    hit = cache.stats()["misses"] == misses_before
    _collect_garbage()
    return content, hit, time.perf_counter() - start, cache.stats()
