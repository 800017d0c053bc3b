"""Cached query answers keyed by the knowledge base's version: no answer survives a change of the data."""

from __future__ import annotations

import asyncio

import pytest

from ragopt.config import RagoptConfig
from ragopt.engine.query_cache import KnowledgeBaseVersion


class _Storage:
    def __init__(self):
        self.data = {}
        self.release = asyncio.Event()

    async def upsert(self, data):
        await self.release.wait()
        self.data.update(data)

    async def delete(self, ids):
        for id_ in ids:
            self.data.pop(id_, None)


async def test_the_version_moves_on_at_each_write_and_is_unknown_during_one():
    version, storage = KnowledgeBaseVersion(), _Storage()
    version.watch(storage)
    before = version.current()
    writing = asyncio.create_task(storage.upsert({"a": 1}))
    await asyncio.sleep(0)
    assert version.current() is None  # mid-write: no answer may be cached or found
    storage.release.set()
    await writing
    assert version.current() not in (None, before)


async def test_a_query_keys_its_answer_by_the_version_it_started_at():
    version, storage = KnowledgeBaseVersion(), _Storage()
    version.watch(storage)
    keys = []

    async def aquery_llm():
        keys.append(version.answer_key("question-hash"))

    query = version.around(aquery_llm)
    await query()
    await query()
    assert keys[0] == keys[1] is not None
    assert version.answer_key("question-hash") is None  # outside a query: no version
    storage.release.set()
    await storage.upsert({"a": 1})
    await query()
    assert keys[2] not in (None, keys[0])


async def test_a_query_started_during_a_write_is_not_cached():
    version, storage = KnowledgeBaseVersion(stats := {}), _Storage()
    version.watch(storage)
    writing = asyncio.create_task(storage.upsert({"a": 1}))
    await asyncio.sleep(0)
    seen = []

    async def aquery_llm():
        seen.append(version.answer_key("question-hash"))

    await version.around(aquery_llm)()
    storage.release.set()
    await writing
    assert seen == [None] and stats["uncached_queries"] == 1


async def test_with_write_behind_a_vector_write_moves_the_version_when_it_reaches_the_storage():
    """A search that skips the write-behind backlog reads the version it keys by: a pending write has not
    moved it, and applying the write does, so an answer computed without the write is not found after it."""
    from ragopt.engine.writebehind import VectorWriteBehind

    version, storage = KnowledgeBaseVersion(), _Storage()
    storage.release.set()
    version.watch(storage)  # in the registry's order: the version first, write-behind on top
    buffer = VectorWriteBehind(storage, queries_wait=False).install()
    at_start = version.current()
    await storage.upsert({"ent-a": {"content": "a"}})  # queued only
    assert storage.data == {} and version.current() == at_start
    await buffer.drain()
    assert storage.data and version.current() not in (None, at_start)


def test_multimodal_keys_keep_their_prefix_and_change_with_the_data():
    version = KnowledgeBaseVersion()
    key = version.multimodal_key("multimodal_query:abc")
    assert key.startswith("multimodal_query:") and key != "multimodal_query:abc"
    assert version.multimodal_key("multimodal_query:abc") == key
    version.changes += 2
    assert version.multimodal_key("multimodal_query:abc") != key


# -- on a real knowledge base -------------------------------------------------------------------


async def _ask_ingest_ask(tmp_path, versioned: bool) -> tuple:
    """(answers generated for: a question, the same again, the same after a new document about it)."""
    from ragopt.backends import make_backends
    from ragopt.engine.build import build_rag
    from ragopt.engine.orchestrator import aingest
    from ragopt.engine.release import arelease_rag
    from ragopt.measure.workloads import synthetic_corpus

    config = RagoptConfig(sim_preset="fast", enable_parse_cache=False, versioned_query_cache=versioned)
    backends = make_backends(config)
    rag = build_rag(config, tmp_path / "kb", backends, optimized=True)
    answers = lambda: backends.simulator.counters()["calls_by_kind"].get("query", 0)  # noqa: E731
    try:
        documents = synthetic_corpus(tmp_path / "docs", 2, seed=3, paragraphs_per_doc=2)
        await aingest(rag, documents, config=config, progress=False)
        entity = sorted(await rag.lightrag.chunk_entity_relation_graph.get_all_labels())[0]
        # Quoting the document makes sure the naive query retrieves a chunk (else it answers "no context", no LLM).
        question = f"What do the documents say about {entity}? {documents[0].read_text(encoding='utf-8')[:300]}"
        counts = []
        for step in ("ask", "again", "after"):
            if step == "after":
                addition = tmp_path / "addition.txt"
                addition.write_text(f"{entity} moved to Reykjavik and changed its name. " * 8, encoding="utf-8")
                await aingest(rag, [addition], config=config, progress=False)
            before = answers()
            await rag.aquery(question, mode="naive", vlm_enhanced=False)
            counts.append(answers() - before)
        return tuple(counts)
    finally:
        await arelease_rag(rag)


@pytest.mark.slow
async def test_after_an_ingest_a_cached_answer_is_never_served(tmp_path):
    assert await _ask_ingest_ask(tmp_path / "on", versioned=True) == (1, 0, 1)  # cached, then answered anew
    # Switched off, LightRAG's own key: the answer from before the ingest comes back.
    assert await _ask_ingest_ask(tmp_path / "off", versioned=False) == (1, 0, 0)
