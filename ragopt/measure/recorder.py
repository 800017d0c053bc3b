"""The Recorder: it watches one ingestion run from the outside and yields its ``Run``.

``Recorder.attach(rag)`` is the one place it hooks a RAGAnything, so
RAG-Anything's own entry points and ragopt's engine are measured the same way:

- the LLM, vision and embedding functions are wrapped before anything else
  wraps them (attach before ``ragopt.optimize``), so each request the service
  serves (every retry attempt) and each embedding-model call (every
  micro-batch) is one row. A backend that knows its own plan, busy and queue
  time (the simulator) reports them through ``ragopt.backends.callinfo``;
- RAG-Anything's CallbackManager delivers the document stage events;
- each storage's ``index_done_callback`` (a full flush to disk for the default
  JSON/nano-vector/NetworkX storages) is timed, and cache lookups counted;
- an RSSMonitor samples RSS and CPU% in the background.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ragopt.backends import callinfo
from ragopt.compat.raganything import after_initialization, wrap_parse_cache_lookup
from ragopt.measure.run import Run, environment_meta, run_frames
from ragopt.resources.rss import RSSMonitor

# RAG-Anything callback names that the Recorder turns into events.
_CALLBACK_EVENTS = (
    "on_parse_start",
    "on_parse_complete",
    "on_parse_error",
    "on_text_insert_start",
    "on_text_insert_complete",
    "on_multimodal_start",
    "on_multimodal_complete",
    "on_document_complete",
    "on_document_error",
)


def _callback_class(recorder: "Recorder"):
    """A ProcessingCallback whose on_* methods become Recorder events."""
    from raganything.callbacks import ProcessingCallback

    def handler(event_name: str) -> Callable[..., None]:
        def on_event(self, **kwargs: Any) -> None:
            recorder.record_event(event_name[3:], **kwargs)

        return on_event

    methods = {name: handler(name) for name in _CALLBACK_EVENTS}
    return type("RecorderCallback", (ProcessingCallback,), methods)


class Recorder:
    """Collects the measurements of one run; ``stop()`` returns the ``Run``.

    Use as ``with Recorder(slots=K) as rec: ...`` then ``rec.run``, or
    ``start()`` / ``stop()``. One Recorder per run.
    """

    def __init__(self, slots: int, label: str = "run", sample_interval_s: float = 0.25, meta: Optional[dict] = None):
        self.slots = slots
        self.label = label
        self.meta: Dict[str, Any] = dict(meta or {})
        self._lock = threading.Lock()
        self._rows: Dict[str, List[dict]] = {"llm": [], "embed": [], "flush": [], "event": []}
        self._counts: Dict[str, int] = {}
        self.caches: Dict[str, Dict[str, Any]] = {}
        self._monitor = RSSMonitor(interval_s=sample_interval_s)
        self._t0: Optional[float] = None
        self._wall_s: Optional[float] = None
        self.run: Optional[Run] = None

    # -- clock -------------------------------------------------------------
    def now(self) -> float:
        """Seconds since start (before start: since the Recorder was made)."""
        if self._t0 is None:
            self._t0 = time.perf_counter()
        return time.perf_counter() - self._t0

    def start(self) -> "Recorder":
        self._t0 = time.perf_counter()
        self.meta.setdefault("started_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        self._monitor.start()
        return self

    def stop(self, **meta: Any) -> Run:
        self._wall_s = self.now()
        self._monitor.stop()
        self.meta.update(meta)
        self.run = self._build_run()
        return self.run

    def __enter__(self) -> "Recorder":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- hooking a RAGAnything ----------------------------------------------------
    def attach(self, rag: Any) -> None:
        """Observe ``rag``: its model functions, callbacks, storage flushes and cache lookups.

        Must come before ``ragopt.optimize``: a Recorder outside the retries
        would see a retried request as one call.
        """
        if getattr(rag, "ragopt_installed", None):
            raise RuntimeError("attach the Recorder before ragopt.optimize, so it sees every request the service serves")
        rag.llm_model_func = self.wrap_llm(rag.llm_model_func)
        if rag.vision_model_func is not None:
            rag.vision_model_func = self.wrap_llm(rag.vision_model_func)
        rag.embedding_func = self.wrap_embedding(rag.embedding_func)
        rag.callback_manager.register(_callback_class(self)())
        # LightRAG creates its storages on first use.
        after_initialization(rag, lambda: self._observe_storages(rag))

    def wrap_llm(self, func: Callable) -> Callable:
        """A plain ``async def`` around an LLM function that records each call."""
        recorder = self

        async def recorded_llm(*args: Any, **kwargs: Any):
            info: Dict[str, Any] = {}
            token = callinfo.current_call.set(info)
            start = recorder.now()
            start_ns = time.perf_counter_ns()
            error = None
            try:
                return await func(*args, **kwargs)
            except BaseException as exc:
                error = exc
                raise
            finally:
                latency_ns = time.perf_counter_ns() - start_ns
                callinfo.current_call.reset(token)
                granted, released = recorder._on_my_clock(info, "granted_at"), recorder._on_my_clock(info, "released_at")
                recorder._add("llm", {
                    "start_s": start,
                    "end_s": start + latency_ns / 1e9,
                    "latency_s": latency_ns / 1e9,
                    # A backend that does not report its busy time is busy for the whole call.
                    "service_ns": int(info.get("service_ns", latency_ns)),
                    "queue_wait_ns": int(info.get("queue_wait_ns", 0)),
                    "planned_ns": info.get("planned_ns"),
                    "answer_wait_ns": info.get("answer_wait_ns"),
                    "granted_s": granted,
                    "released_s": released,
                    "kind": info.get("kind", "unknown"),
                    "outcome": info.get("outcome", "ok" if error is None else type(error).__name__),
                    "prompt_tokens": info.get("prompt_tokens"),
                    "completion_tokens": info.get("completion_tokens"),
                    "error": None if error is None else f"{type(error).__name__}: {error}",
                })

        return recorded_llm

    def _on_my_clock(self, info: Dict[str, Any], key: str) -> Optional[float]:
        """A backend's ``time.perf_counter`` reading as seconds since start (None if not reported)."""
        return None if info.get(key) is None else info[key] - self._t0

    def wrap_embedding(self, embedding_func: Any) -> Any:
        """The same ``EmbeddingFunc`` with its inner function timed (calls, texts)."""
        inner = embedding_func.func
        recorder = self

        async def recorded_embed(texts, *args: Any, **kwargs: Any):
            start = recorder.now()
            try:
                return await inner(texts, *args, **kwargs)
            finally:
                end = recorder.now()
                recorder._add("embed", {"start_s": start, "end_s": end, "duration_s": end - start, "texts": len(texts)})

        return dataclasses.replace(embedding_func, func=recorded_embed)

    def _observe_storages(self, rag: Any) -> None:
        from lightrag.base import StorageNameSpace

        holders = [vars(rag.lightrag), vars(rag)]
        storages = {id(s): s for h in holders for s in h.values() if isinstance(s, StorageNameSpace)}
        for storage in storages.values():
            self._time_flushes(storage)
        cache = rag.lightrag.llm_response_cache
        cache.get_by_id = self._counting(cache.get_by_id, "llm_cache")
        wrap_parse_cache_lookup(rag, lambda lookup: self._counting(lookup, "raganything_parse_cache"))

    def _time_flushes(self, storage: Any) -> None:
        flush = storage.index_done_callback
        name = getattr(storage, "namespace", type(storage).__name__)

        async def timed_flush(*args: Any, **kwargs: Any):
            start = self.now()
            try:
                return await flush(*args, **kwargs)
            finally:
                end = self.now()
                self._add("flush", {"start_s": start, "end_s": end, "duration_s": end - start, "storage": name})

        storage.index_done_callback = timed_flush

    def _counting(self, lookup: Callable, cache_name: str) -> Callable:
        """``lookup`` counting the calls that return something as hits, the others as misses."""

        async def counted(*args: Any, **kwargs: Any):
            result = await lookup(*args, **kwargs)
            self.count(f"{cache_name}.{'hits' if result is not None else 'misses'}")
            return result

        return counted

    # -- direct records ------------------------------------------------------
    def record_event(self, event: str, **fields: Any) -> None:
        """An event at the current time: ``document_complete``, ``parse_start``, ..."""
        error = fields.get("error")
        self._add("event", {
            "t_s": self.now(),
            "event": event,
            "file_path": None if fields.get("file_path") is None else str(fields.get("file_path")),
            "doc_id": fields.get("doc_id"),
            "stage": fields.get("stage"),
            "duration_s": fields.get("duration_seconds", fields.get("duration_s")),
            "error": None if error is None else (error if isinstance(error, str) else f"{type(error).__name__}: {error}"),
        })

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def set_cache_stats(self, name: str, stats: Dict[str, Any]) -> None:
        """Stats of a cache the Recorder cannot see itself (e.g. ragopt's parse cache)."""
        self.caches[name] = dict(stats)

    def _add(self, table: str, row: dict) -> None:
        with self._lock:
            self._rows[table].append(row)

    # -- result -----------------------------------------------------------------
    def _build_run(self) -> Run:
        with self._lock:
            caches = dict(self.caches)
            for key, value in self._counts.items():
                cache, stat = key.split(".", 1)
                caches.setdefault(cache, {})[stat] = value
            frames = run_frames(self._rows["llm"], self._rows["embed"], self._rows["flush"], self._rows["event"])
        meta = {**environment_meta(), **self.meta, "label": self.label, "slots": self.slots, "wall_s": self._wall_s}
        return Run(meta=meta, resources=self._monitor.frame(), caches=caches, **frames)
