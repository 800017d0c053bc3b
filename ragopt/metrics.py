"""The profiler: a Recorder that watches one ingestion run and the Run it yields.

The Recorder observes from the outside, so RAG-Anything's own entry points and
ragopt's pipeline are measured the same way:

- the LLM and embedding functions are wrapped before RAG-Anything receives them;
  a backend that knows its own busy and queue time (the simulator) reports it
  through ``ragopt.backends.callinfo``, so the LLM figures are the service's own;
- RAG-Anything's CallbackManager delivers the document stage events;
- each storage's ``index_done_callback`` (a full flush to disk for the default
  JSON/nano-vector/NetworkX storages) is timed;
- an RSSMonitor samples RSS and CPU% in the background.

A Run holds tidy DataFrames and a summary, and round-trips through a JSON run
record together with the config, package versions and machine.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pandas as pd
import psutil

from ragopt.backends import callinfo
from ragopt.memory import RSSMonitor

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
TERMINAL_EVENTS = {"document_complete": "ok", "document_error": "failed", "document_skipped": "skipped"}
STAGE_EVENTS = {"parse_complete": "parse_s", "text_insert_complete": "text_insert_s", "multimodal_complete": "multimodal_s"}
EXTRACT_KINDS = {"extract", "glean"}


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
        self._llm: List[dict] = []
        self._embed: List[dict] = []
        self._flushes: List[dict] = []
        self._events: List[dict] = []
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

    def stop(self, **meta: Any) -> "Run":
        self._wall_s = self.now()
        self._monitor.stop()
        self.meta.update(meta)
        self.run = self._build_run()
        return self.run

    def __enter__(self) -> "Recorder":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- model functions -----------------------------------------------------
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
                recorder._add("llm", {
                    "start_s": start,
                    "end_s": start + latency_ns / 1e9,
                    "latency_s": latency_ns / 1e9,
                    # A backend that does not report its busy time is busy for the whole call.
                    "service_ns": int(info.get("service_ns", latency_ns)),
                    "queue_wait_ns": int(info.get("queue_wait_ns", 0)),
                    "kind": info.get("kind", "unknown"),
                    "outcome": info.get("outcome", "ok" if error is None else type(error).__name__),
                    "prompt_tokens": info.get("prompt_tokens"),
                    "completion_tokens": info.get("completion_tokens"),
                    "error": None if error is None else f"{type(error).__name__}: {error}",
                })

        return recorded_llm

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

    # -- RAG-Anything --------------------------------------------------------
    def observe(self, rag: Any) -> None:
        """Register for ``rag``'s callbacks and time its storage flushes.

        LightRAG creates its storages on first use, so the flush and cache
        counters are attached right after RAG-Anything initializes it.
        """
        from ragopt.pipeline import after_initialization

        rag.callback_manager.register(_callback_class(self)())
        after_initialization(rag, lambda: self._observe_storages(rag))

    def _observe_storages(self, rag: Any) -> None:
        from lightrag.base import StorageNameSpace

        holders = [vars(rag.lightrag), vars(rag)]
        storages = {id(s): s for h in holders for s in h.values() if isinstance(s, StorageNameSpace)}
        for storage in storages.values():
            self._time_flushes(storage)
        self._count_hits(rag.lightrag.llm_response_cache, "get_by_id", "llm_cache")
        self._count_hits(rag, "_get_cached_result", "raganything_parse_cache")

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

    def _count_hits(self, owner: Any, method_name: str, cache_name: str) -> None:
        """Count lookups through ``owner.method_name`` that return something."""
        lookup = getattr(owner, method_name, None)
        if lookup is None:
            return

        async def counted(*args: Any, **kwargs: Any):
            result = await lookup(*args, **kwargs)
            outcome = "hits" if result is not None else "misses"
            self.count(f"{cache_name}.{outcome}")
            return result

        setattr(owner, method_name, counted)

    # -- direct records ------------------------------------------------------
    def record_event(self, event: str, **fields: Any) -> None:
        """An event at the current time: ``document_complete``, ``parse_start``, ..."""
        error = fields.get("error")
        row = {
            "t_s": self.now(),
            "event": event,
            "file_path": None if fields.get("file_path") is None else str(fields.get("file_path")),
            "doc_id": fields.get("doc_id"),
            "stage": fields.get("stage"),
            "duration_s": fields.get("duration_seconds", fields.get("duration_s")),
            "error": None if error is None else (error if isinstance(error, str) else f"{type(error).__name__}: {error}"),
        }
        self._add("event", row)

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def set_cache_stats(self, name: str, stats: Dict[str, Any]) -> None:
        """Stats of a cache the Recorder cannot see itself (e.g. ragopt's parse cache)."""
        self.caches[name] = dict(stats)

    def _add(self, table: str, row: dict) -> None:
        with self._lock:
            {"llm": self._llm, "embed": self._embed, "flush": self._flushes, "event": self._events}[table].append(row)

    # -- result -----------------------------------------------------------------
    def _build_run(self) -> "Run":
        with self._lock:
            caches = dict(self.caches)
            for key, value in self._counts.items():
                cache, stat = key.split(".", 1)
                caches.setdefault(cache, {})[stat] = value
            events = pd.DataFrame(self._events, columns=["t_s", "event", "file_path", "doc_id", "stage", "duration_s", "error"])
            llm = pd.DataFrame(self._llm, columns=list(_LLM_COLUMNS))
            embed = pd.DataFrame(self._embed, columns=["start_s", "end_s", "duration_s", "texts"])
            flushes = pd.DataFrame(self._flushes, columns=["start_s", "end_s", "duration_s", "storage"])
        meta = {**environment_meta(), **self.meta, "label": self.label, "slots": self.slots, "wall_s": self._wall_s}
        return Run(
            meta=meta,
            docs=docs_from_events(events),
            llm_calls=llm.astype({"service_ns": "int64", "queue_wait_ns": "int64"}),
            embedding_calls=embed,
            flushes=flushes,
            events=events,
            resources=self._monitor.frame(),
            caches=caches,
        )


_LLM_COLUMNS = (
    "start_s", "end_s", "latency_s", "service_ns", "queue_wait_ns", "kind",
    "outcome", "prompt_tokens", "completion_tokens", "error",
)
_DOC_COLUMNS = ["file", "doc_id", "status", "start_s", "end_s", "latency_s", "parse_s", "text_insert_s", "multimodal_s", "stage", "error"]


def docs_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """One row per document that reached a terminal event, with its stage times."""
    terminal = events[events["event"].isin(TERMINAL_EVENTS.keys())]
    rows = []
    for row in terminal.itertuples(index=False):
        doc_events = events[(events["doc_id"] == row.doc_id)] if row.doc_id else events.iloc[0:0]
        latency = row.duration_s
        stage_times = {
            column: float(doc_events.loc[doc_events["event"] == event, "duration_s"].fillna(0).sum())
            for event, column in STAGE_EVENTS.items()
        }
        rows.append({
            "file": row.file_path,
            "doc_id": row.doc_id,
            "status": TERMINAL_EVENTS[row.event],
            "start_s": None if latency is None else row.t_s - latency,
            "end_s": row.t_s,
            "latency_s": latency,
            **stage_times,
            "stage": row.stage,
            "error": row.error,
        })
    return pd.DataFrame(rows, columns=_DOC_COLUMNS)


def environment_meta() -> Dict[str, Any]:
    """Package versions and the machine, for a run record."""
    versions = {}
    for package in ("ragopt", "raganything", "lightrag-hku", "torch", "sentence-transformers", "pandas"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "versions": versions,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": psutil.cpu_count(logical=True),
            "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        },
    }


def occupancy(intervals: pd.DataFrame, start: str = "start_s", end: str = "end_s") -> pd.DataFrame:
    """How many intervals are open over time: a step function (t_s, in_flight)."""
    if intervals.empty:
        return pd.DataFrame({"t_s": [0.0], "in_flight": [0]})
    steps = pd.concat([
        pd.DataFrame({"t_s": intervals[start], "delta": 1}),
        pd.DataFrame({"t_s": intervals[end], "delta": -1}),
    ]).sort_values(["t_s", "delta"], kind="stable")
    steps["in_flight"] = steps["delta"].cumsum()
    return steps[["t_s", "in_flight"]].reset_index(drop=True)


@dataclass
class Run:
    """Everything one run measured, as tidy DataFrames, plus its record metadata."""

    meta: Dict[str, Any]
    docs: pd.DataFrame
    llm_calls: pd.DataFrame
    embedding_calls: pd.DataFrame
    flushes: pd.DataFrame
    events: pd.DataFrame
    resources: pd.DataFrame
    caches: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.meta.get("label", "run")

    @property
    def simulated(self) -> bool:
        return bool(self.meta.get("simulated"))

    def llm_slots_in_use(self) -> pd.DataFrame:
        """LLM requests holding a slot over time (the queue wait excluded)."""
        calls = self.llm_calls
        held = pd.DataFrame({"start_s": calls["end_s"] - calls["service_ns"] / 1e9, "end_s": calls["end_s"]})
        return occupancy(held)

    def stage_seconds(self) -> pd.DataFrame:
        """Busy seconds per stage. Stages overlap in a concurrent run; in a serial one they add up to the wall."""
        llm = self.llm_calls
        kinds = llm["kind"].fillna("unknown")
        service = llm["service_ns"] / 1e9
        stages = {
            "parse": float(self.docs["parse_s"].fillna(0).sum()),
            "LLM extract": float(service[kinds.isin(EXTRACT_KINDS)].sum()),
            "LLM merge (summaries)": float(service[kinds == "summary"].sum()),
            "LLM multimodal": float(service[kinds.isin({"table", "image", "equation", "vision"})].sum()),
            "LLM other": float(service[~kinds.isin(EXTRACT_KINDS | {"summary", "table", "image", "equation", "vision"})].sum()),
            "embed": float(self.embedding_calls["duration_s"].sum()),
            "storage flush": float(self.flushes["duration_s"].sum()),
        }
        return pd.DataFrame({"stage": list(stages), "busy_s": list(stages.values())})

    def summary(self) -> Dict[str, Any]:
        """The headline figures of the run; None where the run could not measure one."""
        wall = self.meta.get("wall_s") or float("nan")
        slots = self.meta.get("slots") or 1
        docs = self.docs
        ok = docs[docs["status"] == "ok"]
        latencies = ok["latency_s"].dropna()
        llm = self.llm_calls
        busy_ns = int(llm["service_ns"].sum())
        limit = busy_ns / 1e9 / slots
        texts = int(self.embedding_calls["texts"].sum())
        embed_calls = len(self.embedding_calls)
        resources = self.resources
        parse_cache = self.caches.get("parse_cache", {})
        llm_cache = self.caches.get("llm_cache", {})
        return {
            "label": self.label,
            "simulated_llm": self.simulated,
            "backend": self.meta.get("backend"),
            "docs_total": len(docs),
            "docs_ok": len(ok),
            "docs_failed": int((docs["status"] == "failed").sum()),
            "wall_s": wall,
            "docs_per_min": len(ok) / wall * 60 if wall > 0 else None,
            "doc_latency_p50_s": float(latencies.quantile(0.5)) if len(latencies) else None,
            "doc_latency_p95_s": float(latencies.quantile(0.95)) if len(latencies) else None,
            "llm_calls": len(llm),
            "llm_calls_failed": int((llm["outcome"] != "ok").sum()),
            "llm_calls_by_kind": {str(k): int(v) for k, v in llm["kind"].value_counts().sort_index().items()},
            "llm_busy_ns": busy_ns,
            "llm_busy_s": busy_ns / 1e9,
            "llm_slots": slots,
            "llm_bound_limit_s": limit,
            "wall_over_limit": wall / limit if limit > 0 else None,
            "llm_slot_utilization": limit / wall if wall > 0 else None,
            "llm_max_in_flight": int(self.llm_slots_in_use()["in_flight"].max()) if len(llm) else 0,
            "llm_queue_wait_s": int(llm["queue_wait_ns"].sum()) / 1e9,
            "embedding_calls": embed_calls,
            "embedding_texts": texts,
            "embedding_texts_per_call": texts / embed_calls if embed_calls else None,
            "embedding_s": float(self.embedding_calls["duration_s"].sum()),
            "storage_flushes": len(self.flushes),
            "storage_flush_s": float(self.flushes["duration_s"].sum()),
            "cpu_pct_all_cores": float(resources["cpu_pct"].mean()) if len(resources) else None,
            # The process and its children: the parse pool and the embedding worker.
            "peak_rss_mb": float(resources["total_rss_mb"].max()) if len(resources) else None,
            "parse_cache_hits": parse_cache.get("hits"),
            "parse_cache_misses": parse_cache.get("misses"),
            "parse_cache_hit_rate": parse_cache.get("hit_rate"),
            "llm_cache_hits": llm_cache.get("hits", 0),
            "raganything_parse_cache_hits": self.caches.get("raganything_parse_cache", {}).get("hits", 0),
        }

    def summary_frame(self) -> pd.DataFrame:
        summary = self.summary()
        summary["llm_calls_by_kind"] = json.dumps(summary["llm_calls_by_kind"])
        return pd.DataFrame({"metric": list(summary), "value": list(summary.values())})

    # -- run record -------------------------------------------------------------
    _FRAMES = ("docs", "llm_calls", "embedding_calls", "flushes", "events", "resources")

    def to_json(self, path: str | Path) -> Path:
        record = {
            "format": "ragopt.run/1",
            "meta": self.meta,
            "summary": self.summary(),
            "caches": self.caches,
            **{name: json.loads(getattr(self, name).to_json(orient="split", index=False)) for name in self._FRAMES},
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1, default=_json_default))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> "Run":
        record = json.loads(Path(path).read_text())
        frames = {
            name: pd.DataFrame(record[name]["data"], columns=record[name]["columns"]) for name in cls._FRAMES
        }
        frames["llm_calls"] = frames["llm_calls"].astype({"service_ns": "int64", "queue_wait_ns": "int64"})
        return cls(meta=record["meta"], caches=record.get("caches", {}), **frames)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
