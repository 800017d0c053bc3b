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
        blob = touched_bytes(200 * MB)
        seen = len(monitor.frame())
        while len(monitor.frame()) < seen + 2:  # sampled while the blob is held (however busy the machine)
            time.sleep(0.01)
        del blob
    frame = monitor.frame()
    assert list(frame.columns) == ["t_s", "rss_mb", "children_rss_mb", "total_rss_mb", "cpu_pct", "tree_cpu_s"]
    assert len(frame) >= 4
    assert frame["t_s"].is_monotonic_increasing
    assert np.isnan(frame["cpu_pct"].iloc[0])
    assert monitor.peak_rss_mb - frame["total_rss_mb"].iloc[0] >= 150

    with monitor:
        while len(monitor.frame()) < 2:
            time.sleep(0.01)
    again = monitor.frame()
    # A new timeline: its clock starts again (not carried on from the first one).
    assert len(again) >= 2 and again["t_s"].iloc[0] < frame["t_s"].iloc[-1]
    assert monitor.peak_rss_mb < frame["total_rss_mb"].max()


def test_rss_monitor_counts_children_and_cpu():
    """A child holding 100 MB and burning 0.5 s of CPU time: counted whatever else loads the machine
    (CPU time, not wall time, is what is checked; no deadline but the test timeout)."""
    child_code = (
        "import sys, time\n"
        "b = bytearray(b'\\x01') * (100 << 20)\n"
        "while time.process_time() < 0.5: pass\n"
        "print('burnt', flush=True)\n"
        "sys.stdin.read()\n"  # stay alive, and seen, until told to go
    )
    with RSSMonitor(interval_s=0.05) as monitor:
        while len(monitor.frame()) < 1:  # the first sample, the baseline, comes before the child
            time.sleep(0.01)
        child = subprocess.Popen([sys.executable, "-c", child_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "burnt"
            seen = len(monitor.frame())
            while len(monitor.frame()) < seen + 2:  # two samples with the child done burning
                time.sleep(0.05)
        finally:
            child.communicate("")
    frame = monitor.frame()
    assert frame["children_rss_mb"].max() >= 90
    assert monitor.peak_rss_mb >= frame["rss_mb"].max() + 90
    # The child's CPU seconds are in the tree's, and the rates are shares of the machine's cores.
    assert frame["tree_cpu_s"].max() - frame["tree_cpu_s"].iloc[0] >= 0.5
    rates = frame["cpu_pct"].dropna()
    assert len(rates) and (rates > 0).any() and (rates <= 110).all()


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
