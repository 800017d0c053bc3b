"""RSS and CPU of a process tree: a one-off reading and a background sampler."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Dict, List, Optional

import pandas as pd
import psutil

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
        own_mb = children_mb = busy_cores = tree_cpu_s = 0.0
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
            tree_cpu_s += cumulative
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
            "tree_cpu_s": tree_cpu_s,
        }
        with self._samples_lock:
            self._samples.append(sample)

    def frame(self) -> pd.DataFrame:
        """The timeline so far: t_s, rss_mb, children_rss_mb, total_rss_mb, cpu_pct, and tree_cpu_s
        (CPU seconds used so far by the processes of the tree alive at the sample)."""
        with self._samples_lock:
            rows = list(self._samples)
        return pd.DataFrame(rows, columns=["t_s", "rss_mb", "children_rss_mb", "total_rss_mb", "cpu_pct", "tree_cpu_s"])

    @property
    def peak_rss_mb(self) -> float:
        """Highest sampled RSS of the process plus its children, in MB."""
        with self._samples_lock:
            return max((s["total_rss_mb"] for s in self._samples), default=0.0)


def settled_rss_mb(include_children: bool = False) -> float:
    """RSS once reference cycles are collected and malloc's free memory is handed back (glibc):
    what is still in use, not what the allocator keeps."""
    import gc

    from ragopt.resources.heap import trim_free_heap

    gc.collect()
    trim_free_heap()
    return process_tree_rss_mb(include_children=include_children)
