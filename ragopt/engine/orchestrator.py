"""The ingestion engine: ``ingest(rag, paths)``, parse and insert overlapped, a result row per file.

Two stages overlap:

1. **Parse** in a process pool (``ragopt.engine.parse_pool``) with the rag's
   own parser, through the content-addressed parse cache. Each file is hashed
   once, here; the hash is its document id and its cache key.
2. **Insert**: each parsed document's text is queued into LightRAG at once
   and one LightRAG run processes everything queued
   (``ragopt.engine.queue_driver``); the multimodal stage runs beside the text
   (``ragopt.engine.steps``).

Files go in batches of ``batch_size`` documents (BATCH_SIZE; default: one
batch), each allowed ``batch_timeout_s`` (BATCH_TIMEOUT): documents still
unfinished then fail with a per-file error, what is done is flushed, and the
next batch starts. Every file gets a result row (ok / failed / skipped); one
file's failure never stops the batch. Document ids are content-addressed, so
a rerun skips what is already ingested and resumes what was interrupted,
without the failed "dup" records LightRAG writes for a re-inserted document;
after a kill, what was left half-merged is first deleted and queued again
(``ragopt.engine.repair``).
"""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import pandas as pd

from ragopt.aio import blocking
from ragopt.cache.content_cache import ContentCache, file_sha256
from ragopt.compat.raganything import ensure_initialized
from ragopt.compat.storage_files import protect_storage_files
from ragopt.config import RagoptConfig
from ragopt.engine.flushes import status_writes_deferred
from ragopt.engine.parse_pool import LocalParseExecutor, ParserSpec, parser_spec
from ragopt.engine.queue_driver import LightRAGQueue
from ragopt.engine.repair import InFlight, prepare_resume
from ragopt.engine.results import DOC_COLUMNS, IngestResult
from ragopt.engine.steps import fully_processed, insert_document
from ragopt.engine.versions import SourceVersions
from ragopt.resources.budget import MemoryBudget
from ragopt.resources.heap import trim_free_heap

DEFAULT_IN_FLIGHT = 256  # documents parsed ahead and in flight: enough that LightRAG's first run takes them all


@dataclass(frozen=True)
class IngestSettings:
    """What one ingest call runs with: its arguments where given, else the config's (one place)."""

    batch_size: Optional[int]
    batch_timeout_s: Optional[float]
    in_flight: int
    parse_workers: Optional[int]
    memory_budget_mb: Optional[int]
    memory_cleanup_interval_s: Optional[float]

    @classmethod
    def resolve(cls, config: RagoptConfig, batch_size: Optional[int] = None, batch_timeout_s: Optional[float] = None,
                max_in_flight: Optional[int] = None, parse_workers: Optional[int] = None) -> "IngestSettings":
        return cls(
            batch_size=batch_size or config.batch_size,
            batch_timeout_s=batch_timeout_s or config.batch_timeout_s,
            in_flight=max_in_flight or config.max_concurrent_files or DEFAULT_IN_FLIGHT,
            parse_workers=parse_workers or config.worker_pool_size,
            memory_budget_mb=config.max_memory_mb,
            memory_cleanup_interval_s=config.memory_cleanup_interval_s,
        )


class BatchTimeoutError(TimeoutError):
    """The document's batch ran past BATCH_TIMEOUT before the document was done."""


def content_doc_id(digest: str) -> str:
    """A document id from the file's SHA-256: the same bytes under any name are one document."""
    return "doc-" + digest[:32]


class _Batch:
    """One batch of one ingest call (one event loop, one RAGAnything)."""

    def __init__(self, ingestion: "_Ingestion", paths: List[Path]):
        self.ing = ingestion
        self.paths = paths
        self.rows: Dict[str, Dict[str, Any]] = {str(p): ingestion.new_row(str(p)) for p in paths}
        self.queue = LightRAGQueue(
            ingestion.rag.lightrag, ingestion.start_after, self._all_queued, on_poll=ingestion.show_progress,
        )

    def _all_queued(self) -> bool:
        """Every document has queued its text, has none to queue, is held by the memory gate, or is finished.

        Not "every document is parsed": a document between its parse and its
        queueing would miss the run and wait behind its barrier.
        """
        return all(r.get("_queued") or r.get("_gated") or r["status"] is not None for r in self.rows.values())

    async def run(self, deadline_s: Optional[float]) -> None:
        ing = self.ing
        # Each file hashed once: its document id, its cache key, and whether it replaces a previous version.
        digests = await ing.hash_files(self.paths)
        await ing.replace_previous_versions(digests)
        # On disk before any of their text is queued: a kill from here on leaves them to ragopt.engine.repair.
        await ing.unconfirmed.mark(content_doc_id(d) for d in digests.values() if not isinstance(d, OSError))
        poller = asyncio.create_task(self.queue.poll())
        documents = []
        try:
            for path in self.paths:  # in input order: of two files with the same bytes the first listed is ingested
                key, digest = str(path), digests[path]
                row = self.rows[key]
                leave_parse_stage = ing.parse_stage_entered()
                if isinstance(digest, OSError):
                    ing.finish(row, "failed", "read", digest)
                elif content_doc_id(digest) in ing.seen:
                    row.update(doc_id=content_doc_id(digest), _digest=digest)
                    ing.finish(row, "skipped", "dedupe", f"same content as {ing.seen[row['doc_id']]}")
                else:
                    row.update(doc_id=content_doc_id(digest), _digest=digest)
                    ing.seen[row["doc_id"]] = key
                    documents.append(asyncio.create_task(self._document(path, leave_parse_stage)))
                    continue
                leave_parse_stage()
            done, pending = await asyncio.wait(documents, timeout=deadline_s) if documents else (set(), set())
            if pending:
                await self._time_out(pending, deadline_s)
            else:
                await self.queue.finish()
        except BaseException:
            for task in documents:
                task.cancel()
            await asyncio.gather(*documents, return_exceptions=True)
            await self.queue.cancel()
            raise
        finally:
            poller.cancel()

    async def _time_out(self, pending: set, deadline_s: float) -> None:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.queue.cancel()
        error = BatchTimeoutError(f"its batch of {len(self.paths)} documents passed BATCH_TIMEOUT={deadline_s:g} s")
        for path, row in self.rows.items():
            if row["status"] is None:
                self.ing.finish(row, "failed", "batch_timeout", error)

    async def _document(self, path: Path, leave_parse_stage) -> None:
        try:
            await self._process(path, leave_parse_stage)
        finally:
            leave_parse_stage()  # skipped, failed or cancelled before (or in) the parse

    async def _process(self, path: Path, leave_parse_stage) -> None:
        ing, key = self.ing, str(path)
        row = self.rows[key]
        doc_id, digest = row["doc_id"], row["_digest"]
        async with ing.in_flight:
            status = await ing.rag.lightrag.doc_status.get_by_id(doc_id)
            if fully_processed(status):
                return ing.finish(row, "skipped", "resume", "already ingested")
            row["started_s"] = ing.clock()
            ing.event("parse_start", file_path=key, doc_id=doc_id)
            try:
                content, hit, _, stats = await ing.parse(key, digest)
            except Exception as error:
                ing.event("parse_error", file_path=key, doc_id=doc_id, error=error)
                return ing.finish(row, "failed", "parse", error, parse_s=ing.clock() - row["started_s"])
            leave_parse_stage()
            ing.cache_stats.append(stats)
            row.update(cache_hit=hit, parse_s=ing.clock() - row["started_s"])
            # cache_hit: whether ragopt's parse cache answered (a live view counts its hit rate from it)
            ing.event("parse_complete", file_path=key, doc_id=doc_id, duration_seconds=row["parse_s"], cache_hit=hit)

            if ing.budget is not None:
                row["_gated"] = True  # the run must not wait for a document the gate holds
                await ing.budget.acquire()
                del row["_gated"]
            try:
                text_s, multimodal_s = await insert_document(
                    ing.rag, self.queue, key, doc_id, content, status,
                    queued=lambda: row.__setitem__("_queued", True),
                    text_done=lambda s: ing.event("text_insert_complete", file_path=key, doc_id=doc_id, duration_seconds=s),
                )
            except Exception as error:
                return ing.finish(row, "failed", "insert", error)
            ing.finish(row, "ok", text_s=text_s, multimodal_s=multimodal_s)


class _Ingestion:
    """The state one ingest call shares across its batches."""

    def __init__(self, rag: Any, *, cache: ContentCache, spec: ParserSpec, budget: Any, executor: Any,
                 in_flight: int, start_after: int, total: int, progress: bool, unconfirmed: InFlight,
                 versions: Optional[SourceVersions] = None, remove_missing: bool = False):
        self.rag = rag
        self.unconfirmed = unconfirmed
        self.versions = versions
        self.remove_missing = remove_missing
        self.versions_seen: List[tuple] = []  # (path, document id, digest) of the files now in the knowledge base
        self.cache = cache
        self.spec = spec
        self.budget = budget
        self.executor = executor
        self.start_after = start_after
        self.in_flight = asyncio.Semaphore(in_flight)
        self.seen: Dict[str, str] = {}
        self.rows: List[Dict[str, Any]] = []
        self.cache_stats: List[Dict[str, Any]] = []
        self.batches: List[_Batch] = []
        self.unparsed = total  # files not yet past the parse stage; at 0 the parse workers can go
        self.t0 = time.perf_counter()
        self.bar = _progress(total, progress)

    def clock(self) -> float:
        return time.perf_counter() - self.t0

    def new_row(self, path: str) -> Dict[str, Any]:
        row = {column: None for column in DOC_COLUMNS}
        row["file"] = path
        self.rows.append(row)
        return row

    def event(self, event: str, **fields: Any) -> None:
        """Tell the rag's callbacks, as RAG-Anything's entry points do (a Recorder listens there)."""
        self.rag.callback_manager.dispatch(f"on_{event}", **fields)

    async def hash_files(self, paths: List[Path]) -> Dict[Path, Any]:
        """path -> SHA-256 of its bytes, or the OSError reading it raised (in threads, all at once)."""
        digests = await asyncio.gather(*(asyncio.to_thread(file_sha256, p) for p in paths), return_exceptions=True)
        for digest in digests:
            if isinstance(digest, BaseException) and not isinstance(digest, OSError):
                raise digest
        return dict(zip(paths, digests))

    async def replace_previous_versions(self, digests: Dict[Path, Any]) -> None:
        """Before LightRAG's run starts (deletion needs it idle): delete what edited files replace."""
        if self.versions is None:
            return
        current = {str(p.resolve()): content_doc_id(d) for p, d in digests.items() if not isinstance(d, OSError)}
        await self.versions.replace_previous(self.rag, current, self.remove_missing)

    def finish(self, row: Dict[str, Any], status: str, stage: Optional[str] = None,
               error: Optional[BaseException | str] = None, **timings: Any) -> None:
        if status != "failed" and row.get("_digest"):
            self.versions_seen.append((str(Path(row["file"]).resolve()), row["doc_id"], row["_digest"]))
        done = self.clock()
        started = row["started_s"] if row["started_s"] is not None else done
        row.update(status=status, stage=stage, started_s=started, done_s=done, processing_s=done - started, **timings)
        if error is not None:
            row["error_type"] = error if isinstance(error, str) else type(error).__name__
            row["error"] = str(error)
        event = {"ok": "document_complete", "failed": "document_error", "skipped": "document_skipped"}[status]
        self.event(event, file_path=row["file"], doc_id=row["doc_id"], stage=stage, duration_seconds=row["processing_s"], error=row["error"])
        self.bar.update(1)
        self.show_progress()

    def show_progress(self) -> None:
        """Documents done (by the bar), chunks of processed text, LLM calls in flight."""
        statuses = [r["status"] for r in self.rows]
        llm = getattr(self.rag, "ragopt_stats", {}).get("llm", {})
        chunks = sum(batch.queue.chunks_done for batch in self.batches)
        self.bar.set_postfix(ok=statuses.count("ok"), failed=statuses.count("failed"), chunks=chunks,
                             llm_in_flight=llm.get("in_flight", "?"), refresh=False)
        self.bar.refresh()

    def parse_stage_entered(self):
        """A file enters the parse stage; the returned function (idempotent) says it has left it.
        When every file of the call has, the parse workers are released."""
        left = []

        def leave() -> None:
            if not left:
                left.append(True)
                self.unparsed -= 1
                if self.unparsed == 0:
                    self.executor.idle()

        return leave

    async def parse(self, path: str, digest: str) -> tuple:
        return await self.executor.parse(path, digest, self.rag.config.parser_output_dir, self.cache, self.spec)

    async def run(self, batches: List[List[Path]], timeout_s: Optional[float]) -> None:
        try:
            if not batches:  # no file given: removed files may still have to go
                await self.replace_previous_versions({})
            for paths in batches:
                batch = _Batch(self, paths)
                self.batches.append(batch)
                await batch.run(timeout_s)
        finally:
            self.bar.close()
            if self.versions is not None:  # what is in the knowledge base now, also after a cancel
                for path, doc_id, digest in self.versions_seen:
                    await self.versions.record(path, doc_id, digest)
                await asyncio.shield(self.versions.flush())


async def _clean_memory_every(interval_s: float) -> None:
    """MEMORY_CLEANUP_INTERVAL: collect reference cycles and hand malloc's free memory back, periodically."""
    while True:
        await asyncio.sleep(interval_s)
        gc.collect()
        trim_free_heap()


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="documents", unit="doc", disable=not enabled)


async def aingest(
    rag: Any,
    paths: Iterable[str | Path],
    *,
    config: Optional[RagoptConfig] = None,
    cache: Optional[ContentCache] = None,
    budget: Optional[MemoryBudget] = None,
    batch_size: Optional[int] = None,
    batch_timeout_s: Optional[float] = None,
    max_in_flight: Optional[int] = None,
    parse_workers: Optional[int] = None,
    start_after: Optional[int] = None,
    progress: bool = True,
    executor: Any = None,
    replace_changed: bool = True,
    remove_missing: bool = False,
    **parse_options: Any,
) -> IngestResult:
    """Ingest ``paths`` into ``rag``; returns a result row per file (``IngestResult.files``).

    ``rag`` is any RAGAnything, best passed through ``ragopt.optimize`` first.
    Files are parsed by the rag's own parser (``rag.config.parser``) with its
    ``parse_method`` and ``parse_options`` (``lang``, ``device``, ``backend``,
    ``start_page``, ... as RAG-Anything's ``process_document_complete`` takes
    them). Settings not given here come from ``config`` (default
    ``RagoptConfig.from_env()``): the parse cache (``ContentCache.from_config``;
    ``ContentCache(None)`` is off), the memory budget (MAX_MEMORY_MB),
    documents per batch and the batch time limit (BATCH_SIZE, BATCH_TIMEOUT),
    documents in flight (MAX_CONCURRENT_FILES), parse processes
    (WORKER_POOL_SIZE) and MEMORY_CLEANUP_INTERVAL. ``start_after`` is how
    many queued documents start LightRAG's run (default: as many as LightRAG
    inserts in parallel, so its first batch fills them). ``executor`` runs the
    parse stage (default: ``LocalParseExecutor``, this machine's process pool).
    ``replace_changed``: a file whose bytes changed since it was ingested replaces
    its previous version (``ragopt.engine.versions``); ``remove_missing``: documents
    whose files are gone are deleted too. Document events go to
    the rag's CallbackManager, as from RAG-Anything's own entry points (a
    ``ragopt.Recorder`` attached to the rag measures the run).
    """
    config = config or RagoptConfig.from_env()
    settings = IngestSettings.resolve(config, batch_size, batch_timeout_s, max_in_flight, parse_workers)
    paths = [Path(p) for p in paths]
    spec = parser_spec(rag, **parse_options)
    protect_storage_files()  # before LightRAG opens its files
    await ensure_initialized(rag)
    # Status writes wait for the full flushes (ragopt.engine.flushes); the last one ends the call.
    with status_writes_deferred():
        unconfirmed = await prepare_resume(rag)  # before LightRAG's first run would merge a half-merged document again
        cache = cache if cache is not None else ContentCache.from_config(config)
        if budget is None and settings.memory_budget_mb:
            budget = MemoryBudget(settings.memory_budget_mb)
        ingestion = _Ingestion(
            rag, cache=cache, spec=spec, budget=budget, in_flight=settings.in_flight,
            executor=executor or LocalParseExecutor(settings.parse_workers),
            # No more can be queued than are in flight.
            start_after=min(start_after or rag.lightrag.max_parallel_insert, settings.in_flight),
            total=len(paths), progress=progress, unconfirmed=unconfirmed,
            versions=await SourceVersions.open(rag) if replace_changed or remove_missing else None,
            remove_missing=remove_missing,
        )
        cleaner = None
        if settings.memory_cleanup_interval_s:
            cleaner = asyncio.create_task(_clean_memory_every(settings.memory_cleanup_interval_s))
        try:
            size = settings.batch_size or max(1, len(paths))
            batches = [paths[i:i + size] for i in range(0, len(paths), size)]
            await ingestion.run(batches, settings.batch_timeout_s)
        finally:
            if cleaner is not None:
                cleaner.cancel()
            # Also after an error or a cancel: what is done reaches disk, the documents completed last
            # come off the in-flight list.
            await asyncio.shield(unconfirmed.flush())
    cache.merge_stats(ingestion.cache_stats)
    files = pd.DataFrame(ingestion.rows, columns=DOC_COLUMNS)
    gate = {} if budget is None else {"held_count": budget.held_count, "held_seconds": budget.held_seconds}
    return IngestResult(files=files, wall_s=ingestion.clock(), cache_stats=cache.stats(), memory_gate=gate,
                        batches=len(ingestion.batches))


ingest = blocking(aingest)
