"""The Recorder: it watches one ingestion run from the outside and yields its ``Run``.

``Recorder.attach(rag)`` is the one place it hooks a RAGAnything, so
RAG-Anything's own entry points and ragopt's engine are measured the same way:

- it listens on the rag's observation layer (``ragopt.engine.observe``): each
  request the service serves (every retry attempt) and each embedding-model
  call (every micro-batch) is one row; a backend that knows its own plan, busy
  and queue time (the simulator) reports them through ``ragopt.backends.callinfo``;
  each storage flush is timed and each cache lookup counted;
- RAG-Anything's CallbackManager delivers the document events (ragopt's
  engine dispatches to it too);
- an RSSMonitor samples RSS and CPU% in the background.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ragopt.engine.observe import observation, observed_embedding, observed_llm
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
    "on_document_skipped",  # ragopt.ingest's own: a file it did not ingest again
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
        self._rows: Dict[str, List[dict]] = {"llm": [], "embed": [], "flush": [], "event": [], "cache_hit": []}
        self._chunks: Dict[str, dict] = {}  # text key -> the document LightRAG stored the chunk for
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
    def attach(self, rag: Any) -> "Recorder":
        """Observe ``rag``: its model calls, document events, storage flushes and cache lookups.

        Through ``ragopt.engine.observe``, the layer innermost of every other one
        (so each retried attempt is a call of its own); any time before the rag's
        first use, or later on a rag that ``ragopt.optimize`` prepared.
        """
        observation(rag).add(self, _callback_class(self)())
        return self

    def detach(self, rag: Any) -> None:
        """Stop observing ``rag``."""
        observation(rag).remove(self)

    def wrap_llm(self, func: Callable) -> Callable:
        """``func`` observed by this Recorder alone (the same layer ``attach`` installs)."""
        return observed_llm(func, [self])

    def wrap_embedding(self, embedding_func: Any) -> Any:
        """The same ``EmbeddingFunc`` observed by this Recorder alone."""
        return observed_embedding(embedding_func, [self])

    # -- what the observation layer reports ----------------------------------------
    def _since_start(self, ns: int) -> float:
        if self._t0 is None:
            self._t0 = time.perf_counter()
        return ns / 1e9 - self._t0

    def _source(self, info: Dict[str, Any]) -> Dict[str, Any]:
        """The call's document: as reported, else that of the chunk it quotes, looked up now (LightRAG stores a
        chunk before extracting from it), so a text ingested twice names each time the document it came in."""
        with self._lock:
            chunk = self._chunks.get(info.get("chunk")) or {}
        return {"doc_id": info.get("doc_id") or chunk.get("doc_id"), "file": info.get("file") or chunk.get("file_path"),
                "chunk": info.get("chunk")}

    def llm_call(self, start_ns: int, end_ns: int, info: Dict[str, Any], error: Optional[BaseException]) -> None:
        latency_ns = end_ns - start_ns
        start = self._since_start(start_ns)
        self._add("llm", {
            "start_s": start,
            "end_s": start + latency_ns / 1e9,
            "latency_s": latency_ns / 1e9,
            # A backend that does not report its busy time is busy for the whole call.
            "service_ns": int(info.get("service_ns", latency_ns)),
            "queue_wait_ns": int(info.get("queue_wait_ns", 0)),
            "planned_ns": info.get("planned_ns"),
            "answer_wait_ns": info.get("answer_wait_ns"),
            # The simulator reports when it granted and released the slot, on time.perf_counter.
            "granted_s": None if info.get("granted_at") is None else info["granted_at"] - self._t0,
            "released_s": None if info.get("released_at") is None else info["released_at"] - self._t0,
            "kind": info.get("kind", "unknown"),
            "outcome": info.get("outcome", "ok" if error is None else type(error).__name__),
            "prompt_tokens": info.get("prompt_tokens"),
            "completion_tokens": info.get("completion_tokens"),
            "cached_prompt_tokens": info.get("cached_prompt_tokens"),
            "token_source": info.get("token_source"),
            "error": None if error is None else f"{type(error).__name__}: {error}",
            **self._source(info),
            "graph_keys": info.get("graph_keys"),
        })

    def embedding_call(self, start_ns: int, end_ns: int, texts: int, tokens: Optional[int] = None) -> None:
        start, end = self._since_start(start_ns), self._since_start(end_ns)
        self._add("embed", {"start_s": start, "end_s": end, "duration_s": end - start, "texts": texts, "tokens": tokens})

    def llm_cache_hit(self, info: Dict[str, Any]) -> None:
        self._add("cache_hit", {"t_s": self.now(), **{k: info.get(k) for k in ("kind", "prompt_tokens", "completion_tokens",
                                                                                "token_source")}, **self._source(info)})

    def chunks_stored(self, chunks: Dict[str, dict]) -> None:
        with self._lock:
            self._chunks.update(chunks)

    def flush(self, start_ns: int, end_ns: int, storage: str) -> None:
        start, end = self._since_start(start_ns), self._since_start(end_ns)
        self._add("flush", {"start_s": start, "end_s": end, "duration_s": end - start, "storage": storage})

    def cache_lookup(self, cache: str, hit: bool) -> None:
        self.count(f"{cache}.{'hits' if hit else 'misses'}")

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
            frames = run_frames(self._rows["llm"], self._rows["embed"], self._rows["flush"], self._rows["event"],
                                self._rows["cache_hit"], self._chunks)
        meta = {**environment_meta(), **self.meta, "label": self.label, "slots": self.slots, "wall_s": self._wall_s}
        return Run(meta=meta, resources=self._monitor.frame(), caches=caches, **frames)
