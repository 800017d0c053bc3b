"""Write-behind for LightRAG's vector storages: the last write of an id wins before it is embedded.

LightRAG re-upserts an entity's vector every time a document mentions the
entity, each time with its longer merged description, and embeds the text at
once, inside the merge's per-entity lock. A vector that the next merge
overwrites is never read. Here ``upsert`` only records the write and returns;
a background drain embeds and stores what is pending, one batch at a time.
Writes that arrive while a batch is being embedded wait for the next one, and
a newer write of the same id replaces the older, so the busier the embedder,
the larger the batches and the fewer superseded vectors it computes.

What the storage holds is unchanged: every read (get_by_id(s),
get_vectors_by_ids, delete_entity*, drop) and every flush
(``index_done_callback``, ``finalize``) drains first, and a delete is queued
in order with the writes. So a flush persists all writes made before it, as
before, and document status (flushed after the data) never runs ahead of it.

A vector search (``query``, which only queries make) drains first too unless
``queries_wait`` is off: then it searches the vectors stored so far, as a
query during LightRAG's own ingestion searches whatever the merges have
upserted, instead of waiting while the ingestion's whole backlog is embedded
(measured: most of a query's time under ingestion, ``ragopt bench --query``).
The versioned query cache counts a write when it reaches the storage, so an
answer computed without a pending write is never found after it is applied.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, Iterable, Optional

from ragopt.engine.registry import AFTER_INIT, Optimization, register_optimization

logger = logging.getLogger(__name__)

_DELETED = object()  # a queued delete of an id
_DRAINING_METHODS = (
    "get_by_id", "get_by_ids", "get_vectors_by_ids", "delete_entity", "delete_entity_relation",
    "index_done_callback", "finalize", "drop",
)


class VectorWriteBehind:
    """Pending vector writes of one storage, drained in batches; see the module docstring.

    ``stats`` counts ``writes`` (ids upserted by callers), ``embedded`` (ids
    actually embedded and stored), ``superseded`` (writes replaced before they
    were embedded), ``drains`` and ``drain_errors``.
    """

    def __init__(self, storage: Any, stats: Optional[Dict[str, int]] = None, queries_wait: bool = True):
        self.storage = storage
        self.queries_wait = queries_wait
        self.stats = {} if stats is None else stats
        for key in ("writes", "embedded", "superseded", "drains", "drain_errors"):
            self.stats.setdefault(key, 0)
        self._upsert = storage.upsert
        self._delete = storage.delete
        self._pending: Dict[str, Any] = {}
        self._queued = 0  # operations queued so far
        self._applied = 0  # of those, how many the storage has applied (or that a newer one replaced)
        self._lock = asyncio.Lock()
        self._background: Optional[asyncio.Task] = None

    def install(self) -> "VectorWriteBehind":
        """Route the storage's writes through this buffer and make its reads and flushes drain it."""
        self.storage.upsert = self.upsert
        self.storage.delete = self.delete
        for name in _DRAINING_METHODS + (("query",) if self.queries_wait else ()):
            original = getattr(self.storage, name, None)
            if original is not None:
                setattr(self.storage, name, self._draining(original))
        return self

    async def upsert(self, data: Dict[str, Dict[str, Any]]) -> None:
        self.stats["writes"] += len(data)
        self._queue(data.items())

    async def delete(self, ids: Iterable[str]) -> None:
        self._queue((id_, _DELETED) for id_ in ids)

    def _queue(self, operations: Iterable[tuple]) -> None:
        for id_, value in operations:
            previous = self._pending.pop(id_, None)
            if previous is not None and previous is not _DELETED:
                self.stats["superseded"] += 1
            self._pending[id_] = value
            self._queued += 1
        if self._background is None or self._background.done():
            self._background = asyncio.ensure_future(self._drain_in_background())

    async def drain(self) -> None:
        """Apply every operation queued before this call; raises what the storage raises.

        Writes queued meanwhile may wait for the next drain: a flush must not
        be held up by merges that keep writing.
        """
        await self._drain_until(self._queued)

    async def _drain_until(self, target: float) -> None:
        # The lock is taken per batch: asyncio.Lock is fair, so a flush waiting
        # for it goes before the background drain's next batch.
        while self._applied < target and (self._pending or self._lock.locked()):  # locked: a batch in flight
            async with self._lock:
                if self._applied >= target or not self._pending:
                    break
                batch, self._pending, covered = self._pending, {}, self._queued
                try:
                    await self._apply(batch)
                except BaseException:
                    # Put back what no newer operation replaced, so the next drain retries it.
                    self._pending = {**batch, **self._pending}
                    raise
                self._applied = covered

    async def _apply(self, batch: Dict[str, Any]) -> None:
        deleted = [id_ for id_, value in batch.items() if value is _DELETED]
        written = {id_: value for id_, value in batch.items() if value is not _DELETED}
        self.stats["drains"] += 1
        if deleted:  # one final operation per id, so deletes and writes of other ids commute
            await self._delete(deleted)
        if written:
            await self._upsert(written)
            self.stats["embedded"] += len(written)

    async def _drain_in_background(self) -> None:
        try:
            await self._drain_until(float("inf"))
        except Exception:
            # The writes stay pending; the next flush or read drains them again and raises there.
            self.stats["drain_errors"] += 1
            logger.warning("background vector write failed; retried at the next flush", exc_info=True)

    def _draining(self, method: Any) -> Any:
        async def drained_first(*args: Any, **kwargs: Any) -> Any:
            await self.drain()
            return await method(*args, **kwargs)

        return drained_first


def write_behind_vectors(lightrag: Any, stats: Optional[Dict[str, int]] = None, queries_wait: bool = True) -> list:
    """Install a ``VectorWriteBehind`` on each of LightRAG's vector storages (shared ``stats``)."""
    storages = (lightrag.entities_vdb, lightrag.relationships_vdb, lightrag.chunks_vdb)
    return [VectorWriteBehind(storage, stats, queries_wait).install() for storage in storages if storage is not None]


register_optimization(Optimization(
    name="write_behind_vectors",
    field="write_behind_vectors",
    summary="vector writes embedded in background batches; a newer write of a pending id replaces it",
    when=AFTER_INIT,
    install=lambda target: write_behind_vectors(target.rag.lightrag, target.stats,
                                                queries_wait=not target.config.queries_skip_vector_backlog),
    counts=("writes", "embedded", "superseded", "drains", "drain_errors"),
))
