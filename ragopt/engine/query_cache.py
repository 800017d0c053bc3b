"""Cached query answers that cannot be stale: their cache key includes the knowledge base's version.

LightRAG keys a cached answer by the question and the query settings, not by
what the knowledge base held (lightrag.operate.kg_query, naive_query), so
after an ingest the same question returns the answer from before it.
Here every write to a data storage (before and after it) moves the
knowledge base's version on, a query takes the version it started at into
the key, and a query that starts while a write is in progress neither looks
up nor saves an answer. So an answer is only ever found by a query that
started with exactly the data it was computed from (or newer). The version
is this process's own (a random generation and a count of writes): answers
cached by another process are not reused. The same holds for RAG-Anything's
multimodal query cache.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import uuid
from typing import Any, Callable, Dict, Optional

from ragopt.compat.lightrag import data_storages
from ragopt.compat.queries import around_queries, rekey_multimodal_queries, rekey_query_answers
from ragopt.engine.registry import AFTER_INIT, Optimization, Target, register_optimization

# Methods through which LightRAG and RAG-Anything change a storage's data.
WRITE_METHODS = ("upsert", "delete", "drop", "delete_entity", "delete_entity_relation", "upsert_node", "upsert_edge",
                 "delete_node", "remove_nodes", "remove_edges")


def _digest(*parts: str) -> str:
    return hashlib.md5(":".join(parts).encode()).hexdigest()


class KnowledgeBaseVersion:
    """The version of one LightRAG's data: it moves on at the start and the end of every write."""

    def __init__(self, stats: Optional[Dict[str, int]] = None):
        self.generation = uuid.uuid4().hex[:12]
        self.changes = 0
        self.writing = 0
        self.stats = {} if stats is None else stats
        self._at_start: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("ragopt_kb_version", default=None)

    def current(self) -> Optional[str]:
        """None while a write is in progress: no answer may be cached or found then."""
        return None if self.writing else f"{self.generation}:{self.changes}"

    def watch(self, storage: Any) -> None:
        for name in WRITE_METHODS:
            method = getattr(storage, name, None)
            if callable(method):
                setattr(storage, name, self._writing(method))

    def _writing(self, method: Callable) -> Callable:
        @functools.wraps(method)
        async def written(*args: Any, **kwargs: Any):
            self.changes += 1
            self.writing += 1
            try:
                return await method(*args, **kwargs)
            finally:
                self.writing -= 1
                self.changes += 1
                self.stats["writes"] = self.stats.get("writes", 0) + 1

        return written

    def around(self, aquery_llm: Callable) -> Callable:
        """The query remembers the version it started at (in its task's context)."""

        @functools.wraps(aquery_llm)
        async def versioned_query(*args: Any, **kwargs: Any):
            version = self.current()
            if version is None:
                self.stats["uncached_queries"] = self.stats.get("uncached_queries", 0) + 1
            token = self._at_start.set(version)
            try:
                return await aquery_llm(*args, **kwargs)
            finally:
                self._at_start.reset(token)

        return versioned_query

    def answer_key(self, args_hash: str) -> Optional[str]:
        version = self._at_start.get()
        return None if version is None else _digest(args_hash, version)

    def multimodal_key(self, key: str) -> str:
        # Its key is made at the query's start; during a write, one no later query can find.
        version = self.current() or f"writing:{uuid.uuid4().hex}"
        prefix, _, digest = key.rpartition(":")
        return f"{prefix}:{_digest(digest, version)}"


def version_query_cache(rag: Any, stats: Optional[Dict[str, int]] = None) -> KnowledgeBaseVersion:
    """Key ``rag``'s cached query answers (LightRAG's and RAG-Anything's multimodal ones) by the knowledge base's version."""
    lightrag = rag.lightrag
    version = KnowledgeBaseVersion(stats)
    for storage in [*data_storages(lightrag), lightrag.doc_status]:
        if storage is not lightrag.llm_response_cache:  # the cache itself: queries write it
            version.watch(storage)
    around_queries(lightrag, version.around)
    rekey_query_answers(lightrag.llm_response_cache, version.answer_key)
    rekey_multimodal_queries(rag, version.multimodal_key)
    rag.ragopt_kb_version = version
    return version


def _install(target: Target) -> None:
    version_query_cache(target.rag, target.stats)


register_optimization(Optimization(
    name="versioned_query_cache",
    field="versioned_query_cache",
    summary="cached query answers are keyed by the knowledge base's version, so an ingest can never leave one stale",
    when=AFTER_INIT,
    install=_install,
    counts=("writes", "uncached_queries"),
    # Given explicitly, so the ingestion ablation leaves it out: it acts on queries (measured by bench_query).
    enabled=lambda config: bool(config.versioned_query_cache),
))
