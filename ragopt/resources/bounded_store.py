"""A thread-safe mapping bounded by item count, bytes and age (the guide's memory manager, done right)."""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import MutableMapping
from typing import Any, Callable, Dict, Hashable, Iterator, Optional


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
