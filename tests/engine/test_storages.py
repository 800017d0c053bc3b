"""Other storages than LightRAG's default files: Redis KV and doc status on a real redis-server, Faiss vectors.

The same graph as with the default storages; a cancelled ingestion resumed by a fresh instance loses and
duplicates nothing; every processed document's chunks are stored (status written after data).
"""

from __future__ import annotations

import asyncio
import shutil

import pytest
from raganything.callbacks import ProcessingCallback

from ragopt.aio import run_sync
from ragopt.compat.raganything import ensure_initialized
from ragopt.config import RagoptConfig
from ragopt.engine.build import build_rag
from ragopt.engine.orchestrator import aingest
from ragopt.engine.release import arelease_rag
from ragopt.measure.graphs import compare_graphs, stored_graph_signature
from ragopt.measure.integrity import doc_status_check, doc_status_records, missing_chunks
from ragopt.measure.workloads import synthetic_corpus

pytestmark = pytest.mark.slow  # whole ingestions on real servers
REDIS = {"kv_storage": "RedisKVStorage", "doc_status_storage": "RedisDocStatusStorage"}
FAISS = {"vector_storage": "FaissVectorDBStorage"}


class CancelAfterFirstDocument(ProcessingCallback):
    def __init__(self):
        self.task = None

    def on_document_complete(self, **_):
        if self.task is not None and not self.task.done():
            self.task.cancel()


async def _ingest(config, working_dir, corpus, cancel=False):
    rag = build_rag(config, working_dir, optimized=True)
    await ensure_initialized(rag)
    try:
        if cancel:
            canceller = CancelAfterFirstDocument()
            rag.callback_manager.register(canceller)
            canceller.task = asyncio.ensure_future(aingest(rag, corpus, config=config, progress=False))
            with pytest.raises(asyncio.CancelledError):
                await canceller.task
            return None
        result = await aingest(rag, corpus, config=config, progress=False)
        records = await doc_status_records(rag.lightrag)
        return result, records, await missing_chunks(rag.lightrag, records), await stored_graph_signature(rag.lightrag)
    finally:
        await arelease_rag(rag)


@pytest.fixture
def corpus(tmp_path):
    return synthetic_corpus(tmp_path / "corpus", 6, seed=8, paragraphs_per_doc=1)


@pytest.mark.parametrize("storages", [REDIS, FAISS, {**REDIS, **FAISS}], ids=["redis", "faiss", "redis+faiss"])
def test_other_storages_build_the_same_graph_and_resume_a_cancelled_run_exactly_once(storages, corpus, tmp_path,
                                                                                      redis_server, monkeypatch):
    monkeypatch.setenv("REDIS_URI", redis_server.url)  # LightRAG's Redis storages read it
    fast = RagoptConfig(sim_preset="fast", max_concurrent_processing=1)  # one slot: the cancel lands mid-corpus
    kb = tmp_path / "kb"
    _, _, _, files_graph = run_sync(_ingest(fast, kb, corpus))  # LightRAG's default files
    shutil.rmtree(kb)

    config = fast.replace(**{key: value for key, value in storages.items()}, workspace="other")
    run_sync(_ingest(config, kb, corpus, cancel=True))
    result, records, missing, graph = run_sync(_ingest(config, kb, corpus))  # a fresh instance resumes
    assert result.counts()["failed"] == 0, result.files
    check = doc_status_check(records, corpus)
    assert (check["lost_docs"], check["duplicate_docs"], check["failed_records"]) == (0, 0, 0), check
    assert missing == []  # no document is marked processed without its chunks
    comparison = compare_graphs(files_graph, graph)
    assert comparison["comparable"] and comparison["same"], comparison
