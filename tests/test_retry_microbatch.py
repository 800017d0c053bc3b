"""The helpers of ragopt.batch on their own, without RAG: retries, AIMD limit,
embedding micro-batcher, coalesced storage flushes. All fast."""

import asyncio
import time
from types import SimpleNamespace

import httpx
import numpy as np
import openai
import pytest

from ragopt.backends.llm_sim import LLMSimulator, SimulatorConfig, _rate_limit_error
from ragopt.microbatch import micro_batched, micro_batched_embedding
from ragopt.retry import AdaptiveLimit, RetryPolicy, retrying
from ragopt.tuning import coalesce_flushes, prioritize_gleaning

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


# -- retrying -------------------------------------------------------------------


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


# -- AdaptiveLimit ---------------------------------------------------------------


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
        call = retrying(llm, FAST, stats={}, limit=limit)
        await asyncio.gather(*(call(str(i)) for i in range(20)))
        return limit

    limit = asyncio.run(scenario())
    assert limit.limit == 2  # one 429 halved it, and it had no time to grow back
    assert in_flight["max"] <= 4
    assert limit.in_flight == 0


# -- micro_batched ---------------------------------------------------------------


def fake_embed(calls):
    """A deterministic embedder: row i depends only on text i. Records batch sizes."""

    async def embed(texts):
        calls.append(len(texts))
        await asyncio.sleep(0.005)
        return np.array([[len(t), sum(map(ord, t)) % 97, hash(t) % 13] for t in texts], dtype=float)

    return embed


def test_micro_batched_returns_each_caller_its_own_rows():
    calls = []
    embed = fake_embed(calls)
    stats = {}
    batched = micro_batched(embed, max_batch=64, max_wait_s=0.02, stats=stats)
    requests = [[f"text {i}-{j}" for j in range(i % 4 + 1)] for i in range(12)]  # 1..4 texts each

    async def scenario():
        together = await asyncio.gather(*(batched(r) for r in requests))
        alone = [await embed(r) for r in requests]
        return together, alone

    together, alone = asyncio.run(scenario())
    for request, got, expected in zip(requests, together, alone):
        assert got.shape == (len(request), 3)
        assert np.allclose(got, expected)
    assert stats["calls"] == 12
    assert stats["texts"] == sum(map(len, requests))
    assert stats["batches"] < 12


def test_micro_batched_coalesces_concurrent_single_text_calls():
    calls = []
    stats = {}
    batched = micro_batched(fake_embed(calls), max_batch=16, max_wait_s=0.02, stats=stats)

    async def scenario():
        return await asyncio.gather(*(batched([f"entity {i}"]) for i in range(50)))

    rows = asyncio.run(scenario())
    assert len(rows) == 50 and all(r.shape == (1, 3) for r in rows)
    assert stats["calls"] == 50 and stats["texts"] == 50
    assert stats["batches"] == len(calls) <= 5  # ceil(50 / 16) = 4, with one spare
    assert max(calls) <= 16


def test_micro_batched_embedding_keeps_the_embedding_func_settings():
    from lightrag.utils import EmbeddingFunc

    calls = []
    original = EmbeddingFunc(embedding_dim=3, max_token_size=512, func=fake_embed(calls))
    wrapped = micro_batched_embedding(original, max_batch=8, max_wait_s=0.01, stats={})
    assert wrapped.embedding_dim == 3 and wrapped.max_token_size == 512
    rows = asyncio.run(wrapped.func(["a", "bb"]))
    assert rows.shape == (2, 3)


def test_micro_batched_propagates_a_failed_batch_to_every_caller():
    attempts = []

    async def broken(texts):
        attempts.append(len(texts))
        await asyncio.sleep(0.001)
        raise RuntimeError("model exploded")

    batched = micro_batched(broken, max_batch=64, max_wait_s=0.02, stats={})

    async def scenario():
        return await asyncio.gather(*(batched([f"t{i}"]) for i in range(6)), return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(r, RuntimeError) and "model exploded" in str(r) for r in results)
    assert sum(attempts) == 6 and len(attempts) < 6

    # The batcher still works after a failure (the worker survives it).
    calls = []
    healthy = micro_batched(fake_embed(calls), stats={})

    async def after_failure():
        failing = micro_batched(broken, stats={})
        with pytest.raises(RuntimeError):
            await failing(["x"])
        return await healthy(["y"])

    assert asyncio.run(after_failure()).shape == (1, 3)


def test_micro_batched_works_across_event_loops():
    calls = []
    stats = {}
    batched = micro_batched(fake_embed(calls), max_batch=64, max_wait_s=0.01, stats=stats)

    async def scenario(offset):
        return await asyncio.gather(*(batched([f"text {offset + i}"]) for i in range(5)))

    first = asyncio.run(scenario(0))
    second = asyncio.run(scenario(100))  # a new loop: the old worker died with the old loop
    assert len(first) == len(second) == 5
    assert np.allclose(first[0], asyncio.run(fake_embed([])(["text 0"])))
    assert stats["calls"] == 10

    # Also a worker that outlived its loop's idle period is replaced in the same loop.
    async def idle_then_call():
        await batched(["a"])
        await asyncio.sleep(1.2)  # past IDLE_EXIT_S: the worker exits
        return await batched(["b"])

    assert asyncio.run(idle_then_call()).shape == (1, 3)


# -- coalesce_flushes ------------------------------------------------------------

STORAGE_NAMES = (
    "full_docs", "text_chunks", "full_entities", "full_relations", "entity_chunks", "relation_chunks",
    "llm_response_cache", "entities_vdb", "relationships_vdb", "chunks_vdb", "chunk_entity_relation_graph",
)


class FakeStorage:
    def __init__(self, name, log, delay_s):
        self.name, self.log, self.delay_s = name, log, delay_s
        self.flushes = 0

    async def index_done_callback(self):
        self.log.append(("start", self.name, time.perf_counter()))
        await asyncio.sleep(self.delay_s)
        self.flushes += 1
        self.log.append(("end", self.name, time.perf_counter()))


def fake_lightrag(delay_s=0.02):
    log = []
    storages = {name: FakeStorage(name, log, delay_s) for name in STORAGE_NAMES + ("doc_status",)}
    return SimpleNamespace(**storages), log


def test_coalesce_flushes_shares_flushes_between_concurrent_callers():
    lightrag, log = fake_lightrag()
    stats = {}
    coalesce_flushes(lightrag, stats)

    async def caller(i):
        await asyncio.sleep(0.003 * i)  # arrive spread over a few flushes' time
        called = time.perf_counter()
        await lightrag._insert_done()
        return called, time.perf_counter()

    async def scenario():
        return await asyncio.gather(*(caller(i) for i in range(10)))

    spans = asyncio.run(scenario())
    assert stats["requests"] == 10
    assert 1 <= stats["flushes"] <= 3, stats
    assert lightrag.doc_status.flushes == stats["flushes"]
    assert all(getattr(lightrag, name).flushes == stats["flushes"] for name in STORAGE_NAMES)

    # Durability: every caller returns only after a flush that began after its call ended.
    flushes = _flush_windows(log)
    for called, returned in spans:
        assert any(start >= called and end <= returned for start, end in flushes), (called, returned, flushes)


def test_coalesce_flushes_writes_doc_status_after_the_other_storages():
    lightrag, log = fake_lightrag(delay_s=0.005)
    lightrag.doc_status.delay_s = 0.0
    coalesce_flushes(lightrag, {})

    async def scenario():
        await asyncio.gather(*(lightrag._insert_done() for _ in range(3)))

    asyncio.run(scenario())
    doc_status_starts = [i for i, (kind, name, _) in enumerate(log) if kind == "start" and name == "doc_status"]
    other_ends = [i for i, (kind, name, _) in enumerate(log) if kind == "end" and name != "doc_status"]
    assert doc_status_starts
    for start in doc_status_starts:
        # Every other storage of the same flush ended before doc_status started.
        ended_before = [i for i in other_ends if i < start]
        assert len(ended_before) >= len(STORAGE_NAMES)


def test_coalesce_flushes_passes_a_flush_error_to_its_callers_and_recovers():
    lightrag, log = fake_lightrag(delay_s=0.001)
    failures = {"left": 1}
    flush = lightrag.chunks_vdb.index_done_callback

    async def failing_once():
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("disk full")
        await flush()

    lightrag.chunks_vdb.index_done_callback = failing_once
    coalesce_flushes(lightrag, {})

    async def scenario():
        first = await asyncio.gather(lightrag._insert_done(), lightrag._insert_done(), return_exceptions=True)
        await lightrag._insert_done()  # the next flush works
        return first

    first = asyncio.run(scenario())
    assert all(isinstance(r, OSError) for r in first)


def _flush_windows(log):
    """(start, end) of each whole flush: first storage start to doc_status end."""
    windows, start = [], None
    for kind, name, t in log:
        if kind == "start" and start is None:
            start = t
        if kind == "end" and name == "doc_status":
            windows.append((start, t))
            start = None
    return windows


def test_gleaning_jumps_ahead_of_queued_extraction_in_lightrags_llm_queue():
    from lightrag.utils import priority_limit_async_func_call

    served = []

    async def llm(prompt, history_messages=None, **_):
        served.append(prompt)
        await asyncio.sleep(0.01)
        return prompt

    lightrag = SimpleNamespace(llm_model_func=priority_limit_async_func_call(1, queue_name="test")(llm))
    prioritize_gleaning(lightrag)

    async def scenario():
        first = asyncio.ensure_future(lightrag.llm_model_func("extract 0"))  # takes the only slot
        await asyncio.sleep(0.002)
        calls = [asyncio.ensure_future(lightrag.llm_model_func(f"extract {i}")) for i in (1, 2, 3)]
        await asyncio.sleep(0.002)
        calls.append(asyncio.ensure_future(lightrag.llm_model_func("glean 0", history_messages=[{"role": "user", "content": "x"}])))
        await asyncio.gather(first, *calls)
        await lightrag.llm_model_func.shutdown()  # still LightRAG's queue underneath

    asyncio.run(scenario())
    assert served == ["extract 0", "glean 0", "extract 1", "extract 2", "extract 3"]
