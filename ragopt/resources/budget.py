"""An asyncio admission gate that holds new work back while RSS is high."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

from ragopt.resources.rss import process_tree_rss_mb


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
    def holding(self) -> bool:
        """Whether the gate is closed now (work is being held back)."""
        return self._holding

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
