"""MemoryBudget: the admission gate on its own."""

import asyncio
from ragopt.resources.budget import MemoryBudget


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


_LEAKED = []
