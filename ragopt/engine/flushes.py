"""Coalesced storage flushes: concurrent end-of-document flushes share one, with the same durability.

Inside an ingest call, document-status writes also wait for the next full
flush (``status_writes_deferred``): LightRAG's JSON status store rewrites its
whole file at every status change, so as the knowledge base grows these
rewrites take a growing share of the CPU (1,000 synthetic documents, fast
preset: 7,707 rewrites of the status file, 766 s of a 1,606 s run; with this,
1,391 and 276 s of 1,486 s). Two kinds of status write still go at once: one
that adds chunk ids to a document's ``chunks_list`` (the record
``ragopt.engine.repair`` reads to find what a killed run may have merged, so
it must reach disk before that data can), and any outside an ingest call, as
shipped. The ingest call ends with a full flush, and ragopt's in-flight
journal covers a kill before it. Other stores' own flushes stay as they are:
LightRAG's start-up consistency check deletes a processing document's status
record when its text is not in ``full_docs``, so that store's early flush is
load-bearing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import Any, Dict, Iterator

from ragopt.compat.lightrag import data_storages, replace_flush_all
from ragopt.engine.registry import AFTER_INIT, Optimization, register_optimization

# True in an ingest call and the tasks it starts; a full flush sets it False for its own writes.
_deferring = contextvars.ContextVar("ragopt_status_writes_deferred", default=False)


@contextlib.contextmanager
def status_writes_deferred() -> Iterator[None]:
    """Within this block (and tasks started in it) a status write waits for the next full flush."""
    token = _deferring.set(True)
    try:
        yield
    finally:
        _deferring.reset(token)


async def _adds_chunks(doc_status: Any, data: Dict[str, Dict[str, Any]]) -> bool:
    """Whether writing ``data`` adds a chunk id to a record's ``chunks_list``."""
    before = await doc_status.get_by_ids(list(data))
    return any(set(new.get("chunks_list") or ()) - set((old or {}).get("chunks_list") or ())
               for new, old in zip(data.values(), before))


def _defer_own_flushes(storage: Any, stats: Dict[str, int]) -> None:
    """Make ``storage.index_done_callback`` a no-op where flushes are deferred: what it would
    write stays pending in the storage (its update flag stays set) for the next full flush,
    which calls the storage's flush from a context where nothing is deferred."""
    flush = storage.index_done_callback

    async def flush_unless_deferred(*args: Any, **kwargs: Any) -> None:
        if _deferring.get():
            stats["deferred"] = stats.get("deferred", 0) + 1
            return
        await flush(*args, **kwargs)

    storage.index_done_callback = flush_unless_deferred


def _write_chunk_lists_at_once(doc_status: Any) -> None:
    """Make a status write that adds chunk ids flush at once, also where flushes are deferred."""
    upsert = doc_status.upsert

    async def upsert_chunk_lists_at_once(data: Dict[str, Dict[str, Any]]) -> Any:
        if not (_deferring.get() and await _adds_chunks(doc_status, data)):
            return await upsert(data)
        token = _deferring.set(False)
        try:
            return await upsert(data)  # LightRAG's JSON status store flushes inside upsert
        finally:
            _deferring.reset(token)

    doc_status.upsert = upsert_chunk_lists_at_once


def coalesce_flushes(lightrag: Any, stats: Dict[str, int] | None = None) -> None:
    """Make concurrent end-of-document flushes of LightRAG share flushes.

    LightRAG flushes every storage in full after each document. Here a call
    still returns only after a flush that began after the call was made has
    finished, so whatever the caller wrote is on disk when it returns, exactly
    as before; but all callers that arrive while a flush is running share the
    next one. Document status is written after the data it describes, so a
    crash never leaves a document marked processed without its data. In an
    ingest call status writes wait for the next full flush (module docstring).
    """
    stats = {} if stats is None else stats
    state: Dict[str, Any] = {"running": None, "next": None}
    storages = data_storages(lightrag)
    _defer_own_flushes(lightrag.doc_status, stats)
    _write_chunk_lists_at_once(lightrag.doc_status)

    async def flush_all() -> None:
        stats["flushes"] = stats.get("flushes", 0) + 1
        _deferring.set(False)  # this task's own context: the writes below are the full flush
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

    async def coalesced_flush(*_: Any, **__: Any) -> None:
        stats["requests"] = stats.get("requests", 0) + 1
        if state["next"] is None:
            state["next"] = asyncio.ensure_future(run_after(state["running"]))
        await asyncio.shield(state["next"])

    replace_flush_all(lightrag, coalesced_flush)


register_optimization(Optimization(
    name="coalesce_flushes",
    field="coalesce_flushes",
    summary="end-of-document flushes that overlap share one full flush, and status writes in an ingest "
            "call wait for it (new chunk lists go at once); status still written after data",
    when=AFTER_INIT,
    install=lambda target: coalesce_flushes(target.rag.lightrag, target.stats),
    counts=("requests", "flushes", "deferred"),
))
