"""BoundedStore: LRU, TTL and byte bounds under concurrency."""

import random
import sys
import threading
import pytest
from ragopt.resources.bounded_store import BoundedStore


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def touched_bytes(n):
    # bytearray(n) may be backed by untouched zero pages that never count in RSS.
    return bytearray(b"\x01") * n


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


_LEAKED = []
