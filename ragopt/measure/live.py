"""The live view of a run: its current counters and gauges, in a Prometheus registry of its own.

``LiveMetrics`` listens where the Recorder listens (the rag's observation
layer and its CallbackManager), so the live numbers count the same calls and
events the Recorder's Run is built from. It keeps no rows, only totals, and
reads its gauges (LLM requests in a slot and queued, CPU, RSS, the memory
gate) when it is collected. The notebook panel, the dashboard page and
``/metrics`` all read ``families()`` (``headline`` turns them into the
page's numbers), so the three cannot disagree.

Metric names follow Prometheus's conventions: ``ragopt_documents_total{status}``,
``ragopt_llm_requests_total{kind,outcome}``, ``ragopt_llm_requests_in_flight``,
histograms ``ragopt_document_duration_seconds`` and
``ragopt_llm_request_duration_seconds``, bytes and ratios in base units.
``ragopt_run_info{simulated=...}`` says whether the LLM was ragopt's
simulator: told by the caller, else seen in the calls themselves (the
simulator reports ``token_source="simulator"``, also over HTTP).
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
import uuid
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ragopt.engine.observe import observation
from ragopt.measure.run import EXTRACT_KINDS, MULTIMODAL_KINDS, TERMINAL_EVENTS
from ragopt.resources.rss import MB, RSSMonitor

DOCUMENT_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))
LLM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, float("inf"))
RATE_WINDOW_S = 60.0  # "docs/min over the last minute", tokens/s likewise
CACHES = ("parse_cache", "raganything_parse_cache", "llm_cache")


def _llm_stage(kind: str) -> str:
    """The stage an LLM call's service time counts to, as ``Run.stage_seconds`` groups kinds."""
    if kind in EXTRACT_KINDS:
        return "llm_extract"
    if kind == "summary":
        return "llm_summary"
    if kind in MULTIMODAL_KINDS:
        return "llm_multimodal"
    return "llm_other"


class _Window:
    """Amounts with their times, kept for ``RATE_WINDOW_S``: a rate over the last minute."""

    def __init__(self) -> None:
        self._events: Deque[Tuple[float, float]] = collections.deque()

    def add(self, t: float, amount: float = 1.0) -> None:
        self._events.append((t, amount))

    def per_second(self, now: float, elapsed_s: float) -> float:
        while self._events and self._events[0][0] < now - RATE_WINDOW_S:
            self._events.popleft()
        span = min(RATE_WINDOW_S, elapsed_s)  # a run younger than the window: over its age
        return sum(amount for _, amount in self._events) / span if span > 0 else 0.0


class LiveMetrics:
    """Counters and gauges of one run while it goes on; ``attach(rag)`` to listen, ``families()`` to read.

    ``slots`` is K, the LLM service's concurrent slots; ``simulator`` (an
    ``LLMSimulator``) gives requests in a slot and queued, else ``stats``
    (a rag's ``ragopt_stats``) gives the requests in flight; ``budget`` (a
    ``MemoryBudget``) gives the memory gate. ``simulated=None``: seen in
    the calls.
    """

    def __init__(self, label: str = "run", slots: Optional[int] = None, simulated: Optional[bool] = None,
                 backend: str = "", simulator: Any = None, stats: Optional[Dict[str, Any]] = None,
                 budget: Any = None, sample_interval_s: float = 1.0):
        self.label = label
        self.run_id = f"{label}-{uuid.uuid4().hex[:6]}"  # runs with the same label stay apart on /metrics
        self.slots, self.simulator, self.stats, self.budget = slots, simulator, stats, budget
        self.backend = backend
        self.simulated = simulated
        self._lock = threading.Lock()
        self._t0: Optional[float] = None
        self._ended: Optional[float] = None
        self._in_flight_docs: set = set()
        self._docs_window, self._tokens_window = _Window(), _Window()
        self._monitor = RSSMonitor(interval_s=sample_interval_s)

        self.registry = registry = CollectorRegistry(auto_describe=False)
        self.documents = Counter("ragopt_documents", "Documents finished, by status (ok, failed, skipped)",
                                 ["status"], registry=registry)
        self.document_seconds = Histogram("ragopt_document_duration_seconds",
                                          "Processing time of each finished document, by status",
                                          ["status"], buckets=DOCUMENT_BUCKETS, registry=registry)
        self.llm_requests = Counter("ragopt_llm_requests", "LLM requests the service answered or refused, by prompt kind and outcome",
                                    ["kind", "outcome"], registry=registry)
        self.llm_seconds = Histogram("ragopt_llm_request_duration_seconds", "Latency of each LLM request, queueing included",
                                     ["kind"], buckets=LLM_BUCKETS, registry=registry)
        self.prompt_tokens = Counter("ragopt_llm_prompt_tokens", "Tokens sent to the LLM", registry=registry)
        self.completion_tokens = Counter("ragopt_llm_completion_tokens", "Tokens the LLM answered", registry=registry)
        self.queue_wait = Counter("ragopt_llm_queue_wait_seconds", "Seconds LLM requests waited for a slot of the service",
                                  registry=registry)
        self.embedding_calls = Counter("ragopt_embedding_calls", "Calls of the embedding model", registry=registry)
        self.embedding_texts = Counter("ragopt_embedding_texts", "Texts the embedding model encoded", registry=registry)
        self.flushes = Counter("ragopt_storage_flushes", "Storage flushes (index_done_callback), by storage", ["storage"],
                               registry=registry)
        self.cache_lookups = Counter("ragopt_cache_lookups", "Cache lookups, by cache and result (hit, miss)",
                                     ["cache", "result"], registry=registry)
        self.stage_seconds = Counter("ragopt_stage_busy_seconds", "Busy seconds per stage (stages overlap)", ["stage"],
                                     registry=registry)
        self.info = Info("ragopt_run", "The run: its label, whether the LLM is ragopt's simulator, the backend",
                         registry=registry)
        registry.register(_Gauges(self))
        for cache in CACHES:  # every cache shows, with 0 lookups until it is used
            for result in ("hit", "miss"):
                self.cache_lookups.labels(cache, result)
        self._describe()

    # -- lifetime -------------------------------------------------------------
    def start(self) -> "LiveMetrics":
        self._t0 = time.perf_counter()
        self._monitor.start()
        return self

    def finish(self) -> None:
        """The run is over: gauges of the process stop, the totals stay."""
        if self._ended is None:
            self._ended = time.perf_counter()
            self._monitor.stop()

    @property
    def done(self) -> bool:
        return self._ended is not None

    def elapsed_s(self) -> float:
        if self._t0 is None:
            return 0.0
        return (self._ended or time.perf_counter()) - self._t0

    def attach(self, rag: Any) -> "LiveMetrics":
        """Listen to ``rag``: its model calls, flushes and cache lookups, and its document events."""
        observation(rag).add(self, _callback(self))
        return self

    def detach(self, rag: Any) -> None:
        observation(rag).remove(self)

    # -- what the observation layer reports ------------------------------------
    def llm_call(self, start_ns: int, end_ns: int, info: Dict[str, Any], error: Optional[BaseException]) -> None:
        kind = info.get("kind", "unknown")
        latency_s = (end_ns - start_ns) / 1e9
        self.llm_requests.labels(kind, info.get("outcome", "ok" if error is None else type(error).__name__)).inc()
        self.llm_seconds.labels(kind).observe(latency_s)
        prompt, completion = info.get("prompt_tokens") or 0, info.get("completion_tokens") or 0
        self.prompt_tokens.inc(prompt)
        self.completion_tokens.inc(completion)
        self.queue_wait.inc(info.get("queue_wait_ns", 0) / 1e9)
        # As the Recorder counts it: a backend that does not report its busy time is busy for the whole call.
        self.stage_seconds.labels(_llm_stage(kind)).inc(info.get("service_ns", end_ns - start_ns) / 1e9)
        with self._lock:
            self._tokens_window.add(time.perf_counter(), prompt + completion)
        if self.simulated is None and info.get("token_source") == "simulator":
            self.simulated = True
            self._describe()

    def embedding_call(self, start_ns: int, end_ns: int, texts: int, tokens: Optional[int] = None) -> None:
        self.embedding_calls.inc()
        self.embedding_texts.inc(texts)
        self.stage_seconds.labels("embed").inc((end_ns - start_ns) / 1e9)

    def flush(self, start_ns: int, end_ns: int, storage: str) -> None:
        self.flushes.labels(storage).inc()
        self.stage_seconds.labels("storage_flush").inc((end_ns - start_ns) / 1e9)

    def cache_lookup(self, cache: str, hit: bool) -> None:
        self.cache_lookups.labels(cache, "hit" if hit else "miss").inc()

    # -- document events (RAG-Anything's CallbackManager) -------------------------
    def document_event(self, event: str, **fields: Any) -> None:
        key = str(fields.get("file_path") or fields.get("doc_id"))
        duration = fields.get("duration_seconds")
        if event == "parse_start":
            with self._lock:
                self._in_flight_docs.add(key)
        elif event == "parse_complete":
            self.stage_seconds.labels("parse").inc(duration or 0.0)
            if fields.get("cache_hit") is not None:  # ragopt's engine says whether its parse cache answered
                self.cache_lookups.labels("parse_cache", "hit" if fields["cache_hit"] else "miss").inc()
        elif event in TERMINAL_EVENTS:
            status = TERMINAL_EVENTS[event]
            self.documents.labels(status).inc()
            if duration is not None and status != "skipped":
                self.document_seconds.labels(status).observe(duration)
            with self._lock:
                self._in_flight_docs.discard(key)
                if status == "ok":
                    self._docs_window.add(time.perf_counter())

    # -- reading ------------------------------------------------------------------
    def families(self) -> List[Metric]:
        """Every metric family now (what /metrics shows for this run)."""
        return list(self.registry.collect())

    def llm_calls(self, kind: Optional[str] = None) -> float:
        """LLM requests so far (of one prompt kind), whatever their outcome."""
        match = {} if kind is None else {"kind": kind}
        return _total(samples(self.families()), "ragopt_llm_requests_total", **match)

    def meta(self) -> Dict[str, Any]:
        return {"run": self.run_id, "label": self.label, "simulated": self.simulated, "backend": self.backend,
                "done": self.done}

    def headline(self) -> Dict[str, Any]:
        """The page's and the panel's numbers, from the same families /metrics shows."""
        return headline(samples(self.families()), self.meta())

    def _describe(self) -> None:
        simulated = {True: "true", False: "false", None: "unknown"}[self.simulated]
        self.info.info({"label": self.label, "simulated": simulated, "backend": self.backend or "unknown"})

    def _gauge_values(self) -> Dict[str, Any]:
        """What is read at collection time: documents in flight, rates, the LLM's slots, CPU, RSS, the gate."""
        now, elapsed = (self._ended or time.perf_counter()), self.elapsed_s()
        with self._lock:
            values: Dict[str, Any] = {
                "documents_in_flight": len(self._in_flight_docs),
                "documents_per_minute_1m": 60 * self._docs_window.per_second(now, elapsed),
                "tokens_per_second_1m": self._tokens_window.per_second(now, elapsed),
            }
        values["elapsed_seconds"] = elapsed
        values.update(_llm_load(self.simulator, self.stats))
        if self.slots is not None:
            values["llm_slots"] = self.slots
        frame = self._monitor.frame()
        if len(frame):
            last = frame.iloc[-1]
            values["resident_memory_bytes"] = float(last["total_rss_mb"]) * MB
            cpu = frame["cpu_pct"].dropna()
            if len(cpu):
                values["cpu_ratio"] = float(cpu.iloc[-1]) / 100
        if self.budget is not None and getattr(self.budget, "max_mb", None) is not None:
            values.update(gate_holding=int(self.budget.holding), gate_holds=self.budget.held_count,
                          gate_held_seconds=self.budget.held_seconds)
        retries = ((self.stats or {}).get("llm_retries") or {}).get("retries")
        if retries is not None:
            values["llm_retries"] = retries
        return values


def _llm_load(simulator: Any, stats: Optional[Dict[str, Any]]) -> Dict[str, int]:
    """LLM requests holding a slot and waiting for one: the simulator's own view, else ragopt's count of calls out."""
    if simulator is not None:
        return {"llm_in_flight": simulator.in_flight, "llm_queued": simulator.queued}
    in_flight = ((stats or {}).get("llm") or {}).get("in_flight")
    return {} if in_flight is None else {"llm_in_flight": in_flight}


# name, help, type, key of _gauge_values
_GAUGES = (
    ("ragopt_documents_in_flight", "Documents started and not finished", "gauge", "documents_in_flight"),
    ("ragopt_documents_per_minute", "Documents done per minute over the last minute", "gauge", "documents_per_minute_1m"),
    ("ragopt_llm_tokens_per_second", "LLM tokens (prompt and completion) per second over the last minute", "gauge",
     "tokens_per_second_1m"),
    ("ragopt_run_elapsed_seconds", "Seconds since the run started", "gauge", "elapsed_seconds"),
    ("ragopt_llm_requests_in_flight", "LLM requests holding a slot of the service", "gauge", "llm_in_flight"),
    ("ragopt_llm_requests_queued", "LLM requests waiting for a slot of the service", "gauge", "llm_queued"),
    ("ragopt_llm_slots", "K: requests the LLM service serves at once", "gauge", "llm_slots"),
    ("ragopt_cpu_ratio", "CPU busy share of all cores, the process and its children (1 = every core)", "gauge", "cpu_ratio"),
    ("ragopt_resident_memory_bytes", "Resident memory of the process and its children", "gauge", "resident_memory_bytes"),
    ("ragopt_memory_gate_holding", "1 while the memory gate admits no new document", "gauge", "gate_holding"),
    ("ragopt_memory_gate_holds", "Times the memory gate closed", "counter", "gate_holds"),
    ("ragopt_memory_gate_held_seconds", "Seconds the memory gate was closed", "counter", "gate_held_seconds"),
    ("ragopt_llm_retries", "LLM requests ragopt's retries sent again", "counter", "llm_retries"),
)


class _Gauges:
    """A collector of the values read at collection time (absent where the run cannot know them)."""

    def __init__(self, live: LiveMetrics):
        self.live = live

    def collect(self) -> Iterable[Metric]:
        values = self.live._gauge_values()
        for name, documentation, kind, key in _GAUGES:
            if key in values:
                family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, documentation)
                family.add_metric([], values[key])
                yield family


def _callback(live: LiveMetrics) -> Any:
    """A RAG-Anything ProcessingCallback passing document events to ``live``."""
    from raganything.callbacks import ProcessingCallback

    def handler(event: str) -> Callable[..., None]:
        return lambda self, **fields: live.document_event(event, **fields)

    events = ("parse_start", "parse_complete", *TERMINAL_EVENTS)
    return type("LiveCallback", (ProcessingCallback,), {f"on_{event}": handler(event) for event in events})()


@contextlib.contextmanager
def published(rag: Any, publisher: Any, live: LiveMetrics) -> Iterator[LiveMetrics]:
    """``live``, attached to ``rag``, is published for the duration of the block, then detached.

    A publisher has ``publish(live)`` and ``finish(live)``: this process's
    ``ragopt.ui.dashboard.Dashboard``, or a ``PushPublisher`` to another's.
    """
    live.start()
    publisher.publish(live)
    try:
        yield live
    finally:
        live.finish()
        live.detach(rag)
        publisher.finish(live)


# -- families as numbers and as JSON (a child process publishes them to the page) -----------

SampleKey = Tuple[str, Tuple[Tuple[str, str], ...]]


def samples(families: Iterable[Metric], drop: Tuple[str, ...] = ()) -> Dict[SampleKey, float]:
    """Every sample as (name, sorted labels) -> value; ``drop`` leaves labels out of the key."""
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in drop))): s.value
            for family in families for s in family.samples}


def families_to_json(families: Iterable[Metric]) -> List[Dict[str, Any]]:
    return [{"name": f.name, "documentation": f.documentation, "type": f.type, "unit": f.unit,
             "samples": [[s.name, s.labels, s.value] for s in f.samples]} for f in families]


def families_from_json(data: Iterable[Dict[str, Any]]) -> List[Metric]:
    families = []
    for item in data:
        family = Metric(item["name"], item["documentation"], item["type"], item.get("unit", ""))
        for name, labels, value in item["samples"]:
            family.add_sample(name, labels, value)
        families.append(family)
    return families


def _total(values: Dict[SampleKey, float], name: str, **match: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``match``."""
    return sum(v for (n, labels), v in values.items() if n == name and set(match.items()) <= set(labels))


def _gauge(values: Dict[SampleKey, float], name: str) -> Optional[float]:
    return values.get((name, ()))


def headline(values: Dict[SampleKey, float], meta: Dict[str, Any]) -> Dict[str, Any]:
    """The numbers the page and the panel show, each one read from (or summed over) the samples."""
    llm_calls = _total(values, "ragopt_llm_requests_total")
    numbers: Dict[str, Any] = {
        **meta,
        "elapsed_s": _gauge(values, "ragopt_run_elapsed_seconds"),
        "docs_ok": _total(values, "ragopt_documents_total", status="ok"),
        "docs_failed": _total(values, "ragopt_documents_total", status="failed"),
        "docs_skipped": _total(values, "ragopt_documents_total", status="skipped"),
        "docs_in_flight": _gauge(values, "ragopt_documents_in_flight"),
        "docs_per_min": _gauge(values, "ragopt_documents_per_minute"),
        "llm_in_flight": _gauge(values, "ragopt_llm_requests_in_flight"),
        "llm_queued": _gauge(values, "ragopt_llm_requests_queued"),
        "llm_slots": _gauge(values, "ragopt_llm_slots"),
        "llm_calls": llm_calls,
        "llm_errors": llm_calls - _total(values, "ragopt_llm_requests_total", outcome="ok"),
        "llm_429": _total(values, "ragopt_llm_requests_total", outcome="429"),
        "llm_retries": _gauge(values, "ragopt_llm_retries_total"),
        "prompt_tokens": _total(values, "ragopt_llm_prompt_tokens_total"),
        "completion_tokens": _total(values, "ragopt_llm_completion_tokens_total"),
        "tokens_per_s": _gauge(values, "ragopt_llm_tokens_per_second"),
        "embedding_calls": _total(values, "ragopt_embedding_calls_total"),
        "embedding_texts": _total(values, "ragopt_embedding_texts_total"),
        "storage_flushes": _total(values, "ragopt_storage_flushes_total"),
        "cpu_pct": None if _gauge(values, "ragopt_cpu_ratio") is None else 100 * _gauge(values, "ragopt_cpu_ratio"),
        "rss_mb": None if _gauge(values, "ragopt_resident_memory_bytes") is None
        else _gauge(values, "ragopt_resident_memory_bytes") / MB,
        "gate_holding": _gauge(values, "ragopt_memory_gate_holding"),
        "gate_holds": _gauge(values, "ragopt_memory_gate_holds_total"),
    }
    for cache in CACHES:
        hits = _total(values, "ragopt_cache_lookups_total", cache=cache, result="hit")
        misses = _total(values, "ragopt_cache_lookups_total", cache=cache, result="miss")
        numbers[f"{cache}_hits"], numbers[f"{cache}_misses"] = hits, misses
        numbers[f"{cache}_hit_rate"] = hits / (hits + misses) if hits + misses else None
    return numbers
