"""The micro-batcher's query lane: a query's texts are encoded before document texts queued ahead of them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ragopt.engine.microbatch import micro_batched, micro_batched_embedding


def _recording_embed(batches):
    release = asyncio.Event()

    async def embed(texts):
        batches.append(list(texts))
        await release.wait()  # each batch is held until the test lets it go: order, not time, decides
        release.clear()
        return np.zeros((len(texts), 2))

    return embed, release


@pytest.mark.parametrize("queries_first, query_batch_index", [(True, 1), (False, 3)])
async def test_a_query_waits_for_the_batch_in_progress_only(queries_first, query_batch_index):
    batches, stats = [], {}
    embed, release = _recording_embed(batches)
    batched = micro_batched(embed, max_batch=2, max_wait_s=0.0, stats=stats, queries_first=queries_first)
    documents = [asyncio.create_task(batched([f"doc {i}"], context="document")) for i in range(6)]
    while not batches:  # the first document batch is being encoded
        await asyncio.sleep(0)
    query = asyncio.create_task(batched(["the question"], context="query"))
    await asyncio.sleep(0)
    while not query.done():
        release.set()
        await asyncio.sleep(0)
    assert ["the question"] in batches
    assert batches.index(["the question"]) == query_batch_index  # after 1 batch, or after all 3 queued ahead of it
    while not all(d.done() for d in documents):
        release.set()
        await asyncio.sleep(0)
    assert stats.get("query_batches", 0) == (1 if queries_first else 0)


def test_the_embedding_func_hands_the_batcher_its_context_only_when_asked():
    from lightrag.utils import EmbeddingFunc

    async def model(texts):
        return np.zeros((len(texts), 2))

    plain = EmbeddingFunc(embedding_dim=2, func=model)
    assert micro_batched_embedding(plain, queries_first=True).supports_asymmetric is True
    assert micro_batched_embedding(plain, queries_first=False).supports_asymmetric is False


async def test_a_query_text_is_encoded_once():
    batches, stats = [], {}
    embed, release = _recording_embed(batches)
    release.set()
    batched = micro_batched(embed, max_batch=8, max_wait_s=0.0, stats=stats, query_memo=True)
    first = await batched(["the question", "its keywords"], context="query")
    release.set()
    again = await batched(["the question", "its keywords"], context="query")  # RAG-Anything's second retrieval
    await batched(["doc"], context="document")
    release.set()
    await batched(["doc"], context="document")  # documents are never answered from the memo
    assert np.array_equal(first, again) and stats["query_memo_hits"] == 1
    assert batches == [["the question", "its keywords"], ["doc"], ["doc"]]
