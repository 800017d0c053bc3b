"""Coalesced storage flushes: concurrent end-of-document flushes share one, with the same durability."""

from __future__ import annotations

import asyncio
from typing import Any, Dict

from ragopt.compat.lightrag import data_storages, replace_flush_all
from ragopt.engine.registry import AFTER_INIT, Optimization, register_optimization


def coalesce_flushes(lightrag: Any, stats: Dict[str, int] | None = None) -> None:
    """Make concurrent end-of-document flushes of LightRAG share flushes.

    LightRAG flushes every storage in full after each document. Here a call
    still returns only after a flush that began after the call was made has
    finished, so whatever the caller wrote is on disk when it returns, exactly
    as before; but all callers that arrive while a flush is running share the
    next one. Document status is written after the data it describes, so a
    crash never leaves a document marked processed without its data.
    """
    stats = {} if stats is None else stats
    state: Dict[str, Any] = {"running": None, "next": None}
    storages = data_storages(lightrag)

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

    async def coalesced_flush(*_: Any, **__: Any) -> None:
        stats["requests"] = stats.get("requests", 0) + 1
        if state["next"] is None:
            state["next"] = asyncio.ensure_future(run_after(state["running"]))
        await asyncio.shield(state["next"])

    replace_flush_all(lightrag, coalesced_flush)


register_optimization(Optimization(
    name="coalesce_flushes",
    field="coalesce_flushes",
    summary="end-of-document flushes that overlap share one full flush; status still written after data",
    when=AFTER_INIT,
    install=lambda target: coalesce_flushes(target.rag.lightrag, target.stats),
    counts=("requests", "flushes"),
))
