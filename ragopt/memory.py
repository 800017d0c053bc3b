"""Memory tools for ingestion runs: bounded caches, RSS timelines, an admission
gate, leak checks, and releasing a RAG-Anything instance.

* ``BoundedStore``  a thread-safe LRU + TTL + size-bounded mapping.
* ``RSSMonitor``    a background sampler of RSS and CPU for a process tree.
* ``MemoryBudget``  an asyncio gate that holds new work back while RSS is high.
* ``LeakCheck``     tracemalloc growth by file:line between checkpoints.
* ``soak``          run a function N times and fit the RSS slope.
* ``release_rag``   give a ``raganything.RAGAnything`` instance's memory back.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import sys
import threading
import time
import tracemalloc
from collections import OrderedDict, deque
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, Iterator, List, Optional

import numpy as np
import pandas as pd
import psutil

from ragopt.aio import run_sync

MB = 1024 * 1024


def process_tree_rss_mb(process: Optional[psutil.Process] = None, include_children: bool = True) -> float:
    """RSS of ``process`` (default: this one) plus, optionally, all its descendants, in MB."""
    process = process or psutil.Process()
    total = process.memory_info().rss
    if include_children:
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass  # exited between listing and reading
    return total / MB


# --------------------------------------------------------------------------- BoundedStore


class _Entry:
    __slots__ = ("value", "size")

    def __init__(self, value: Any, size: int):
        self.value = value
        self.size = size


class BoundedStore(MutableMapping):
    """A thread-safe mapping bounded by item count, bytes and age.

    * LRU: reads and writes make a key most recently used; the least recently
      used key is evicted first when ``max_items`` or ``max_bytes`` is exceeded.
    * TTL: a key expires ``ttl_s`` seconds after it was last *written*. Expiry is
      enforced on every operation (read, write, delete, ``len``, iteration,
      ``in``), not only on read, so expired values never pin memory.
    * ``max_bytes`` counts ``sizeof(value)`` per entry (default ``sys.getsizeof``,
      which is shallow: pass a ``sizeof`` that knows your values, e.g.
      ``lambda a: a.nbytes`` for arrays). A single value larger than
      ``max_bytes`` is rejected with ``ValueError``.

    All operations are O(1) amortized. Values are held by strong references:
    weak references to the cached values (as in the original guide's
    MemoryManager) let the garbage collector empty the cache at random.
    """

    def __init__(
        self,
        max_items: Optional[int] = None,
        max_bytes: Optional[int] = None,
        ttl_s: Optional[float] = None,
        sizeof: Callable[[Any], int] = sys.getsizeof,
        clock: Callable[[], float] = time.monotonic,
    ):
        for name, limit in (("max_items", max_items), ("max_bytes", max_bytes), ("ttl_s", ttl_s)):
            if limit is not None and limit <= 0:
                raise ValueError(f"{name} must be positive, got {limit}")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._sizeof = sizeof
        self._clock = clock
        self._lock = threading.RLock()
        # Ordered by last access: the front is the LRU victim.
        self._entries: "OrderedDict[Hashable, _Entry]" = OrderedDict()
        # Ordered by last write, holding each key's deadline. With one TTL for
        # all keys, write order is deadline order, so expired keys are always at
        # the front: the sweep stops at the first live key (amortized O(1)).
        self._deadlines: "OrderedDict[Hashable, float]" = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = self._expirations = 0

    # -- internals (call with the lock held)

    def _sweep_expired(self) -> None:
        if self.ttl_s is None:
            return
        now = self._clock()
        while self._deadlines:
            key, deadline = next(iter(self._deadlines.items()))
            if deadline > now:
                break
            self._remove(key)
            self._expirations += 1

    def _remove(self, key: Hashable) -> _Entry:
        entry = self._entries.pop(key)
        # pop with a default: a key may have no deadline (no TTL), and eviction
        # must never fail on the secondary index.
        self._deadlines.pop(key, None)
        self._bytes -= entry.size
        return entry

    def _over_limits(self) -> bool:
        return (self.max_items is not None and len(self._entries) > self.max_items) or (
            self.max_bytes is not None and self._bytes > self.max_bytes
        )

    # -- MutableMapping

    def __getitem__(self, key: Hashable) -> Any:
        with self._lock:
            self._sweep_expired()
            entry = self._entries.get(key)
            if entry is None:
                self._misses += 1
                raise KeyError(key)
            self._hits += 1
            self._entries.move_to_end(key)
            return entry.value

    def __setitem__(self, key: Hashable, value: Any) -> None:
        size = self._sizeof(value) if self.max_bytes is not None else 0
        if self.max_bytes is not None and size > self.max_bytes:
            raise ValueError(f"value of {size} bytes exceeds max_bytes={self.max_bytes}")
        with self._lock:
            self._sweep_expired()
            if key in self._entries:
                self._remove(key)
            self._entries[key] = _Entry(value, size)
            self._bytes += size
            if self.ttl_s is not None:
                self._deadlines[key] = self._clock() + self.ttl_s
            while self._over_limits():
                self._remove(next(iter(self._entries)))
                self._evictions += 1

    def __delitem__(self, key: Hashable) -> None:
        with self._lock:
            self._sweep_expired()
            self._remove(key)

    def __contains__(self, key: object) -> bool:
        # Membership neither counts as a hit nor refreshes the LRU position.
        with self._lock:
            self._sweep_expired()
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            self._sweep_expired()
            return len(self._entries)

    def __iter__(self) -> Iterator[Hashable]:
        # A snapshot, so other threads may read/write while the caller iterates.
        with self._lock:
            self._sweep_expired()
            keys = list(self._entries)
        return iter(keys)

    # The MutableMapping mixins below read then delete (or read then write);
    # holding the reentrant lock across both makes each one atomic.

    def pop(self, key: Hashable, *default: Any) -> Any:
        with self._lock:
            return super().pop(key, *default)

    def popitem(self) -> tuple:
        with self._lock:
            return super().popitem()

    def setdefault(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            return super().setdefault(key, default)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._deadlines.clear()
            self._bytes = 0

    def stats(self) -> Dict[str, int]:
        """Counters since creation plus the current size (items and bytes)."""
        with self._lock:
            self._sweep_expired()
            return {
                "hits": self._hits,
                "misses": self._misses,
                "evictions": self._evictions,
                "expirations": self._expirations,
                "size": len(self._entries),
                "bytes": self._bytes,
            }


# --------------------------------------------------------------------------- RSSMonitor


CPU_WINDOW_S = 0.25  # RSSMonitor's cpu_pct is a rate over at least this long: 25 clock ticks


class RSSMonitor:
    """Sample RSS and CPU of a process (and its children) on a background thread.

    ``cpu_pct`` is the CPU time the whole process tree used over the last
    ``CPU_WINDOW_S`` (at least) divided by (that time x number of logical
    cores), times 100: 100% means every core was busy, so a single-threaded
    run on 8 cores shows ~12.5%. It is NaN until a timeline is that long:
    CPU time comes in clock ticks (usually 10 ms) and the sampling thread can
    wait for the GIL between reading a process's CPU time and the clock, so
    rates over a few tens of milliseconds are noise (a 50 ms interval once
    read 279% on 2 cores).

    Samples are taken every ``interval_s`` plus once at ``start()`` and once at
    ``stop()``; a spike shorter than the interval can be missed. Each ``start()``
    begins a new timeline, so one monitor can be reused.
    """

    def __init__(
        self, interval_s: float = 0.1, process: Optional[psutil.Process] = None, include_children: bool = True
    ):
        self.interval_s = interval_s
        self.process = process or psutil.Process()
        self.include_children = include_children
        self._samples: List[Dict[str, float]] = []
        self._samples_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._t0 = 0.0
        self._last_sample_t: Optional[float] = None
        self._last_sample_epoch: Optional[float] = None  # the same moment on psutil's clock (create_time)
        self._cpu_seen: Dict[int, deque] = {}  # pid -> its readings (cpu seconds, when read) in the window

    def start(self) -> "RSSMonitor":
        if self._thread is not None:
            raise RuntimeError("RSSMonitor is already running")
        with self._samples_lock:
            self._samples = []
        self._stop_event.clear()
        self._t0 = time.perf_counter()
        self._last_sample_t = None
        self._last_sample_epoch = None
        self._cpu_seen = {}
        self._sample()
        self._thread = threading.Thread(target=self._run, name="RSSMonitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> "RSSMonitor":
        if self._thread is None:
            return self
        self._stop_event.set()
        self._thread.join()
        self._thread = None
        self._sample()
        return self

    def __enter__(self) -> "RSSMonitor":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self._sample()

    def _tree(self) -> List[psutil.Process]:
        if not self.include_children:
            return [self.process]
        try:
            return [self.process, *self.process.children(recursive=True)]
        except psutil.NoSuchProcess:
            return [self.process]

    def _sample(self) -> None:
        started = sample_t = time.perf_counter()
        started_epoch = time.time()
        own_mb = children_mb = busy_cores = 0.0
        own_window_s = 0.0
        tree = self._tree()
        for gone in set(self._cpu_seen) - {proc.pid for proc in tree}:
            del self._cpu_seen[gone]
        for proc in tree:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    # Stamped right after the read: this thread can wait a long
                    # time for the GIL (children() alone reads all of /proc), so
                    # one timestamp for the whole sample would skew the rates.
                    read_t = time.perf_counter()
                    rss_mb = proc.memory_info().rss / MB
                    # A child born since the last sample used all its CPU time since then;
                    # one that was there but not listed (a race) is only counted from now.
                    born_since_last = (proc.pid not in self._cpu_seen and self._last_sample_t is not None
                                       and proc.create_time() >= self._last_sample_epoch)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue  # exited between listing and reading
            cumulative = times.user + times.system
            readings = self._cpu_seen.setdefault(proc.pid, deque())
            if born_since_last:
                readings.append((0.0, self._last_sample_t))
            readings.append((cumulative, read_t))
            # The newest reading at least CPU_WINDOW_S old starts this process's window.
            while len(readings) > 2 and read_t - readings[1][1] >= CPU_WINDOW_S:
                readings.popleft()
            first_cpu, first_t = readings[0]
            if read_t > first_t:
                busy_cores += (cumulative - first_cpu) / (read_t - first_t)
            if proc.pid == self.process.pid:
                own_mb, sample_t, own_window_s = rss_mb, read_t, read_t - first_t
            else:
                children_mb += rss_mb
        cpu_pct = 100.0 * busy_cores / (psutil.cpu_count() or 1) if own_window_s >= CPU_WINDOW_S else float("nan")
        self._last_sample_t, self._last_sample_epoch = started, started_epoch
        sample = {
            "t_s": sample_t - self._t0,
            "rss_mb": own_mb,
            "children_rss_mb": children_mb,
            "total_rss_mb": own_mb + children_mb,
            "cpu_pct": cpu_pct,
        }
        with self._samples_lock:
            self._samples.append(sample)

    def frame(self) -> pd.DataFrame:
        """The timeline so far: t_s, rss_mb, children_rss_mb, total_rss_mb, cpu_pct."""
        with self._samples_lock:
            rows = list(self._samples)
        return pd.DataFrame(rows, columns=["t_s", "rss_mb", "children_rss_mb", "total_rss_mb", "cpu_pct"])

    @property
    def peak_rss_mb(self) -> float:
        """Highest sampled RSS of the process plus its children, in MB."""
        with self._samples_lock:
            return max((s["total_rss_mb"] for s in self._samples), default=0.0)


# --------------------------------------------------------------------------- MemoryBudget


@dataclass
class HoldEvent:
    """One period during which the budget admitted no new work."""

    started_s: float  # since the budget was created
    held_s: float
    rss_mb_at_hold: float
    rss_mb_at_resume: float


class MemoryBudget:
    """An asyncio admission gate that keeps batch ingestion under a memory limit.

    Each task does ``async with budget.admit():`` (or ``await budget.acquire()``)
    before starting a document. When RSS is above ``max_mb`` the gate closes and
    every arriving task waits; it reopens only once RSS is below ``low_water_mb``
    (default 90% of ``max_mb``). The gap stops the gate from flapping open and
    shut around a single threshold. Work already admitted is not interrupted.

    ``rss_fn`` returns the current RSS in MB (default: this process plus its
    children, a few ms of psutil calls). It runs inline on the event loop, at
    most once per ``poll_s / 2`` however many tasks arrive or wait; waiting is
    ``asyncio.sleep(poll_s)``, so the loop is never blocked. ``max_mb=None``
    disables the gate.
    """

    def __init__(
        self,
        max_mb: Optional[float],
        low_water_mb: Optional[float] = None,
        rss_fn: Optional[Callable[[], float]] = None,
        poll_s: float = 0.05,
    ):
        if max_mb is not None:
            low_water_mb = 0.9 * max_mb if low_water_mb is None else low_water_mb
            if not 0 < low_water_mb <= max_mb:
                raise ValueError(f"need 0 < low_water_mb <= max_mb, got {low_water_mb} and {max_mb}")
        self.max_mb = max_mb
        self.low_water_mb = low_water_mb
        self.rss_fn = rss_fn or process_tree_rss_mb
        self.poll_s = poll_s
        self.events: List[HoldEvent] = []
        self._holding = False
        self._hold_started = 0.0
        self._rss_at_hold = 0.0
        self._rss_mb = 0.0
        self._rss_read_at = float("-inf")
        self._t0 = time.perf_counter()

    def _current_rss_mb(self) -> float:
        # Shared by all tasks: a hundred waiters must not mean a hundred reads per poll.
        now = time.perf_counter()
        if now - self._rss_read_at >= self.poll_s / 2:
            self._rss_mb = self.rss_fn()
            self._rss_read_at = now
        return self._rss_mb

    @property
    def held_count(self) -> int:
        return len(self.events)

    @property
    def held_seconds(self) -> float:
        return sum(event.held_s for event in self.events)

    async def acquire(self) -> None:
        """Return at once if the gate is open, else wait until RSS drops below low water."""
        if self.max_mb is None:
            return
        if not self._holding:
            rss_mb = self._current_rss_mb()
            if rss_mb <= self.max_mb:
                return
            self._holding = True
            self._hold_started = time.perf_counter()
            self._rss_at_hold = rss_mb
        # Every waiter polls; whichever first sees low water reopens the gate for all.
        while self._holding:
            await asyncio.sleep(self.poll_s)
            if not self._holding:
                break
            rss_mb = self._current_rss_mb()
            if rss_mb < self.low_water_mb:
                self._holding = False
                now = time.perf_counter()
                self.events.append(
                    HoldEvent(
                        started_s=self._hold_started - self._t0,
                        held_s=now - self._hold_started,
                        rss_mb_at_hold=self._rss_at_hold,
                        rss_mb_at_resume=rss_mb,
                    )
                )

    @contextlib.asynccontextmanager
    async def admit(self):
        """``async with budget.admit():`` waits for admission, then runs the block."""
        await self.acquire()
        yield self


# --------------------------------------------------------------------------- LeakCheck


class LeakCheck:
    """Find where memory grows, by file:line, using tracemalloc snapshots.

    ::

        with LeakCheck() as leaks:          # checkpoints "start" and "end"
            for doc in docs:
                ingest(doc)
        leaks.top_growth(10)

    Starts tracemalloc on enter if it was not running, and stops it on exit
    only in that case. Tracing slows allocation-heavy code several times over.
    """

    def __init__(self, frames: int = 1):
        self.frames = frames
        self.snapshots: "OrderedDict[str, tracemalloc.Snapshot]" = OrderedDict()
        self._started_tracing = False

    def __enter__(self) -> "LeakCheck":
        if not tracemalloc.is_tracing():
            tracemalloc.start(self.frames)
            self._started_tracing = True
        self.checkpoint("start")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.checkpoint("end")
        if self._started_tracing:
            tracemalloc.stop()
            self._started_tracing = False

    def checkpoint(self, label: str) -> None:
        if not tracemalloc.is_tracing():
            raise RuntimeError("tracemalloc is not tracing: use LeakCheck as a context manager")
        gc.collect()  # count only what is still reachable
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
                tracemalloc.Filter(False, "<unknown>"),
            ]
        )
        self.snapshots[label] = snapshot

    def top_growth(self, n: int = 10, first: Optional[str] = None, last: Optional[str] = None) -> pd.DataFrame:
        """Top ``n`` lines by growth from checkpoint ``first`` to ``last`` (default: first and last taken).

        Columns: location ("file:line"), size_diff_kb, count_diff, size_kb.
        """
        if len(self.snapshots) < 2:
            raise ValueError("need at least two checkpoints")
        labels = list(self.snapshots)
        before = self.snapshots[first or labels[0]]
        after = self.snapshots[last or labels[-1]]
        diffs = [d for d in after.compare_to(before, "lineno") if d.size_diff > 0][:n]
        return pd.DataFrame(
            [
                {
                    "location": f"{d.traceback[0].filename}:{d.traceback[0].lineno}",
                    "size_diff_kb": d.size_diff / 1024,
                    "count_diff": d.count_diff,
                    "size_kb": d.size / 1024,
                }
                for d in diffs
            ],
            columns=["location", "size_diff_kb", "count_diff", "size_kb"],
        )


# --------------------------------------------------------------------------- soak


@dataclass
class SoakResult:
    """RSS per sampled iteration and the fitted growth after warm-up."""

    frame: pd.DataFrame  # iteration, rss_mb, warmup (bool)
    slope_mb_per_iteration: float
    warmup: int

    def mb_per(self, items: int = 100) -> float:
        """Projected RSS growth over ``items`` further iterations, e.g. per 100 documents."""
        return self.slope_mb_per_iteration * items


def soak(
    fn: Callable[[], Any],
    iterations: int,
    warmup: Optional[int] = None,
    sample_every: int = 1,
    rss_fn: Optional[Callable[[], float]] = None,
) -> SoakResult:
    """Call ``fn()`` ``iterations`` times and fit RSS growth per iteration.

    Warm-up iterations (default: the first 10%, at least 1) fill caches and
    pools and are left out of the fit. ``gc.collect()`` runs before each
    sample so the slope reflects memory still reachable, not pending garbage.
    A slope near 0 means no leak; compare it with your per-item budget.
    """
    rss_fn = rss_fn or (lambda: process_tree_rss_mb(include_children=False))
    warmup = max(1, iterations // 10) if warmup is None else warmup
    rows = []
    for i in range(iterations):
        fn()
        if i % sample_every == 0 or i == iterations - 1:
            gc.collect()
            rows.append({"iteration": i, "rss_mb": rss_fn(), "warmup": i < warmup})
    frame = pd.DataFrame(rows, columns=["iteration", "rss_mb", "warmup"])
    fitted = frame[~frame["warmup"]]
    if len(fitted) < 2:
        raise ValueError("need at least two samples after warm-up to fit a slope")
    slope, _intercept = np.polyfit(fitted["iteration"], fitted["rss_mb"], 1)
    return SoakResult(frame=frame, slope_mb_per_iteration=float(slope), warmup=warmup)


# --------------------------------------------------------------------------- release_rag


async def arelease_rag(rag: Any, drop_shared_state: bool = True) -> None:
    """Release a ``raganything.RAGAnything`` instance so its memory can be returned.

    1. ``atexit.unregister(rag.close)``: RAG-Anything 1.4.3 registers every
       instance's ``close`` with atexit, and that bound method keeps the whole
       instance (LightRAG, storages, caches) alive until the interpreter exits.
    2. ``await rag.finalize_storages()``: flushes caches to disk and closes
       storages; then LightRAG's model-call queue workers are stopped.
    3. Drops the instance's references to LightRAG, its caches and modal
       processors, so they are freed even while the caller still holds ``rag``.
       The instance stays usable: the next call re-initializes LightRAG.
    4. With ``drop_shared_state``, removes this workspace's entries from
       LightRAG's process-global shared storage (``lightrag.kg.shared_storage``:
       ``_shared_dicts``, ``_init_flags``, ``_update_flags``). JSON KV and
       doc-status storages keep their data there, keyed by workspace and
       namespace, so without this the data outlives the instance, and the next
       instance with the same workspace skips loading its own working_dir and
       sees the old documents instead. Only this workspace's keys are removed;
       ``finalize_share_data()`` is not called, since it resets the state of
       every workspace. Do not use it while another live LightRAG instance
       shares the workspace (it would lose its in-memory data).
       The workspace's idle per-entity merge locks go too: LightRAG keeps
       one per entity and relation for 300 s after its last use, so a
       service that ingests batch after batch held ever more of them (in a
       soak at ~3 documents/s, all of a 1,000-document run's).
    """
    atexit.unregister(rag.close)  # bound methods compare equal by (__self__, __func__)
    lightrag = rag.lightrag
    try:
        await rag.finalize_storages()
        if lightrag is not None:
            await _stop_queue_workers(lightrag)
    finally:
        rag.modal_processors = {}
        rag.context_extractor = None
        rag.parse_cache = None
        rag.multimodal_status_cache = None
        rag.lightrag = None
        if drop_shared_state and lightrag is not None:
            await _drop_workspace_shared_state(lightrag.workspace)
        del lightrag
        gc.collect()


async def _stop_queue_workers(lightrag: Any) -> None:
    """Stop the worker tasks LightRAG and ragopt start for the model functions.

    ``priority_limit_async_func_call`` gives each wrapped function worker tasks
    on the event loop and a ``shutdown`` coroutine, and so does ragopt's
    embedding micro-batcher (the function LightRAG's wrapper wraps, reached
    through ``__wrapped__``); left running, they keep the functions and what
    they reference alive on a notebook kernel's loop.
    """
    embedding = getattr(lightrag, "embedding_func", None)
    seen = set()
    for func in (getattr(lightrag, "llm_model_func", None), embedding, getattr(embedding, "func", None)):
        while func is not None:
            shutdown = getattr(func, "shutdown", None)
            if shutdown is not None and shutdown not in seen:
                seen.add(shutdown)
                try:
                    await shutdown()
                except RuntimeError:
                    pass  # its workers live on another event loop and end with it
            func = getattr(func, "__wrapped__", None)


def release_rag(rag: Any, drop_shared_state: bool = True) -> None:
    """Synchronous ``arelease_rag``: in scripts, inside Jupyter and after ``ragopt.batch.ingest``.

    It runs on the loop ``ragopt.aio.run_sync`` uses, the one ``ingest`` ran
    on, so LightRAG's model-call queue workers, which live on that loop, are
    stopped too. Call it once ingestion has finished.
    """
    run_sync(arelease_rag(rag, drop_shared_state))


def _belongs_to_workspace(final_namespace: str, workspace: str) -> bool:
    # shared_storage.get_final_namespace: "ws:namespace", or "namespace" for workspace "".
    if workspace:
        return final_namespace.startswith(f"{workspace}:")
    return ":" not in final_namespace


async def _drop_workspace_shared_state(workspace: str) -> None:
    from lightrag.kg import shared_storage

    if not shared_storage._initialized:
        return
    async with shared_storage.get_internal_lock():
        for registry in (shared_storage._shared_dicts, shared_storage._init_flags, shared_storage._update_flags):
            if registry is None:
                continue
            for key in [k for k in registry.keys() if _belongs_to_workspace(k, workspace)]:
                del registry[key]
    _drop_idle_merge_locks(shared_storage._storage_keyed_lock, workspace)


def _drop_idle_merge_locks(keyed_lock: Any, workspace: str) -> None:
    """Forget the workspace's per-entity merge locks that nobody holds or waits for.

    LightRAG's merges lock ``"<workspace>:GraphDB:<entity>"`` (``"GraphDB:..."``
    for workspace ""): ``lightrag.operate``. A lock in use keeps its entry.
    """
    if keyed_lock is None:
        return
    prefix = f"{workspace}:GraphDB:" if workspace else "GraphDB:"
    counts = keyed_lock._async_lock_count
    for key in [k for k in keyed_lock._async_lock if k.startswith(prefix) and counts.get(k, 0) == 0]:
        keyed_lock._async_lock.pop(key, None)
        counts.pop(key, None)
        keyed_lock._async_lock_cleanup_data.pop(key, None)
