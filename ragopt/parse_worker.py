"""What a parse process runs: one file through the parse cache and the offline parser.

Kept to the parser and the cache, so a freshly spawned worker starts in a
fraction of a second instead of importing RAG-Anything, LightRAG and pandas.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Tuple

from ragopt.backends import parser as offline_parser
from ragopt.cache import ContentCache
from ragopt.heap import trim_free_heap

TRIM_AT_FREE_MB = 16


def parse_through_cache(path: str, output_dir: str, cache: ContentCache) -> Tuple[List[dict], bool, float, Dict[str, Any]]:
    """(content_list, cache hit, seconds, this call's cache stats) for one file."""
    start = time.perf_counter()
    misses_before = cache.stats()["misses"]
    content = cache.get_or_parse(
        path, offline_parser.parse_file, offline_parser.PARSER_NAME, offline_parser.PARSER_VERSION, output_dir=output_dir
    )
    hit = cache.stats()["misses"] == misses_before
    trim_free_heap(TRIM_AT_FREE_MB)
    return content, hit, time.perf_counter() - start, cache.stats()
