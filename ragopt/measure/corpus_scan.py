"""A cheap scan of a whole corpus: what each document holds, before any LLM call.

Each file is parsed with the parser ``ingest`` would use, through the parse
cache (so a later ingest of the corpus finds every parse there), and its
text is chunked as LightRAG will chunk it: one row per document with its
format, bytes, pages, text tokens, chunks, chunk tokens and its image, table
and equation blocks, and the parse seconds it took (or took when it was
cached). These are the units the planner's fit counts calls and tokens by.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import pandas as pd

from ragopt.cache.content_cache import ContentCache, file_sha256
from ragopt.config import RagoptConfig

SCAN_COLUMNS = ["file", "format", "bytes", "pages", "text_tokens", "text_chunks", "chunk_tokens", "images", "tables",
                "equations", "modal_items", "parse_s", "cache_hit", "error"]
MODAL_TYPES = ("image", "table", "equation")


def chunk_settings() -> Dict[str, int]:
    """LightRAG's chunk size and overlap in tokens, as its dataclass defaults them (CHUNK_SIZE, CHUNK_OVERLAP_SIZE)."""
    from ragopt.compat.lightrag import lightrag_default

    return {name: int(lightrag_default(name)) for name in ("chunk_token_size", "chunk_overlap_token_size")}


def describe(path: Path, content: List[dict], settings: Dict[str, int]) -> Dict[str, Any]:
    """One scan row from a parsed content list: the text chunked as LightRAG chunks it, and the modal blocks."""
    from lightrag.operate import chunking_by_token_size
    from raganything.utils import separate_content_with_page_map

    from ragopt.backends.tokenizer import offline_tokenizer

    text, items, _ = separate_content_with_page_map(content)
    tokenizer = offline_tokenizer()
    chunks = chunking_by_token_size(tokenizer, text.strip(), None, False, settings["chunk_overlap_token_size"],
                                    settings["chunk_token_size"]) if text.strip() else []
    kinds = [item.get("type") for item in items]
    pages = {item.get("page_idx") for item in content if item.get("page_idx") is not None}
    counts = {f"{kind}s": kinds.count(kind) for kind in MODAL_TYPES}
    return {
        "text_tokens": len(tokenizer.encode(text)) if text else 0,
        "text_chunks": len(chunks),
        "chunk_tokens": sum(c["tokens"] for c in chunks),
        **counts,
        "modal_items": sum(counts.values()),
        "pages": len(pages) or None,
    }


async def ascan(paths: List[Path], config: Optional[RagoptConfig] = None, cache: Optional[ContentCache] = None,
                workers: Optional[int] = None, output_dir: Optional[Path] = None) -> pd.DataFrame:
    """Parse every file (through ``cache``, default the config's parse cache) and describe it; one row per file.

    A file that fails to parse is a row with its ``error``, and counts nothing.
    """
    from ragopt.engine.build import build_rag
    from ragopt.engine.parse_pool import LocalParseExecutor, parser_spec
    from ragopt.engine.release import arelease_rag

    config = config or RagoptConfig.from_env()
    cache = cache if cache is not None else ContentCache.from_config(config)
    output_dir = Path(output_dir or tempfile.mkdtemp(prefix="ragopt-scan-"))
    rag = build_rag(config, output_dir / "rag")  # only for its parser, named as ingest names it (the cache key)
    spec = parser_spec(rag)
    await arelease_rag(rag)
    settings = chunk_settings()
    executor = LocalParseExecutor(workers or config.worker_pool_size)

    async def one(path: Path) -> Dict[str, Any]:
        row: Dict[str, Any] = {"file": str(path), "format": path.suffix.lower().lstrip("."), "bytes": path.stat().st_size}
        try:
            digest = await asyncio.to_thread(file_sha256, path)
            content, hit, seconds, stats = await executor.parse(str(path), digest, str(output_dir / "parsed"), cache, spec)
        except Exception as error:  # one unreadable file must not stop the scan
            return {**row, "error": f"{type(error).__name__}: {error}"}
        # A hit took no time now: the parse seconds are those it took when it was cached.
        parse_s = stats.get("parse_seconds_saved", 0.0) if hit else seconds
        return {**row, **describe(path, content, settings), "parse_s": parse_s, "cache_hit": hit}

    try:
        rows = await asyncio.gather(*(one(Path(p)) for p in paths))
    finally:
        executor.idle()
    frame = pd.DataFrame(rows, columns=SCAN_COLUMNS)
    counts = ["text_tokens", "text_chunks", "chunk_tokens", "images", "tables", "equations", "modal_items"]
    frame[counts] = frame[counts].fillna(0).astype(int)
    return frame
