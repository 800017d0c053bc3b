"""The knowledge bases one worker process writes to and answers from, on one event loop.

An ingest or query worker runs Celery's threads pool; its tasks hand their
coroutines to this host's event loop, so a query is answered by the same
process, on the same loop and the same RAGAnything, while that process ingests
(LightRAG serves queries ahead of extraction in its LLM queue). With LightRAG's
file storages no other process could: LightRAG rewrites the files in place and
never reloads them.

A knowledge base is open here while any batch or query uses it, and only
while this process holds its writer lock (``WriterLock``): opened from the
factory when the first user arrives, every flush fenced by the lease
(``fence_writes``), the lease kept from the moment the lock is taken (renewed
every third of its length by the lock's own thread), and closed
(flushed, then the lock released) when the last user leaves. One batch at a
time writes to it; a second batch, or any use while another process holds
it, gets ``KnowledgeBaseBusy`` naming the holder.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Set

import pandas as pd
from redis.exceptions import RedisError

from ragopt.cache.content_cache import ContentCache
from ragopt.cache.redis_store import redis_client
from ragopt.compat.raganything import ensure_initialized
from ragopt.distributed.executor import CeleryParseExecutor
from ragopt.distributed.factory import kb_root, load_factory
from ragopt.distributed.fence import fence_writes
from ragopt.distributed.job_store import JobStore
from ragopt.distributed.lock import LeaseLost, WriterLock, holder_of
from ragopt.distributed.progress import FileProgress
from ragopt.distributed.parse_task import transfer_for
from ragopt.distributed.transfer import TransferError
from ragopt.engine.orchestrator import aingest
from ragopt.engine.release import arelease_rag

log = logging.getLogger("ragopt.distributed")


def sources_folder(config: Any, kb: str) -> Path:
    """Where a knowledge base's submitted files are written, under their submitted relative paths."""
    return kb_root(config) / kb / "sources"

PROGRESS_EVERY_S = 0.25  # how often a batch writes file progress and looks for a cancel


class KnowledgeBaseBusy(RuntimeError):
    """The knowledge base is written by another batch or held by another process; try again later."""

    def __init__(self, kb: str, holder: Optional[str]):
        super().__init__(f"knowledge base {kb!r} is busy (writer: {holder or 'a batch of this process'})")
        self.kb, self.holder = kb, holder

    @property
    def node(self) -> Optional[str]:
        """The Celery node name of the holding process (its queries go to that node's own queue)."""
        return self.holder.split("|", 1)[0] if self.holder else None


class TaskTimeLimitError(RuntimeError):
    """A batch or query that passed its limit (the threads pool cannot interrupt it otherwise)."""


@dataclass
class _OpenKB:
    name: str
    rag: Any
    lock: WriterLock
    users: int = 0
    job: Optional[str] = None  # the job whose batch writes now
    lost: Optional[LeaseLost] = None
    batches: Set[asyncio.Task] = field(default_factory=set)


class KnowledgeBaseHost:
    """This process's open knowledge bases and the event loop they live on (one per worker process)."""

    def __init__(self, app: Any, node: str):
        self.app, self.config, self.node = app, app.ragopt_config, node
        self.holder = f"{node}|{os.getpid()}|{secrets.token_hex(4)}"
        self.client = redis_client(app.conf.broker_url)
        self.jobs = JobStore(self.client)
        self.transfer = transfer_for(app)
        self.factory = load_factory(self.config.rag_factory)
        self.executor = CeleryParseExecutor(app)
        self.cache = ContentCache.from_config(self.config)
        self._open: Dict[str, _OpenKB] = {}
        self._gates: Dict[str, asyncio.Lock] = {}
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="ragopt-kb-host", daemon=True).start()

    def run(self, coroutine: Any, limit_s: float, what: str) -> Any:
        """Run ``coroutine`` on the host's loop from a worker thread, for at most ``limit_s`` seconds."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(limit_s)
        except FutureTimeout:
            future.cancel()
            raise TaskTimeLimitError(f"{what} passed its limit of {limit_s:g} s") from None

    # -- opening and closing -------------------------------------------------

    async def _enter(self, kb: str, job: Optional[str] = None) -> _OpenKB:
        async with self._gates.setdefault(kb, asyncio.Lock()):
            open_kb = self._open.get(kb)
            if open_kb is None:
                open_kb = await self._open_kb(kb)
            if job is not None:
                if open_kb.job is not None:
                    raise KnowledgeBaseBusy(kb, None)
                open_kb.job = job
            open_kb.users += 1
            return open_kb

    async def _open_kb(self, kb: str) -> _OpenKB:
        lock = WriterLock(self.client, kb, self.holder, self.config.writer_lease_s)
        if await asyncio.to_thread(lock.acquire) is None:
            raise KnowledgeBaseBusy(kb, await asyncio.to_thread(holder_of, self.client, kb))
        open_kb = _OpenKB(kb, None, lock)
        # Kept from here on: building the RAG can outlast the lease (the first in a process imports LightRAG).
        lock.keep(lambda lost: self.loop.call_soon_threadsafe(self._lease_lost, open_kb, lost))
        try:
            open_kb.rag = self.factory(kb, self.config)
            await ensure_initialized(open_kb.rag)
            fence_writes(open_kb.rag, lock)
        except BaseException:
            await asyncio.to_thread(lock.release)
            raise
        self._open[kb] = open_kb
        log.info("knowledge base %s opened with writer token %s", kb, lock.token)
        return open_kb

    async def _leave(self, open_kb: _OpenKB, job: Optional[str] = None) -> None:
        async with self._gates[open_kb.name]:
            if job is not None:
                open_kb.job = None
            open_kb.users -= 1
            if open_kb.users == 0:
                await self._close(open_kb)

    async def _close(self, open_kb: _OpenKB) -> None:
        """Flush (under the lease) and release the knowledge base, then its lock."""
        del self._open[open_kb.name]
        try:
            await arelease_rag(open_kb.rag)
        except LeaseLost as lost:
            log.error("knowledge base %s closed without its last flush: %s", open_kb.name, lost)
        finally:
            await asyncio.to_thread(open_kb.lock.release)

    def _lease_lost(self, open_kb: _OpenKB, lost: LeaseLost) -> None:
        """Another writer may hold the knowledge base now: stop; each batch runs again under a new lease."""
        log.error("%s", lost)
        open_kb.lost = lost
        for batch in list(open_kb.batches):
            batch.cancel()

    # -- work ----------------------------------------------------------------

    async def answer(self, kb: str, question: str, mode: str) -> str:
        open_kb = await self._enter(kb)
        try:
            return await open_kb.rag.aquery(question, mode=mode)
        finally:
            await self._leave(open_kb)

    async def ingest_batch(self, job_id: str, index: int) -> Dict[str, Any]:
        """Batch ``index`` of job ``job_id`` into its knowledge base; returns the batch's counts."""
        job = await asyncio.to_thread(self.jobs.job, job_id)
        files = await asyncio.to_thread(self.jobs.files, job_id)
        indexes = [i for i in job["batches"][index] if files[i]["status"] == "pending"]
        cancelled = await asyncio.to_thread(self.jobs.cancel_requested, job_id)
        if cancelled or not indexes:  # not indexes: delivered again after its acknowledgement was lost
            return await self._finish(job, index, files, indexes, cancelled)
        open_kb = await self._enter(job["kb"], job_id)
        me = asyncio.current_task()
        open_kb.batches.add(me)
        try:
            return await self._ingest(open_kb, job, index, files, indexes)
        except asyncio.CancelledError:
            if open_kb.lost is not None:
                raise open_kb.lost from None
            raise
        finally:
            open_kb.batches.discard(me)
            await self._leave(open_kb, job_id)

    async def _ingest(self, open_kb: _OpenKB, job: dict, index: int, files: list, indexes: list) -> Dict[str, Any]:
        job_id = job["id"]
        started = await asyncio.to_thread(self.jobs.now)
        if job["state"] == "queued":
            await asyncio.to_thread(self.jobs.set, job_id, state="running", started=started)
        paths = await self._fetch_files(job, files, indexes)
        progress = FileProgress(paths, files)
        rag = open_kb.rag
        rag.callback_manager.register(progress)
        ingestion = asyncio.ensure_future(aingest(
            rag, list(paths), config=self.config, cache=self.cache, executor=self.executor,
            batch_timeout_s=job["batch_timeout_s"], progress=False,
        ))
        monitor = asyncio.ensure_future(self._follow(job_id, ingestion, progress))
        try:
            await asyncio.wait({ingestion})
        finally:
            monitor.cancel()
            if not ingestion.done():  # this batch was cancelled (lease lost, time limit): let the engine stop cleanly
                ingestion.cancel()
                await asyncio.gather(ingestion, return_exceptions=True)
            rag.callback_manager.unregister(progress)
        if open_kb.lost is not None:
            raise open_kb.lost  # whatever the engine made of it, the batch runs again under a new lease
        cancelled = ingestion.cancelled()
        if not cancelled:
            for row in ingestion.result().files.itertuples(index=False):
                progress.record(row.file, row.status, *(None if pd.isna(v) else v for v in (row.stage, row.error)))
        await asyncio.to_thread(self.jobs.update_files, job_id, progress.take())
        lock = open_kb.lock
        ended = await asyncio.to_thread(self.jobs.now)
        writer = {"token": lock.token, "node": self.node, "lease_checks": lock.checks, "reconnects": lock.reconnects,
                  "last_check": lock.confirmed_at}
        await asyncio.to_thread(self.jobs.log_batch, job_id, {"index": index, "started": started, "ended": ended, **writer})
        await asyncio.to_thread(self.jobs.set, job_id, writer=writer)
        return await self._finish(job, index, files, indexes, cancelled)

    async def _fetch_files(self, job: dict, files: list, indexes: list) -> Dict[str, int]:
        """The batch's files, written to ``sources_folder``; local path -> file index."""
        sources = sources_folder(self.config, job["kb"])
        paths = {}
        for i in indexes:
            target = sources / files[i]["file"]
            try:
                if not target.resolve().is_relative_to(sources.resolve()):  # a job record is only as safe as Redis
                    raise TransferError(f"{files[i]['file']}: not a path inside the knowledge base's sources")
                await asyncio.to_thread(self.transfer.download, files[i]["digest"], target, files[i]["file"])
            except TransferError as error:
                files[i] = {**files[i], "status": "failed", "stage": "transfer", "error": str(error)}
                await asyncio.to_thread(self.jobs.update_files, job["id"], {i: files[i]})
                continue
            paths[str(target)] = i
        return paths

    async def _follow(self, job_id: str, ingestion: asyncio.Future, progress: FileProgress) -> None:
        """Write file progress to Redis as it comes, and stop the batch when the job is cancelled."""
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            changed = progress.take()
            try:
                await asyncio.to_thread(self.jobs.update_files, job_id, changed)
                if await asyncio.to_thread(self.jobs.cancel_requested, job_id):
                    ingestion.cancel()  # the engine stops cleanly: what is done stays ingested
            except RedisError:  # out of reach for now: next round
                progress.changed = {**changed, **progress.changed}

    async def _finish(self, job: dict, index: int, files: list, indexes: list, cancelled: bool) -> Dict[str, Any]:
        """Mark what the batch left pending as cancelled (if it was), and end the job after its last batch."""
        if cancelled:
            left = {i: {**files[i], "status": "cancelled", "stage": "cancel", "error": "the job was cancelled"}
                    for i in indexes if files[i]["status"] == "pending"}
            files = [left.get(i, row) for i, row in enumerate(files)]
            await asyncio.to_thread(self.jobs.update_files, job["id"], left)
        if index == len(job["batches"]) - 1:
            state = "cancelled" if any(r["status"] == "cancelled" for r in files) else "done"
            await asyncio.to_thread(self.jobs.set, job["id"], state=state, finished=await asyncio.to_thread(self.jobs.now))
        counts: Dict[str, int] = {}
        for i in job["batches"][index]:
            counts[files[i]["status"]] = counts.get(files[i]["status"], 0) + 1
        return {"job": job["id"], "batch": index, **counts}

