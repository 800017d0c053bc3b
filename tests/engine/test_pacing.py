"""A hosted endpoint's limits: pacing to requests and tokens per minute, and K found from its 429s."""

from __future__ import annotations

import asyncio
import time

import pytest
from raganything import RAGAnything, RAGAnythingConfig

import ragopt
from ragopt.backends.llm_sim import LLMSimulator, SimulatorConfig, llm_func, vision_func
from ragopt.backends.raganything_parser import register as register_offline_parser
from ragopt.backends.tokenizer import offline_tokenizer
from ragopt.config import RagoptConfig
from ragopt.engine.orchestrator import ingest
from ragopt.engine.pacing import TokenBucket, paced
from ragopt.engine.release import release_rag
from ragopt.measure.workloads import synthetic_corpus


class FakeTime:
    def __init__(self):
        self.now, self.slept = 100.0, []

    def clock(self):
        return self.now

    async def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def test_a_bucket_lets_its_rate_through_and_makes_the_rest_wait():
    fake = FakeTime()
    bucket = TokenBucket(60, clock=fake.clock, sleep=fake.sleep)  # 1 a second, one second's worth in hand

    async def takes():
        for _ in range(4):
            await bucket.take(1)

    asyncio.run(takes())
    assert fake.slept == [1.0, 1.0, 1.0] and bucket.waited_s == 3.0
    bucket.charge(5)  # an answer's tokens, after the fact: the next caller pays the debt
    asyncio.run(bucket.take(1))
    assert fake.slept[-1] == 6.0


def test_paced_calls_keep_under_the_requests_per_minute_limit():
    sent = []

    async def endpoint(prompt, **kwargs):  # stands for the endpoint: when each request goes out
        sent.append(time.monotonic())
        return "ok"

    requests = TokenBucket(300)  # 5 a second, one second's worth in hand
    call = paced(endpoint, requests, None)

    async def burst():
        await asyncio.gather(*(call(f"question {i}") for i in range(12)))

    asyncio.run(burst())
    assert len(sent) == 12
    # By any moment t after the first request, at most one second's worth plus 5 a second have gone
    # out: a property of the schedule, which a slower machine can only make easier to meet.
    for k, at in enumerate(sorted(sent)):
        assert k + 1 <= requests.capacity + requests.rate * (at - sent[0]) + 1e-3, (k, at - sent[0])
    assert requests.waited_s > 0


@pytest.mark.slow
def test_adaptive_concurrency_finds_a_working_k_from_the_endpoints_429s(tmp_path):
    """An endpoint with 4 slots that refuses work when they are all busy (no queue); the user gives no K."""
    sim = LLMSimulator(SimulatorConfig.preset("fast", slots=4, max_queue=0, ttft_s=0.2))  # long enough to overlap
    from ragopt.backends import embedding_for

    rag = RAGAnything(
        config=RAGAnythingConfig(working_dir=str(tmp_path / "kb"), parser=register_offline_parser(),
                                 parser_output_dir=str(tmp_path / "parsed")),
        llm_model_func=llm_func(sim), vision_model_func=vision_func(sim),
        embedding_func=embedding_for(RagoptConfig()), lightrag_kwargs={"tokenizer": offline_tokenizer()},
    )
    config = RagoptConfig(adaptive_concurrency=True)  # MAX_CONCURRENT_PROCESSING not set
    rag = ragopt.optimize(rag, config)
    corpus = synthetic_corpus(tmp_path / "corpus", 16, seed=5, paragraphs_per_doc=1)  # 16 extractions at once
    try:
        result = ingest(rag, corpus, config=config, progress=False)
        history = rag.ragopt_stats["adaptive_concurrency"]["limit_history"]
        retried = rag.ragopt_stats["llm_retries"]
    finally:
        release_rag(rag)
    assert result.counts() == {"ok": 16, "failed": 0, "skipped": 0}, result.files
    refused = sim.counters()["calls_by_outcome"].get("429", 0)
    assert refused > 0 and retried["RateLimitError"] == refused and "gave_up" not in retried
    limits = [limit for _, limit in history]
    assert limits[0] == 64  # no K given: it started high
    assert min(limits) <= 8  # and the 429s brought it down near the endpoint's 4 slots
