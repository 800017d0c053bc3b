"""The embedding micro-batcher on its own."""

import asyncio
import numpy as np
import pytest
from ragopt.engine.microbatch import micro_batched, micro_batched_embedding


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




def test_a_batch_past_its_limit_fails_its_callers_and_the_next_batch_is_still_served():
    first = []

    async def stalls_once(texts):
        if not first:
            first.append(texts)
            await asyncio.sleep(5)
        return np.ones((len(texts), 3))

    batched = micro_batched(stalls_once, max_batch=1, max_wait_s=0.0, stats={}, batch_limit_s=0.3)

    async def scenario():
        return await asyncio.gather(batched(["stalled"]), batched(["next"]), return_exceptions=True)

    stalled, served = asyncio.run(scenario())
    assert isinstance(stalled, asyncio.TimeoutError)
    assert served.shape == (1, 3)


def test_lightrags_queue_lets_a_call_wait_behind_every_batch_it_admits(tmp_path):
    """LightRAG's limit on one call (2 s here) becomes each batch's; a call queued behind three
    0.8 s batches waits 3.2 s in the batcher, and LightRAG's own queue no longer fails it."""
    from lightrag.utils import priority_limit_async_func_call
    from raganything import RAGAnything, RAGAnythingConfig

    import ragopt
    from ragopt.backends import embedding_for
    from ragopt.config import RagoptConfig

    rag = RAGAnything(config=RAGAnythingConfig(working_dir=str(tmp_path / "kb")), llm_model_func=None,
                      embedding_func=embedding_for(RagoptConfig()),
                      lightrag_kwargs={"default_embedding_timeout": 1, "embedding_func_max_async": 4})
    ragopt.optimize(rag, RagoptConfig(tuned_concurrency=False))
    kwargs = rag.lightrag_kwargs
    assert rag.embedding_func.func.batch_limit_s == 2.0
    assert kwargs["default_embedding_timeout"] == 5  # 2 s for each of up to 5 batches, as LightRAG halves it

    async def slow(texts):
        await asyncio.sleep(0.8)
        return np.ones((len(texts), 3))

    queued = priority_limit_async_func_call(kwargs["embedding_func_max_async"], llm_timeout=kwargs["default_embedding_timeout"],
                                            queue_name="test embeddings")(
        micro_batched(slow, max_batch=1, max_wait_s=0.0, stats={}, batch_limit_s=2.0))

    async def four_at_once():
        try:
            return await asyncio.gather(*(queued([f"text {i}"]) for i in range(4)), return_exceptions=True)
        finally:
            await queued.shutdown()

    assert all(getattr(answer, "shape", None) == (1, 3) for answer in asyncio.run(four_at_once()))
