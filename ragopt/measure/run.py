"""The Run: everything one profiled ingestion measured, as tidy DataFrames, and its summary.

The LLM-bound limit is the shortest wall time the run could have had with
every one of the service's K slots busy all along: the service seconds of
its calls over K. On the simulator those seconds are its own plan (each
call's planned service time, which the caller cannot stretch); against a real
endpoint there is no plan, and the limit is the measured busy time over K,
said so in ``llm_bound_limit_source``.

A Run round-trips through a JSON run record with the config, package
versions and machine.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd
import psutil

from ragopt.engine.results import DOC_COLUMNS

TERMINAL_EVENTS = {"document_complete": "ok", "document_error": "failed", "document_skipped": "skipped"}
STAGE_EVENTS = {"parse_complete": "parse_s", "text_insert_complete": "text_s", "multimodal_complete": "multimodal_s"}
EXTRACT_KINDS = {"extract", "glean"}
MULTIMODAL_KINDS = {"table", "image", "equation", "modal", "vision"}
LLM_COLUMNS = (
    "start_s", "end_s", "latency_s", "service_ns", "queue_wait_ns", "planned_ns", "answer_wait_ns", "granted_s", "released_s", "kind",
    "outcome", "prompt_tokens", "completion_tokens", "cached_prompt_tokens", "token_source", "error",
    "doc_id", "file", "chunk",  # where the call came from (ragopt.engine.observe); chunk: the text key it quotes
    "graph_keys",  # the entities and relations an extraction's answer names
)
EMBEDDING_COLUMNS = ["start_s", "end_s", "duration_s", "texts", "tokens"]
# LightRAG LLM-cache hits: calls that never reached the model, valued by the tokens they saved.
CACHE_HIT_COLUMNS = ["t_s", "kind", "prompt_tokens", "completion_tokens", "token_source", "doc_id", "file", "chunk"]
EVENT_COLUMNS = ["t_s", "event", "file_path", "doc_id", "stage", "duration_s", "error"]
LIMIT_FROM_PLAN = "simulator plan"
LIMIT_FROM_BUSY = "measured busy"


def docs_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """One row per document that reached a terminal event, in ``ragopt.engine.results.DOC_COLUMNS``.

    A document's processing began at its terminal event minus the duration
    the event reports (RAG-Anything: since ``process_document_complete``
    began; ragopt: since the document entered the parse stage), else at its
    first event.
    """
    terminal = events[events["event"].isin(TERMINAL_EVENTS.keys())]
    rows = []
    for row in terminal.itertuples(index=False):
        same_doc = events["doc_id"].notna() & (events["doc_id"] == row.doc_id)
        mine = events[(events["file_path"] == row.file_path) | same_doc]
        stage_times = {
            column: float(mine.loc[mine["event"] == event, "duration_s"].fillna(0).sum())
            for event, column in STAGE_EVENTS.items()
        }
        duration = row.duration_s
        started = row.t_s - duration if duration is not None and not pd.isna(duration) else float(mine["t_s"].min())
        error = row.error
        rows.append({
            "file": row.file_path,
            "doc_id": row.doc_id,
            "status": TERMINAL_EVENTS[row.event],
            "stage": row.stage,
            "error_type": None if error is None else str(error).split(":", 1)[0],
            "error": error,
            "cache_hit": None,
            "started_s": started,
            "done_s": row.t_s,
            "processing_s": row.t_s - started,
            **stage_times,
        })
    return pd.DataFrame(rows, columns=DOC_COLUMNS)


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


def _quantile(values: pd.Series, q: float) -> Optional[float]:
    values = values.dropna()
    return float(values.quantile(q)) if len(values) else None


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
    llm_cache_hits: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CACHE_HIT_COLUMNS))

    @property
    def label(self) -> str:
        return self.meta.get("label", "run")

    @property
    def simulated(self) -> bool:
        return bool(self.meta.get("simulated"))

    def llm_slots_in_use(self) -> pd.DataFrame:
        """LLM requests holding a slot over time, from grant to release: the backend's own times where
        it reported them (the simulator), else the end of the call minus its service time. A refused
        request (a 429) never held one."""
        calls = self.llm_calls[self.llm_calls["service_ns"] > 0]
        released = calls["released_s"].fillna(calls["end_s"] - calls["answer_wait_ns"].fillna(0) / 1e9)
        granted = calls["granted_s"].fillna(released - calls["service_ns"] / 1e9)
        return occupancy(pd.DataFrame({"start_s": granted, "end_s": released}))

    def stage_seconds(self) -> pd.DataFrame:
        """Busy seconds per stage. Stages overlap in a concurrent run; in a serial one they add up to the wall."""
        llm = self.llm_calls
        kinds = llm["kind"].fillna("unknown")
        service = llm["service_ns"] / 1e9
        stages = {
            "parse": float(self.docs["parse_s"].fillna(0).sum()),
            "LLM extract": float(service[kinds.isin(EXTRACT_KINDS)].sum()),
            "LLM merge (summaries)": float(service[kinds == "summary"].sum()),
            "LLM multimodal": float(service[kinds.isin(MULTIMODAL_KINDS)].sum()),
            "LLM other": float(service[~kinds.isin(EXTRACT_KINDS | MULTIMODAL_KINDS | {"summary"})].sum()),
            "embed": float(self.embedding_calls["duration_s"].sum()),
            "storage flush": float(self.flushes["duration_s"].sum()),
        }
        return pd.DataFrame({"stage": list(stages), "busy_s": list(stages.values())})

    def llm_limit(self) -> Dict[str, Any]:
        """The LLM-bound limit from the simulator's plan where every call has one, else from measured busy time."""
        llm = self.llm_calls
        slots = self.meta.get("slots") or 1
        busy_ns = int(llm["service_ns"].sum())
        busy_s = busy_ns / 1e9
        planned = llm["planned_ns"]
        planned_s = float(planned.sum()) / 1e9 if len(llm) and planned.notna().all() else None
        source = LIMIT_FROM_PLAN if planned_s is not None else LIMIT_FROM_BUSY
        limit = (planned_s if planned_s is not None else busy_s) / slots
        return {"busy_ns": busy_ns, "busy_s": busy_s, "planned_s": planned_s, "limit_s": limit, "measured_limit_s": busy_s / slots, "source": source}

    def summary(self) -> Dict[str, Any]:
        """The headline figures of the run; None where the run could not measure one."""
        wall = self.meta.get("wall_s") or float("nan")
        slots = self.meta.get("slots") or 1
        docs = self.docs
        ok = docs[docs["status"] == "ok"]
        llm = self.llm_calls
        limit = self.llm_limit()
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
            "doc_done_p50_s": _quantile(ok["done_s"], 0.5),
            "doc_done_p95_s": _quantile(ok["done_s"], 0.95),
            "doc_processing_p50_s": _quantile(ok["processing_s"], 0.5),
            "doc_processing_p95_s": _quantile(ok["processing_s"], 0.95),
            "llm_calls": len(llm),
            "llm_calls_failed": int((llm["outcome"] != "ok").sum()),
            "llm_calls_by_kind": {str(k): int(v) for k, v in llm["kind"].value_counts().sort_index().items()},
            "llm_busy_ns": limit["busy_ns"],
            "llm_busy_s": limit["busy_s"],
            "llm_planned_s": limit["planned_s"],
            "llm_slots": slots,
            "llm_bound_limit_s": limit["limit_s"],
            "llm_bound_limit_source": limit["source"],
            "wall_over_limit": wall / limit["limit_s"] if limit["limit_s"] > 0 else None,
            "wall_over_limit_measured_busy": wall / limit["measured_limit_s"] if limit["measured_limit_s"] > 0 else None,
            "llm_slot_utilization": limit["limit_s"] / wall if wall > 0 else None,
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

    def ledger(self, prices: Any = None) -> Any:
        """Tokens and cost of every call, by document, stage and kind (``ragopt.measure.ledger.Ledger``);
        ``prices``: a ``Prices`` table, a file, or None for RAGOPT_PRICES (a missing price shows "no price")."""
        from ragopt.measure.ledger import Ledger

        return Ledger.of(self, prices)

    def summary_frame(self) -> pd.DataFrame:
        summary = self.summary()
        summary["llm_calls_by_kind"] = json.dumps(summary["llm_calls_by_kind"])
        return pd.DataFrame({"metric": list(summary), "value": list(summary.values())})

    # -- run record -------------------------------------------------------------
    _FRAMES = ("docs", "llm_calls", "embedding_calls", "flushes", "events", "resources", "llm_cache_hits")

    def to_json(self, path: str | Path) -> Path:
        record = {
            "format": "ragopt.run/2",
            "meta": self.meta,
            "summary": self.summary(),
            "caches": self.caches,
            "ledger": self.ledger().record(),
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
            name: pd.DataFrame(record[name]["data"], columns=record[name]["columns"]) for name in cls._FRAMES if name in record
        }
        # A record written before a table or column existed reads it as empty.
        frames["llm_calls"] = frames["llm_calls"].reindex(columns=list(LLM_COLUMNS))
        frames["embedding_calls"] = frames["embedding_calls"].reindex(columns=EMBEDDING_COLUMNS)
        frames["llm_calls"] = frames["llm_calls"].astype({"service_ns": "int64", "queue_wait_ns": "int64", "planned_ns": "Int64", "answer_wait_ns": "Int64"})
        return cls(meta=record["meta"], caches=record.get("caches", {}), **frames)


def run_frames(llm: List[dict], embed: List[dict], flushes: List[dict], events: List[dict],
               cache_hits: List[dict] = (), chunks: Optional[Dict[str, dict]] = None) -> Dict[str, pd.DataFrame]:
    """The Run's tables from the Recorder's rows, with stable columns and dtypes.

    ``chunks`` (text key -> doc_id, file_path, as LightRAG stored them) gives
    each extraction call and cache hit that quotes a chunk its document.
    """
    events_frame = pd.DataFrame(events, columns=EVENT_COLUMNS)
    return {
        "docs": docs_from_events(events_frame),
        "llm_calls": _chunk_documents(pd.DataFrame(llm, columns=list(LLM_COLUMNS)), chunks or {}).astype(
            {"service_ns": "int64", "queue_wait_ns": "int64", "planned_ns": "Int64", "answer_wait_ns": "Int64"}),
        "embedding_calls": pd.DataFrame(embed, columns=EMBEDDING_COLUMNS),
        "flushes": pd.DataFrame(flushes, columns=["start_s", "end_s", "duration_s", "storage"]),
        "events": events_frame,
        "llm_cache_hits": _chunk_documents(pd.DataFrame(list(cache_hits), columns=CACHE_HIT_COLUMNS), chunks or {}),
    }


def _chunk_documents(calls: pd.DataFrame, chunks: Dict[str, dict]) -> pd.DataFrame:
    """Fill doc_id and file of the rows whose chunk LightRAG stored."""
    for column, field_name in (("doc_id", "doc_id"), ("file", "file_path")):
        known = calls["chunk"].map(lambda key: (chunks.get(key) or {}).get(field_name) if isinstance(key, str) else None)
        calls[column] = calls[column].where(calls[column].notna(), known)
    return calls


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if value is pd.NA:
        return None
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
