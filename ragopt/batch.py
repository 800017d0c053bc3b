"""Parallel batch ingestion into a RAGAnything instance.

Two stages overlap:

1. **Parse** in a process pool sized to the cores (pypdfium2 is not
   thread-safe, and parsing is CPU work), through the content-addressed parse
   cache. At most ``max_buffered`` documents are parsed ahead of insertion.
2. **Insert**: each document's text is queued into LightRAG as soon as it is
   parsed, and one LightRAG pipeline run processes everything queued, with
   ``tuning.lightrag_settings`` keeping every LLM slot busy. The first run
   starts once enough documents are queued to fill the slots (or every
   document is queued), so a run does not start with a single document and
   leave the rest behind its barrier. When a document's text is processed,
   its multimodal items (tables, images) go through RAG-Anything's own
   processors while the text of other documents is still being extracted.

This follows the steps of ``RAGAnything.insert_content_list`` (text insert,
page annotation, HANDLING status, multimodal processing, PROCESSED), but it
queues all documents into one LightRAG run instead of starting one run per
call; calling ``insert_content_list`` concurrently makes LightRAG process the
documents in waves with a barrier between them.

Every file gets a result row (ok / failed / skipped); one file's failure never
stops the batch. Document IDs are content-addressed (the file's SHA-256), so a
rerun skips what is already ingested and resumes what was interrupted,
without the failed "dup" records LightRAG writes for a re-inserted document.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import pandas as pd

from ragopt.aio import run_sync
from ragopt.cache import ContentCache, file_sha256
from ragopt.multimodal import TextGates
from ragopt.parse_worker import parse_through_cache

RESULT_COLUMNS = [
    "file", "doc_id", "status", "stage", "error_type", "error", "cache_hit",
    "parse_s", "text_s", "multimodal_s", "latency_s",
]
STATUS_POLL_S = 0.05


@dataclass
class IngestResult:
    """What one ``ingest`` call did, per file, plus the counters of its helpers."""

    files: pd.DataFrame
    wall_s: float
    cache_stats: Dict[str, Any] = field(default_factory=dict)
    memory_gate: Dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> pd.DataFrame:
        return self.files[self.files["status"] == "ok"]

    @property
    def failed(self) -> pd.DataFrame:
        return self.files[self.files["status"] == "failed"]

    def counts(self) -> Dict[str, int]:
        return {status: int((self.files["status"] == status).sum()) for status in ("ok", "failed", "skipped")}


_pools: Dict[int, Tuple[ProcessPoolExecutor, int]] = {}  # workers -> (pool, files given to it)
RECYCLE_AFTER_FILES = 1000


def parse_pool(workers: int) -> ProcessPoolExecutor:
    """The process's parse pool of ``workers`` processes, for one more file; kept across ingest calls.

    Spawned, not forked: this process has threads (torch, samplers), and a fork
    copies their locks in whatever state they are. Starting workers costs
    about a second, so the pool outlives one call; a pool broken by a crashed
    worker is replaced. Workers free each file's reference cycles and hand
    freed memory back after it (``ragopt.parse_worker``): in a 1,000-document
    soak the pool's RSS then stayed flat (0.02 MB per 100 documents).
    As a bound on what that cannot return (a leak in a parser library),
    the pool is also replaced after ``RECYCLE_AFTER_FILES`` files per worker:
    the old pool finishes the files it has and then exits
    (``shutdown(wait=False)``); not ``max_tasks_per_child``, which on Python
    3.11 can leave queued tasks with no worker, and ingest hangs.
    """
    pool, files = _pools.get(workers, (None, 0))
    if pool is None or getattr(pool, "_broken", False) or files >= RECYCLE_AFTER_FILES * workers:
        if pool is not None:
            pool.shutdown(wait=False)
        pool, files = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")), 0
    _pools[workers] = (pool, files + 1)
    return pool


def content_doc_id(path: str | Path) -> str:
    """A document ID from the file's bytes: the same file under any name is one document."""
    return "doc-" + file_sha256(path)[:32]


class _Ingestion:
    """The state of one ingest call (one event loop, one RAGAnything)."""

    def __init__(self, rag: Any, paths: List[Path], *, cache: ContentCache, recorder: Any, budget: Any,
                 max_buffered: int, workers: int, start_after: int, progress: bool):
        self.rag = rag
        self.lightrag = rag.lightrag
        self.paths = paths
        self.cache = cache
        self.recorder = recorder
        self.budget = budget
        self.workers = workers
        self.start_after = start_after
        self.buffer = asyncio.Semaphore(max_buffered)
        self.rows: Dict[str, Dict[str, Any]] = {}
        self.waiting_text: Dict[str, asyncio.Future] = {}
        self.pipeline_started = False
        self.pipeline_tasks: List[asyncio.Task] = []
        self.cache_stats: List[Dict[str, Any]] = []
        self.chunks_done = 0
        self.progress = _progress(len(paths), progress)

    # -- bookkeeping ---------------------------------------------------------
    def _event(self, event: str, **fields: Any) -> None:
        if self.recorder is not None:
            self.recorder.record_event(event, **fields)

    def _finish(self, path: str, status: str, stage: Optional[str] = None, error: Optional[BaseException | str] = None, **timings: Any) -> None:
        row = self.rows[path]
        row.update(status=status, stage=stage, latency_s=time.perf_counter() - row.pop("_start"), **timings)
        if error is not None:
            row["error_type"] = error if isinstance(error, str) else type(error).__name__
            row["error"] = str(error)
        event = {"ok": "document_complete", "failed": "document_error", "skipped": "document_skipped"}[status]
        self._event(event, file_path=path, doc_id=row["doc_id"], stage=stage, duration_s=row["latency_s"], error=row.get("error"))
        self.progress.update(1)
        self._show_progress()

    def _show_progress(self) -> None:
        """Documents done (by the bar), chunks of processed text, LLM calls in flight."""
        done = [r["status"] for r in self.rows.values()]
        llm = getattr(self.rag, "ragopt_stats", {}).get("llm", {})
        self.progress.set_postfix(
            ok=done.count("ok"), failed=done.count("failed"), chunks=self.chunks_done,
            llm_in_flight=llm.get("in_flight", "?"), refresh=False,
        )
        self.progress.refresh()

    # -- stages ----------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        poller = asyncio.create_task(self._poll_text_status())
        try:
            seen: Dict[str, str] = {}
            documents = []
            earlier = None  # the previous file's claim
            for path in self.paths:
                key = str(path)
                self.rows[key] = {"file": key, "doc_id": None, "status": None, "cache_hit": None, "_start": time.perf_counter()}
                claimed = asyncio.Event()
                documents.append(asyncio.create_task(self._document(path, seen, earlier, claimed, loop)))
                earlier = claimed
            await asyncio.gather(*documents)
            await asyncio.gather(*self.pipeline_tasks)
        except BaseException:
            await self._cancel_pipeline()
            raise
        finally:
            poller.cancel()
            self.progress.close()

    async def _parse(self, path: str, loop) -> tuple:
        """Parse in the process pool; a crashed worker gets the file one more try in a fresh pool."""
        for attempt in (1, 2):
            try:
                return await loop.run_in_executor(parse_pool(self.workers), parse_through_cache, path, self.rag.config.parser_output_dir, self.cache)
            except BrokenProcessPool:
                if attempt == 2:
                    raise RuntimeError(f"{path}: the parser process crashed twice on this file") from None

    async def _document(self, path: Path, seen: Dict[str, str], earlier: Optional[asyncio.Event],
                        claimed: asyncio.Event, loop) -> None:
        key = str(path)
        try:
            doc_id = await asyncio.to_thread(content_doc_id, path)
        except OSError as error:
            doc_id = error
        # Content is claimed in input order, so of two files with the same bytes
        # the first listed is ingested, not whichever hash finished first.
        if earlier is not None:
            await earlier.wait()
        try:
            if isinstance(doc_id, OSError):
                return self._finish(key, "failed", "read", doc_id)
            self.rows[key]["doc_id"] = doc_id
            if doc_id in seen:
                return self._finish(key, "skipped", "dedupe", f"same content as {seen[doc_id]}")
            seen[doc_id] = key
        finally:
            claimed.set()
        async with self.buffer:
            status = await self.lightrag.doc_status.get_by_id(doc_id)
            if _fully_processed(status):
                return self._finish(key, "skipped", "resume", "already ingested")

            start = time.perf_counter()
            try:
                content, hit, _, stats = await self._parse(key, loop)
            except Exception as error:
                self._event("parse_error", file_path=key, doc_id=doc_id, error=error)
                return self._finish(key, "failed", "parse", error, parse_s=time.perf_counter() - start)
            parse_s = time.perf_counter() - start
            self.cache_stats.append(stats)
            self.rows[key].update(cache_hit=hit, parse_s=parse_s)
            self._event("parse_complete", file_path=key, doc_id=doc_id, duration_s=parse_s)

            if self.budget is not None:
                self.rows[key]["gated"] = True  # the run must not wait for a document the gate holds
                await self.budget.acquire()
                del self.rows[key]["gated"]
            try:
                text_s, multimodal_s = await self._insert(key, doc_id, content, status)
            except Exception as error:
                return self._finish(key, "failed", "insert", error)
            self._finish(key, "ok", text_s=text_s, multimodal_s=multimodal_s)

    async def _insert(self, path: str, doc_id: str, content: List[dict], status: Optional[dict]) -> tuple:
        """The document's text into LightRAG and its tables and images through RAG-Anything,
        the multimodal stage started beside the text (``ragopt.multimodal``)."""
        from raganything.base import DocStatus
        from raganything.document_context import document_context
        from raganything.utils import separate_content_with_page_map

        text, multimodal_items, page_intervals = separate_content_with_page_map(content)
        file_ref = self.rag._get_file_reference(path)

        @document_context  # the context extractor's source is per document, not per instance
        async def multimodal() -> float:
            start = time.perf_counter()
            if multimodal_items:
                self.rag.set_content_source_for_context(content, self.rag.config.content_format)
                await self.rag._process_multimodal_content(multimodal_items, file_ref, doc_id)
            else:
                await self.rag._mark_multimodal_processing_complete(doc_id)
            return time.perf_counter() - start

        gates = TextGates.of(self.rag)
        text_in = gates.open(doc_id)
        multimodal_task = asyncio.create_task(multimodal())
        try:
            start = time.perf_counter()
            # A previous run got past the text (multimodal was interrupted): never queue it twice.
            text_done = status is not None and status.get("status") in (DocStatus.HANDLING, DocStatus.PROCESSED)
            if text.strip() and not text_done:
                track_id = await self._process_text(path, doc_id, text, file_ref, previous=status)
                await self.rag._annotate_text_chunk_pages(doc_id, track_id, text, page_intervals, None, False)
            else:
                self.rows[path]["queued"] = True  # nothing to queue
            text_s = time.perf_counter() - start
            self._event("text_insert_complete", file_path=path, doc_id=doc_id, duration_s=text_s)
            await self.rag._upsert_doc_status(doc_id, file_ref, status=DocStatus.HANDLING, error_msg="")
            text_in.set_result(None)
            multimodal_s = await multimodal_task
        except BaseException:
            multimodal_task.cancel()  # the text failed: its multimodal steps must not run on
            await asyncio.gather(multimodal_task, return_exceptions=True)
            raise
        finally:
            gates.close(doc_id)
        final = await self.lightrag.doc_status.get_by_id(doc_id)
        if not final or final.get("status") != "processed":
            raise RuntimeError(f"{doc_id} ended as {final.get('status') if final else 'missing'}: {(final or {}).get('error_msg', '')}")
        return text_s, multimodal_s

    async def _process_text(self, path: str, doc_id: str, text: str, file_ref: str, previous: Optional[dict]) -> Optional[str]:
        """Queue the text in LightRAG (unless a previous run queued it) and wait until it is processed.

        A record left by a previous run (pending, processing or failed) is
        picked up by LightRAG's next run; its old outcome does not count, only
        one written after this call.
        """
        track_id = None
        waiter = asyncio.get_running_loop().create_future()
        self.waiting_text[doc_id] = (waiter, (previous or {}).get("updated_at"))
        if previous is None:
            track_id = await self.lightrag.apipeline_enqueue_documents(input=text, ids=doc_id, file_paths=file_ref)
        self.rows[path]["queued"] = True
        self._maybe_start_pipeline()
        record = await waiter
        if record.get("status") != "processed":
            raise RuntimeError(f"LightRAG failed to process the text: {record.get('error_msg') or record.get('status')}")
        return track_id or record.get("track_id")

    def _maybe_start_pipeline(self) -> None:
        """Start (or nudge) LightRAG's run once enough text is queued to fill the LLM slots.

        Calling LightRAG's run while one is busy only asks it to come back for
        the newly queued documents when its current batch ends.
        """
        if not self.pipeline_started and len(self.waiting_text) < self.start_after and not self._all_queued():
            return
        self.pipeline_started = True
        self.pipeline_tasks = [t for t in self.pipeline_tasks if not t.done()]
        self.pipeline_tasks.append(asyncio.create_task(self.lightrag.apipeline_process_enqueue_documents()))

    def _all_queued(self) -> bool:
        """Every document has queued its text in LightRAG, has none to queue, is held by the
        memory gate, or is finished.

        Not "every document is parsed": a document between its parse and its
        queueing would miss the run and wait behind its barrier.
        """
        return all(row.get("queued") or row.get("gated") or row.get("status") is not None for row in self.rows.values())

    async def _poll_text_status(self) -> None:
        """Resolve waiters when LightRAG marks their text processed or (finally) failed.

        One poll of the in-memory status table serves every waiting document,
        so completion is seen within ``STATUS_POLL_S`` instead of RAG-Anything's
        0.2-2 s backoff per document.
        """
        from lightrag.kg.shared_storage import get_namespace_data

        pipeline = await get_namespace_data("pipeline_status", workspace=getattr(self.lightrag, "workspace", None))
        while True:
            await asyncio.sleep(STATUS_POLL_S)
            self._show_progress()
            if not self.waiting_text:
                continue
            ids = list(self.waiting_text)
            records = await self.lightrag.doc_status.get_by_ids(ids)
            idle = not pipeline.get("busy") and not pipeline.get("request_pending")
            for doc_id, record in zip(ids, records):
                waiter, stale_update = self.waiting_text[doc_id]
                record = record or {}
                if record.get("updated_at") == stale_update:
                    continue  # still the previous run's record
                # LightRAG retries a FAILED text on its next run: final only once it is idle.
                if record.get("status") == "processed" or (record.get("status") == "failed" and idle):
                    self.chunks_done += record.get("chunks_count") or 0
                    del self.waiting_text[doc_id]
                    if not waiter.done():
                        waiter.set_result(record)
            if idle and self.waiting_text and all(t.done() for t in self.pipeline_tasks):
                # Parsing ended below the start threshold, or texts were queued
                # after the last run looked for work: run (again).
                self._maybe_start_pipeline()

    async def _cancel_pipeline(self) -> None:
        """Ask LightRAG's run to stop, then write what is done to disk."""
        from lightrag.kg.shared_storage import get_namespace_data

        pipeline = await get_namespace_data("pipeline_status", workspace=getattr(self.lightrag, "workspace", None))
        if pipeline.get("busy"):
            pipeline["cancellation_requested"] = True
        for task in self.pipeline_tasks:
            task.cancel()
        await asyncio.gather(*self.pipeline_tasks, return_exceptions=True)
        await asyncio.shield(self.lightrag._insert_done())


def _fully_processed(status: Optional[dict]) -> bool:
    """Text and multimodal stage both done. LightRAG rewrites the record without
    ``multimodal_processed`` when it finishes the text, so a missing flag means not done."""
    return bool(status) and status.get("status") == "processed" and status.get("multimodal_processed") is True


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="documents", unit="doc", disable=not enabled)


async def aingest(
    rag: Any,
    paths: Iterable[str | Path],
    *,
    cache: Optional[ContentCache] = None,
    recorder: Any = None,
    budget: Any = None,
    max_buffered: int = 256,
    parse_workers: Optional[int] = None,
    start_after: Optional[int] = None,
    progress: bool = True,
) -> IngestResult:
    """Ingest ``paths`` into ``rag``; returns a result row per file.

    ``rag`` should come from ``ragopt.pipeline.build_rag(..., optimized=True)``
    (LightRAG tuned for the LLM's slots, retries, micro-batched embeddings,
    coalesced flushes). ``cache`` is the parse cache (``ContentCache(None)``:
    off). ``budget`` is a ``ragopt.memory.MemoryBudget`` admission gate.
    ``start_after`` is how many queued documents start LightRAG's run (default:
    as many as LightRAG inserts in parallel, so its first batch fills them).
    """
    started = time.perf_counter()
    init = await rag._ensure_lightrag_initialized()
    if not init or not init.get("success"):
        raise RuntimeError(f"LightRAG initialization failed: {(init or {}).get('error', 'unknown error')}")
    ingestion = _Ingestion(
        rag,
        [Path(p) for p in paths],
        cache=cache or ContentCache(None),
        recorder=recorder,
        budget=budget,
        max_buffered=max_buffered,
        workers=parse_workers or max(1, os.cpu_count() or 1),
        # No more can be queued than are buffered.
        start_after=min(start_after or rag.lightrag.max_parallel_insert, max_buffered),
        progress=progress,
    )
    await ingestion.run()
    cache = cache or ContentCache(None)
    cache.merge_stats(ingestion.cache_stats)
    files = pd.DataFrame(list(ingestion.rows.values()), columns=RESULT_COLUMNS)
    gate = {} if budget is None else {"held_count": budget.held_count, "held_seconds": budget.held_seconds}
    return IngestResult(files=files, wall_s=time.perf_counter() - started, cache_stats=cache.stats(), memory_gate=gate)


def ingest(rag: Any, paths: Iterable[str | Path], **kwargs: Any) -> IngestResult:
    """Blocking form of ``aingest``: works in scripts, inside Jupyter and under ``%timeit``."""
    return run_sync(aingest(rag, paths, **kwargs))
