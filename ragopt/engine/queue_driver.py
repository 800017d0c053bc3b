"""Driving LightRAG's document queue: one pipeline run for all queued text.

Calling ``insert_content_list`` concurrently makes LightRAG process documents
in waves with a barrier between them; here each document's text is queued
(``apipeline_enqueue_documents``) as soon as it is parsed, and one run
(``apipeline_process_enqueue_documents``) processes everything queued. The
first run starts once enough documents are queued to fill the LLM slots, or
once every document of the batch is queued or cannot be; calling LightRAG's
run while one is busy only asks it to come back for the newly queued
documents when its current batch ends.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, List, Optional, Tuple

from ragopt.compat.lightrag import flush_all, pipeline_status

STATUS_POLL_S = 0.05


class LightRAGQueue:
    """The queue driver of one ingestion: waiters per document, the pipeline runs, the status poll.

    ``all_queued()`` tells whether every document of the batch has queued its
    text or cannot (the engine knows); ``on_poll`` runs after each poll (the
    progress bar).
    """

    def __init__(self, lightrag: Any, start_after: int, all_queued: Callable[[], bool],
                 on_poll: Callable[[], None] = lambda: None):
        self.lightrag = lightrag
        self.start_after = start_after
        self.all_queued = all_queued
        self.on_poll = on_poll
        self.waiting: Dict[str, Tuple[asyncio.Future, Optional[str]]] = {}
        self.queued_ids: set = set()  # whose record exists (queued here, or left by a previous run)
        self.started = False
        self.tasks: List[asyncio.Task] = []
        self.chunks_done = 0

    async def process_text(self, doc_id: str, text: str, file_ref: str, previous: Optional[dict],
                           queued: Callable[[], None]) -> Optional[str]:
        """Queue the text (unless a previous run did) and wait until LightRAG has processed it.

        A record left by a previous run (pending, processing or failed) is
        picked up by LightRAG's next run; its old outcome does not count, only
        one written after this call. Returns the track id.
        """
        track_id = None
        waiter = asyncio.get_running_loop().create_future()
        self.waiting[doc_id] = (waiter, (previous or {}).get("updated_at"))
        if previous is None:
            track_id = await self.lightrag.apipeline_enqueue_documents(input=text, ids=doc_id, file_paths=file_ref)
        self.queued_ids.add(doc_id)
        queued()
        self.maybe_start()
        record = await waiter
        if record.get("status") != "processed":
            raise RuntimeError(f"LightRAG failed to process the text: {record.get('error_msg') or record.get('status')}")
        return track_id or record.get("track_id")

    def maybe_start(self) -> None:
        """Start (or nudge) LightRAG's run once enough text is queued to fill the LLM slots."""
        if not self.started and len(self.waiting) < self.start_after and not self.all_queued():
            return
        self.started = True
        self.tasks = [t for t in self.tasks if not t.done()]
        self.tasks.append(asyncio.create_task(self.lightrag.apipeline_process_enqueue_documents()))

    async def poll(self) -> None:
        """Resolve waiters when LightRAG marks their text processed or (finally) failed.

        One poll of the status table serves every waiting document, so
        completion is seen within ``STATUS_POLL_S`` instead of RAG-Anything's
        0.2-2 s backoff per document.
        """
        pipeline = await pipeline_status(self.lightrag)
        while True:
            await asyncio.sleep(STATUS_POLL_S)
            self.on_poll()
            if not self.waiting:
                continue
            ids = list(self.waiting)
            records = await self.lightrag.doc_status.get_by_ids(ids)
            idle = not pipeline.get("busy") and not pipeline.get("request_pending")
            for doc_id, record in zip(ids, records):
                stale_update = self.waiting[doc_id][1]
                if record is None and doc_id in self.queued_ids:
                    # LightRAG deleted it: its consistency check drops a record whose text is not in full_docs. Final
                    # only once it is idle: a status store can miss a record for a moment while it is rewritten (seen
                    # with RedisDocStatusStorage, for a document whose multimodal chunks were being added).
                    if idle:
                        self._resolve(doc_id, {"status": "failed", "error_msg": "LightRAG deleted the document's status "
                                               "record (it drops one whose text is missing from full_docs); run again"})
                    continue
                record = record or {}
                if record.get("updated_at") == stale_update:
                    continue  # still the previous run's record
                # LightRAG retries a FAILED text on its next run: final only once it is idle.
                if record.get("status") == "processed" or (record.get("status") == "failed" and idle):
                    self._resolve(doc_id, record)
            if idle and self.waiting and all(t.done() for t in self.tasks):
                # Parsing ended below the start threshold, or texts were queued
                # after the last run looked for work: run (again).
                self.maybe_start()

    def _resolve(self, doc_id: str, record: dict) -> None:
        self.chunks_done += record.get("chunks_count") or 0
        waiter, _ = self.waiting.pop(doc_id)
        if not waiter.done():
            waiter.set_result(record)

    async def finish(self) -> None:
        """Wait for the runs started so far."""
        await asyncio.gather(*self.tasks)

    async def cancel(self) -> None:
        """Ask LightRAG's run to stop, then write what is done to disk."""
        pipeline = await pipeline_status(self.lightrag)
        if pipeline.get("busy"):
            pipeline["cancellation_requested"] = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.shield(flush_all(self.lightrag))
