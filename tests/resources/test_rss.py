"""RSSMonitor and the malloc trim: memory and CPU of a process tree."""

import subprocess
import sys
import time
import numpy as np
import psutil
import pytest
from ragopt.resources.rss import MB, RSSMonitor


def touched_bytes(n):
    # bytearray(n) may be backed by untouched zero pages that never count in RSS.
    return bytearray(b"\x01") * n


def test_rss_monitor_sees_an_allocation_and_restarts_cleanly():
    monitor = RSSMonitor(interval_s=0.02)
    with monitor:
        time.sleep(0.05)
        blob = touched_bytes(200 * MB)
        time.sleep(0.15)
        del blob
    frame = monitor.frame()
    assert list(frame.columns) == ["t_s", "rss_mb", "children_rss_mb", "total_rss_mb", "cpu_pct"]
    assert len(frame) >= 5
    assert frame["t_s"].is_monotonic_increasing
    assert np.isnan(frame["cpu_pct"].iloc[0])
    assert monitor.peak_rss_mb - frame["total_rss_mb"].iloc[0] >= 150

    with monitor:
        time.sleep(0.05)
    again = monitor.frame()
    # A new timeline: its clock starts again (not carried on from the first one).
    assert len(again) >= 2 and again["t_s"].iloc[0] < frame["t_s"].iloc[-1]
    assert monitor.peak_rss_mb < frame["total_rss_mb"].max()


def test_rss_monitor_counts_children_and_cpu():
    child_code = "b = bytearray(b'\\x01') * (100 << 20); import time; time.sleep(3)"
    with RSSMonitor(interval_s=0.05) as monitor:
        child = subprocess.Popen([sys.executable, "-c", child_code])
        try:
            deadline = time.time() + 10
            while time.time() < deadline and monitor.frame()["children_rss_mb"].max() < 90:
                time.sleep(0.05)
            busy_until = time.perf_counter() + 0.5
            while time.perf_counter() < busy_until:
                pass  # keep one core busy
        finally:
            child.kill()
            child.wait()
    frame = monitor.frame()
    assert frame["children_rss_mb"].max() >= 90
    assert monitor.peak_rss_mb >= frame["rss_mb"].max() + 90
    cores = __import__("psutil").cpu_count()
    # One busy thread is 1/cores of the machine, give or take the sampling thread.
    assert frame["cpu_pct"].max() >= 0.25 * 100 / cores
    assert frame["cpu_pct"].max() <= 110


def test_rss_monitor_does_not_charge_a_child_it_missed_with_its_past_cpu(monkeypatch):
    """A child that was running but missing from one listing (a race) counts from when it is seen."""
    child_code = "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\ntime.sleep(5)"
    child = subprocess.Popen([sys.executable, "-c", child_code])
    try:
        deadline = time.time() + 20
        while time.time() < deadline and sum(psutil.Process(child.pid).cpu_times()[:2]) < 0.9:
            time.sleep(0.05)  # until the child has a second of CPU time behind it
        monitor = RSSMonitor(interval_s=0.05)
        listings = []
        full_tree = monitor._tree

        def tree_missing_children_at_first():
            listings.append(1)
            return full_tree() if len(listings) > 3 else [monitor.process]

        monkeypatch.setattr(monitor, "_tree", tree_missing_children_at_first)
        with monitor:
            time.sleep(0.8)
    finally:
        child.kill()
        child.wait()
    frame = monitor.frame()
    assert frame["children_rss_mb"].iloc[-1] > 0  # the child was seen in the end
    assert frame["cpu_pct"].max() <= 110, frame


_LEAKED = []


def test_trim_free_heap_gives_freed_memory_back_to_the_os():
    import math

    from ragopt.resources.heap import malloc_stats, trim_free_heap

    if math.isnan(malloc_stats()["free_mb"]):
        pytest.skip("not glibc")
    # 60 MB in blocks below malloc's mmap threshold, every tenth kept: the holes
    # cannot shrink the heap's top, so only malloc_trim returns them.
    blocks = [bytearray(100_000) for _ in range(600)]
    kept = blocks[::10]
    del blocks
    process = psutil.Process()
    assert malloc_stats()["free_mb"] > 40
    before = process.memory_info().rss
    assert trim_free_heap() is True
    assert (before - process.memory_info().rss) / 2**20 > 30
    assert len(kept) == 60
