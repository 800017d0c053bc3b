"""Every touch of LightRAG 1.4.16's and RAG-Anything 1.4.3's query internals, one function each.

Each function says what it relies on; ``tests/compat/test_pins.py`` pins it.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Callable, Dict, Optional

QUERY_CACHE_TYPE = "query"  # kg_query's and naive_query's answers; keywords are cache_type "keywords"

# id(llm_response_cache) -> rekey(args_hash) for the storages whose query keys are rekeyed
_rekeys: Dict[int, Callable[[str], Optional[str]]] = {}


def rekey_query_answers(llm_response_cache: Any, rekey: Callable[[str], Optional[str]]) -> None:
    """Look up and save LightRAG's cached query answers held in ``llm_response_cache`` under ``rekey(args_hash)``;
    where it returns None, neither look up nor save.

    Relies on ``lightrag.operate`` calling its module globals
    ``handle_cache(hashing_kv, args_hash, prompt, mode, cache_type)`` and
    ``save_to_cache(hashing_kv, CacheData)`` with ``cache_type="query"`` in
    ``kg_query`` and ``naive_query``, looked up at call time; extraction and
    summaries go through ``lightrag.utils``' own ``handle_cache``, untouched.
    The two globals are replaced once per process; other storages keep
    LightRAG's keys.
    """
    import lightrag.operate as operate

    _rekeys[id(llm_response_cache)] = rekey
    weakref.finalize(llm_response_cache, _rekeys.pop, id(llm_response_cache), None)
    if getattr(operate.handle_cache, "ragopt_rekeyed", False):
        return
    lookup, save = operate.handle_cache, operate.save_to_cache

    async def rekeyed_lookup(hashing_kv, args_hash, prompt, mode="default", cache_type="unknown"):
        rekey_for = _rekeys.get(id(hashing_kv)) if cache_type == QUERY_CACHE_TYPE else None
        if rekey_for is not None:
            args_hash = rekey_for(args_hash)
            if args_hash is None:
                return None
        return await lookup(hashing_kv, args_hash, prompt, mode, cache_type)

    async def rekeyed_save(hashing_kv, cache_data):
        rekey_for = _rekeys.get(id(hashing_kv)) if cache_data.cache_type == QUERY_CACHE_TYPE else None
        if rekey_for is not None:
            args_hash = rekey_for(cache_data.args_hash)
            if args_hash is None:
                return None
            cache_data = dataclasses.replace(cache_data, args_hash=args_hash)
        return await save(hashing_kv, cache_data)

    rekeyed_lookup.ragopt_rekeyed = True
    operate.handle_cache, operate.save_to_cache = rekeyed_lookup, rekeyed_save


def around_queries(lightrag: Any, around: Callable[[Callable], Callable]) -> None:
    """Run every query of ``lightrag`` through ``around(aquery_llm)``: its start and end, in the query's own task.

    Relies on ``LightRAG.aquery(query, param, system_prompt)`` calling
    ``self.aquery_llm`` (looked up on the instance) for its whole work.
    """
    lightrag.aquery_llm = around(lightrag.aquery_llm)


def rekey_multimodal_queries(rag: Any, rekey: Callable[[str], str]) -> None:
    """Key RAG-Anything's cached multimodal query answers by ``rekey(key)``.

    Relies on ``QueryMixin.aquery_with_multimodal`` taking its cache key from
    ``self._generate_multimodal_cache_key(query, multimodal_content, mode,
    **kwargs)`` (looked up on the instance), once, before retrieval.
    """
    generate = rag._generate_multimodal_cache_key

    def rekeyed(query: str, multimodal_content: Any, mode: str, **kwargs: Any) -> str:
        return rekey(generate(query, multimodal_content, mode, **kwargs))

    rag._generate_multimodal_cache_key = rekeyed
