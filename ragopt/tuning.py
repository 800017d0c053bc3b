"""LightRAG's knobs from one concurrency setting, and coalesced storage flushes."""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Dict


def lightrag_settings(llm_slots: int, embedding_batch: int = 64) -> Dict[str, Any]:
    """LightRAG settings that keep ``llm_slots`` LLM requests in flight.

    - ``llm_model_max_async = llm_slots``: LightRAG's own LLM queue admits as
      many requests as the service has slots; more would only queue there.
    - ``max_parallel_insert = 4 * llm_slots``: LightRAG holds a document's insert
      slot through its merge phase, when it makes few LLM calls. With four
      documents per LLM slot, the documents still extracting keep every slot
      busy while others merge.
    - ``embedding_func_max_async = 8 * llm_slots``: merges embed one entity or
      relation per call; letting many wait at once is what lets the
      micro-batcher send them as one batch.
    - ``embedding_batch_num = embedding_batch``: texts per call where LightRAG
      batches itself (chunks).
    """
    return {
        "llm_model_max_async": llm_slots,
        "max_parallel_insert": 4 * llm_slots,
        "embedding_func_max_async": 8 * llm_slots,
        "embedding_batch_num": embedding_batch,
    }


def coalesce_flushes(lightrag: Any, stats: Dict[str, int] | None = None) -> None:
    """Make concurrent ``_insert_done`` calls share flushes, with the same durability.

    LightRAG flushes every storage in full after each document. Here a call
    still returns only after a flush that began after the call was made has
    finished, so whatever the caller wrote is on disk when it returns, exactly
    as before; but all callers that arrive while a flush is running share the
    next one. Document status is written after the data it describes, so a
    crash never leaves a document marked processed without its data.
    """
    stats = {} if stats is None else stats
    state: Dict[str, Any] = {"running": None, "next": None}
    storages = [
        lightrag.full_docs, lightrag.text_chunks, lightrag.full_entities, lightrag.full_relations,
        lightrag.entity_chunks, lightrag.relation_chunks, lightrag.llm_response_cache,
        lightrag.entities_vdb, lightrag.relationships_vdb, lightrag.chunks_vdb,
        lightrag.chunk_entity_relation_graph,
    ]
    storages = [s for s in storages if s is not None]

    async def flush_all() -> None:
        stats["flushes"] = stats.get("flushes", 0) + 1
        await asyncio.gather(*(s.index_done_callback() for s in storages))
        await lightrag.doc_status.index_done_callback()

    async def run_after(previous: "asyncio.Future | None") -> None:
        if previous is not None:
            await asyncio.wait({previous})  # its outcome is its own callers' business
        state["next"] = None
        state["running"] = asyncio.current_task()
        try:
            await flush_all()
        finally:
            state["running"] = None

    async def coalesced_insert_done(*_: Any, **__: Any) -> None:
        stats["requests"] = stats.get("requests", 0) + 1
        if state["next"] is None:
            state["next"] = asyncio.ensure_future(run_after(state["running"]))
        await asyncio.shield(state["next"])

    lightrag._insert_done = coalesced_insert_done


GLEAN_PRIORITY = 9  # LightRAG's queue: summaries 8, extraction 10 (lower goes first)


def prioritize_gleaning(lightrag: Any) -> None:
    """Serve a chunk's gleaning call before new extraction calls in LightRAG's LLM queue.

    LightRAG queues every chunk's extract call as soon as its document starts,
    and the gleaning call (the same chunk's follow-up, with the extract
    exchange as history) joins the back of the queue. With many documents in
    flight, no document finishes extracting until nearly every extract call is
    done, so the merge phase (embedding, CPU) only starts after the LLM work and
    the two run one after the other. Gleans first finish the documents already
    started, so merges overlap the remaining extraction. Same calls, same prompts.
    """
    queued = lightrag.llm_model_func

    @functools.wraps(queued)  # keeps its ``shutdown`` (ragopt.memory.release_rag stops the queue's workers)
    async def gleans_first(*args: Any, **kwargs: Any):
        if kwargs.get("history_messages") and "_priority" not in kwargs:
            kwargs["_priority"] = GLEAN_PRIORITY
        return await queued(*args, **kwargs)

    lightrag.llm_model_func = gleans_first
