"""ragopt on the user's own RAG-Anything: their parser, their models, their storages.

The README's example, run as written: a RAGAnything with the user's LLM and
vision functions (the simulator's stand in), the user's own EmbeddingFunc (a
hashing one), a parser registered with ``register_parser`` (a stand-in for
MinerU that records its calls) and Redis KV and doc-status storages on a real
redis-server; ``ragopt.optimize`` then ``ragopt.ingest(rag, paths, lang="en")``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from lightrag.utils import EmbeddingFunc, compute_mdhash_id
from raganything import RAGAnything, RAGAnythingConfig
from raganything.parser import register_parser

import ragopt
from ragopt.aio import run_sync
from ragopt.backends.llm_sim import LLMSimulator, SimulatorConfig, llm_func, vision_func
from ragopt.backends.tokenizer import offline_tokenizer
from ragopt.compat.raganything import ensure_initialized
from ragopt.config import RagoptConfig
from ragopt.engine.release import arelease_rag, release_rag
from ragopt.measure.graphs import compare_graphs, stored_graph_signature
from ragopt.measure.integrity import doc_status_check, doc_status_records, missing_chunks
from ragopt.measure.workloads import synthetic_corpus
from standin_parser import StandInParser, calls  # noqa: E402  (tests/ is on sys.path)

pytestmark = pytest.mark.slow  # whole ingestions on a real redis-server
DIM = 64


def hashing_embedding():
    """The user's own embedding: words hashed into 64 buckets; it counts its calls and texts."""
    seen = {"calls": 0, "texts": 0}

    async def embed(texts, **_):
        seen["calls"] += 1
        seen["texts"] += len(texts)
        vectors = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % DIM] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1, norms)

    return EmbeddingFunc(embedding_dim=DIM, max_token_size=512, func=embed), seen


def users_rag(working_dir, embedding, workspace):
    """A RAGAnything the way a user writes one."""
    register_parser("myparser", StandInParser)
    sim = LLMSimulator(SimulatorConfig.preset("fast"))
    return RAGAnything(
        config=RAGAnythingConfig(working_dir=str(working_dir), parser="myparser", parse_method="auto",
                                 parser_output_dir=str(working_dir.parent / "parsed")),
        llm_model_func=llm_func(sim), vision_model_func=vision_func(sim), embedding_func=embedding,
        lightrag_kwargs={"kv_storage": "RedisKVStorage", "doc_status_storage": "RedisDocStatusStorage",
                         "workspace": workspace, "tokenizer": offline_tokenizer()},
    )


@pytest.fixture
def corpus(tmp_path):
    # Text, Markdown with a table, and a DOCX with a table and an image: every entry point of the parser.
    return synthetic_corpus(tmp_path / "corpus", 7, seed=4, paragraphs_per_doc=1)[3:]


@pytest.fixture
def users_setup(tmp_path, redis_server, monkeypatch):
    monkeypatch.setenv("REDIS_URI", redis_server.url)  # what LightRAG's Redis storages read
    monkeypatch.setenv("STANDIN_PARSER_LOG", str(tmp_path / "parser-calls.jsonl"))
    return tmp_path


def test_the_readme_example_uses_the_users_parser_models_and_storages(users_setup, corpus):
    tmp_path = users_setup
    embedding, embedded = hashing_embedding()
    rag = users_rag(tmp_path / "kb", embedding, "ours")
    rag = ragopt.optimize(rag, RagoptConfig.from_env())
    try:
        result = ragopt.ingest(rag, corpus, lang="en", progress=False)  # as the README writes it

        async def inspect():
            records = await doc_status_records(rag.lightrag)
            graph = await stored_graph_signature(rag.lightrag)
            vectors = await rag.lightrag.entities_vdb.get_by_ids([compute_mdhash_id(name, prefix="ent-") for name in graph[0]])
            return records, await missing_chunks(rag.lightrag, records), graph, vectors

        records, missing, ours, entity_vectors = run_sync(inspect())
        stats = rag.ragopt_stats
    finally:
        release_rag(rag)
    assert result.counts() == {"ok": len(corpus), "failed": 0, "skipped": 0}, result.failed[["file", "stage", "error"]].to_dict("records")

    # The user's parser ran once per file, in ragopt's parse processes, with the rag's and ingest's options.
    made = calls(tmp_path / "parser-calls.jsonl")
    assert sorted(Path(c["path"]).name for c in made) == sorted(p.name for p in corpus)
    assert all(c["pid"] != os.getpid() for c in made)  # in ragopt's parse processes, not this one
    assert all(c["options"].get("lang") == "en" for c in made)
    assert all(c["options"]["method"] == "auto" for c in made if c["method"] in ("parse_pdf", "parse_document"))
    assert {c["method"] for c in made} >= {"parse_office_doc", "parse_document"}

    # The user's embedding embedded every stored vector, micro-batched (fewer calls than texts).
    assert embedded["texts"] == stats["micro_batch_embeddings"]["texts"] > 0
    assert embedded["calls"] == stats["micro_batch_embeddings"]["batches"] < embedded["texts"]
    assert entity_vectors and all(v is not None for v in entity_vectors)  # a vector for every entity of the graph

    # Everything landed in Redis: every document processed once, its chunks there.
    assert doc_status_check(records, corpus)["lost_docs"] == 0 and not missing

    # RAG-Anything's own ingestion on the same configuration (same working-dir path) builds the same graph.
    shutil.rmtree(tmp_path / "kb")
    rag = users_rag(tmp_path / "kb", hashing_embedding()[0], "theirs")

    async def theirs():
        await ensure_initialized(rag)
        try:
            for path in corpus:
                await rag.process_document_complete(str(path), lang="en", display_stats=False)
            return await stored_graph_signature(rag.lightrag)
        finally:
            await arelease_rag(rag)

    comparison = compare_graphs(run_sync(theirs()), ours)
    assert comparison["comparable"] and comparison["same"], comparison


def test_a_registered_parser_defined_in_a_notebook_cell_is_a_clear_error(tmp_path):
    from raganything.parser import Parser

    from ragopt.engine.parse_pool import ParserNotImportable, parser_spec

    class InACell(Parser):  # what a notebook cell defines: no module a worker could import it from
        def check_installation(self):
            return True

    register_parser("incell", InACell)
    rag = RAGAnything(config=RAGAnythingConfig(working_dir=str(tmp_path), parser="incell"))
    with pytest.raises(ParserNotImportable, match="move the class into a module"):
        parser_spec(rag)
