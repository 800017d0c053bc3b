"""Retries of transient LLM errors and the AIMD limit, without RAG."""

import asyncio
import time
import httpx
import openai
import pytest
from ragopt.backends.llm_sim import LLMSimulator, SimulatorConfig, _rate_limit_error
from ragopt.engine.retry import AdaptiveLimit, RetryPolicy, limited, retrying
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.001, max_delay_s=0.01, jitter=0.5)


class Flaky:
    """An async LLM function that raises the given errors, in order, then answers."""

    def __init__(self, *errors):
        self.errors = list(errors)
        self.calls = []

    async def __call__(self, prompt, **kwargs):
        self.calls.append(time.perf_counter())
        if self.errors:
            raise self.errors.pop(0)
        return f"answer to {prompt}"


def test_retry_honours_retry_after_of_a_429_and_counts_it():
    func = Flaky(_rate_limit_error(0.15))
    stats = {}
    answer = asyncio.run(retrying(func, FAST, stats=stats)("q"))
    assert answer == "answer to q"
    assert len(func.calls) == 2
    waited = func.calls[1] - func.calls[0]
    assert waited >= 0.14, f"retried after {waited:.3f} s, Retry-After said 0.15 s"
    assert waited < 1.0
    assert stats == {"RateLimitError": 1, "retries": 1}


def test_retry_against_the_simulator_fault_injection():
    # Every request 429s the first times it is sent; the fault draw changes per attempt.
    sim = LLMSimulator(SimulatorConfig.preset("fast", rate_429=0.5, retry_after_s=0.01, seed=3))
    from ragopt.backends.llm_sim import llm_func

    stats = {}
    call = retrying(llm_func(sim), RetryPolicy(max_attempts=30), stats=stats)

    async def many():
        return await asyncio.gather(*(call(f"prompt {i}") for i in range(20)))

    answers = asyncio.run(many())
    assert len(answers) == 20 and all(isinstance(a, str) for a in answers)
    outcomes = sim.counters()["calls_by_outcome"]
    assert outcomes["ok"] == 20
    assert outcomes.get("429", 0) == stats["RateLimitError"] == stats["retries"] > 0
    assert "gave_up" not in stats


def test_retry_gives_up_after_max_attempts():
    errors = [openai.APITimeoutError(request=httpx.Request("POST", "http://x.invalid")) for _ in range(10)]
    func = Flaky(*errors)
    stats = {}
    with pytest.raises(openai.APITimeoutError):
        asyncio.run(retrying(func, FAST, stats=stats)("q"))
    assert len(func.calls) == FAST.max_attempts
    assert stats == {"APITimeoutError": 4, "retries": 3, "gave_up": 1}


def test_retry_does_not_retry_non_transient_errors():
    bad_request = openai.BadRequestError(
        "bad", response=httpx.Response(400, request=httpx.Request("POST", "http://x.invalid")), body=None
    )
    for error in (ValueError("not transient"), bad_request):
        func = Flaky(error)
        stats = {}
        with pytest.raises(type(error)):
            asyncio.run(retrying(func, FAST, stats=stats)("q"))
        assert len(func.calls) == 1
        assert stats == {}


def test_retry_backoff_without_retry_after_grows_and_is_capped():
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0, jitter=0.0)
    error = openai.APITimeoutError(request=httpx.Request("POST", "http://x.invalid"))
    import random

    rng = random.Random(0)
    assert [policy.delay_s(attempt, error, rng) for attempt in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.delay_s(1, _rate_limit_error(7.0), rng) == 7.0


def test_adaptive_limit_halves_on_429_and_grows_back():
    async def scenario():
        limit = AdaptiveLimit(8, minimum=1, grow_after=3)
        seen = []
        for _ in range(4):
            await limit.acquire()
            limit.release("rate_limited")
            seen.append(limit.limit)
        assert seen == [4, 2, 1, 1]  # halves, never below the minimum
        for _ in range(3 * 7):
            await limit.acquire()
            limit.release("ok")
        assert limit.limit == 8  # +1 after every 3 successes, up to the maximum
        for _ in range(10):
            await limit.acquire()
            limit.release("ok")
        assert limit.limit == 8
        assert [value for _, value in limit.history] == [8, 4, 2, 1, 2, 3, 4, 5, 6, 7, 8]
        await limit.acquire()
        limit.release("rate_limited")
        for _ in range(5):  # an error that is not a 429 neither shrinks nor grows it
            await limit.acquire()
            limit.release("error")
        assert limit.limit == 4

    asyncio.run(scenario())


def test_adaptive_limit_passes_on_a_wake_up_its_waiter_never_used():
    async def scenario():
        limit = AdaptiveLimit(1)
        await limit.acquire()
        woken_then_cancelled = asyncio.create_task(limit.acquire())
        next_in_line = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0)
        limit.release("ok")  # wakes the first waiter...
        woken_then_cancelled.cancel()  # ...which is cancelled before it runs
        await asyncio.wait_for(next_in_line, 1.0)
        assert limit.in_flight == 1

    asyncio.run(scenario())


def test_adaptive_limit_caps_requests_in_flight_through_retrying():
    in_flight = {"now": 0, "max": 0}
    fail_first = {"left": 1}

    async def llm(prompt, **_):
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        try:
            await asyncio.sleep(0.01)
            if fail_first["left"]:
                fail_first["left"] -= 1
                raise _rate_limit_error(0.0)
            return prompt
        finally:
            in_flight["now"] -= 1

    async def scenario():
        limit = AdaptiveLimit(4, grow_after=1000)
        call = retrying(limited(llm, limit), FAST, stats={})
        await asyncio.gather(*(call(str(i)) for i in range(20)))
        return limit

    limit = asyncio.run(scenario())
    assert limit.limit == 2  # one 429 halved it, and it had no time to grow back
    assert in_flight["max"] <= 4
    assert limit.in_flight == 0


