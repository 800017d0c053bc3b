"""ragopt.ingest builds what RAG-Anything's own insert_content_list builds, document by document.

Both runs use the same working-dir path (RAG-Anything writes image paths into
chunk text, and the simulated LLM reads names off it), fresh storages, the
fast simulator preset and the same parsed content: the same entities,
relations and chunks per document must come out.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ragopt.aio import run_sync
from ragopt.backends.parser import parse_file
from ragopt.cache.content_cache import file_sha256
from ragopt.compat.raganything import ensure_initialized
from ragopt.config import RagoptConfig
from ragopt.engine.build import build_rag
from ragopt.engine.orchestrator import content_doc_id, ingest
from ragopt.engine.release import arelease_rag, release_rag
from ragopt.measure.graphs import graph_signature
from ragopt.measure.workloads import synthetic_corpus

FAST = RagoptConfig(sim_preset="fast")
pytestmark = pytest.mark.slow  # whole ingestions, two per module


def _chunks_per_document(working_dir: Path) -> dict:
    records = json.loads((working_dir / "kv_store_doc_status.json").read_text())
    return {Path(r["file_path"]).name: (r["status"], len(r["chunks_list"])) for r in records.values()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    # A Markdown file with a table, a text file and a DOCX with a table and an image.
    corpus = synthetic_corpus(tmp_path_factory.mktemp("corpus"), 7, seed=3, paragraphs_per_doc=1)[4:]
    working_dir = tmp_path_factory.mktemp("same") / "kb"
    outcomes = {}

    rag = build_rag(FAST, working_dir, optimized=True)
    try:
        result = ingest(rag, corpus, progress=False)
    finally:
        release_rag(rag)
    assert result.counts()["ok"] == len(corpus), result.files
    outcomes["ragopt"] = (graph_signature(working_dir), _chunks_per_document(working_dir))
    shutil.rmtree(working_dir)

    rag = build_rag(FAST, working_dir)

    async def one_by_one():
        await ensure_initialized(rag)
        try:
            for path in corpus:
                content = parse_file(path, working_dir / "parsed")
                await rag.insert_content_list(content, file_path=str(path), doc_id=content_doc_id(file_sha256(path)))
        finally:
            await arelease_rag(rag)

    run_sync(one_by_one())
    outcomes["raganything"] = (graph_signature(working_dir), _chunks_per_document(working_dir))
    return outcomes


def test_same_entities_and_relations(built):
    (ours_entities, ours_relations), _ = built["ragopt"]
    (theirs_entities, theirs_relations), _ = built["raganything"]
    assert len(theirs_entities) >= 20 and theirs_relations
    assert ours_entities == theirs_entities
    assert ours_relations == theirs_relations


def test_same_chunks_per_document_and_all_processed(built):
    _, ours = built["ragopt"]
    _, theirs = built["raganything"]
    assert ours == theirs
    assert {status for status, _ in theirs.values()} == {"processed"}
