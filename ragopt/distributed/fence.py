"""No write without the lease: every storage flush of a knowledge base first confirms its writer lock.

With LightRAG's file storages a flush (``index_done_callback``) is where data
reaches disk, so the writer confirms its lease (``WriterLock.renew``) right
before each one; a writer that lost it (its lease expired while it was cut off
from Redis, or another writer took over) raises ``LeaseLost`` instead of
writing. Concurrent flushes share one confirmation. This is a check before the
write, not a token the storage verifies: a writer paused for longer than its
lease between the check and the write could still write once.
"""

from __future__ import annotations

import asyncio
from typing import Any, Optional

from ragopt.distributed.lock import WriterLock


def fence_writes(rag: Any, lock: WriterLock) -> None:
    """Make every storage of ``rag`` (initialized) confirm ``lock`` before it flushes."""
    from lightrag.base import StorageNameSpace

    pending: Optional[asyncio.Future] = None

    async def confirm() -> None:
        nonlocal pending
        if pending is None or pending.done():
            pending = asyncio.ensure_future(asyncio.to_thread(lock.renew))
        await asyncio.shield(pending)

    def fenced(flush):
        async def fenced_flush(*args: Any, **kwargs: Any):
            await confirm()
            return await flush(*args, **kwargs)

        return fenced_flush

    holders = [vars(rag.lightrag), vars(rag)]
    storages = {id(s): s for h in holders for s in h.values() if isinstance(s, StorageNameSpace)}
    for storage in storages.values():
        storage.index_done_callback = fenced(storage.index_done_callback)
