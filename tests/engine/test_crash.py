"""Resume after a kill: half-merged documents are repaired, nothing is lost, doubled or left running.

- a knowledge base left as a kill leaves it (a document PROCESSING with all of
  its entities merged and flushed, one HANDLING, one marked PROCESSED whose
  relations never reached disk) is resumed into the uninterrupted run's graph,
  with the same weights and source chunks (LightRAG alone would merge the
  first again and double its weights, and skip the last);
- the crash benchmark's short version: an ingestion in a child process killed
  with SIGKILL three times (once inside a storage-file write), rerun each time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import networkx as nx
import pytest

from ragopt.aio import run_sync
from ragopt.config import RagoptConfig
from ragopt.engine.build import build_rag
from ragopt.engine.orchestrator import aingest, content_doc_id
from ragopt.engine.release import arelease_rag
from ragopt.cache.content_cache import file_sha256
from ragopt.measure.bench.crash import counted_once, crash_trial
from ragopt.measure.graphs import compare_graphs
from ragopt.measure.integrity import inspect_knowledge_base
from ragopt.measure.workloads import synthetic_corpus

pytestmark = pytest.mark.slow  # whole ingestions
FAST = RagoptConfig(sim_preset="fast", enable_parse_cache=False)


def _ingest(kb: Path, corpus):
    async def run():
        rag = build_rag(FAST, kb, optimized=True)
        try:
            return await aingest(rag, corpus, config=FAST, progress=False)
        finally:
            await arelease_rag(rag)

    return run_sync(run())


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def _only_from(graph: nx.Graph, chunks: set) -> list:
    return [(u, v) for u, v, d in graph.edges(data=True) if set(d["source_id"].split("<SEP>")) <= chunks]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """(corpus, the uninterrupted knowledge base, a copy left as kills leave one, then resumed in place)."""
    # Five documents: text and a Markdown table, no image (an image's path under the working dir is
    # in its chunk text, and the copy kept for comparison lives elsewhere).
    corpus = synthetic_corpus(tmp_path_factory.mktemp("corpus"), 5, seed=11, paragraphs_per_doc=2)
    kb = tmp_path_factory.mktemp("kb")
    assert _ingest(kb, corpus).counts()["ok"] == 5
    reference = tmp_path_factory.mktemp("reference") / "kb"
    shutil.copytree(kb, reference)

    merged, handling, unflushed = (content_doc_id(file_sha256(p)) for p in corpus[:3])
    records = json.loads((kb / "kv_store_doc_status.json").read_text())
    # unflushed: marked processed, but its own relations never reached the graph file.
    graph = nx.read_graphml(kb / "graph_chunk_entity_relation.graphml")
    dropped = _only_from(graph, set(records[unflushed]["chunks_list"]))
    graph.remove_edges_from(dropped)
    nx.write_graphml(graph, kb / "graph_chunk_entity_relation.graphml")

    def leave_interrupted(status):
        status[merged]["status"] = "processing"  # all of it merged and flushed, as another document's flush does
        status[handling]["status"] = "handling"  # RAG-Anything's: text in, multimodal stage running
        for doc_id in (merged, handling):
            status[doc_id].pop("multimodal_processed", None)

    _edit_json(kb / "kv_store_doc_status.json", leave_interrupted)
    # The run that was killed had put the third on ragopt's in-flight list before its work began.
    (kb / "kv_store_ragopt_in_flight.json").write_text(json.dumps({"documents": {"doc_ids": [unflushed]}}))
    result = _ingest(kb, corpus)
    return corpus, reference, kb, result, dropped


def test_the_resumed_run_redoes_the_three_and_skips_the_rest(interrupted):
    corpus, _, _, result, dropped = interrupted
    assert dropped, "the third document has relations of its own"
    rows = {Path(r.file).name: (r.status, r.stage) for r in result.files.itertuples()}
    redone = {p.name for p in corpus[:3]}
    assert rows == {p.name: ("ok", None) if p.name in redone else ("skipped", "resume") for p in corpus}, rows


def test_every_document_is_processed_once_with_its_chunks(interrupted):
    corpus, _, kb, _, _ = interrupted
    check = inspect_knowledge_base(FAST, kb, corpus)
    assert (check["lost_docs"], check["duplicate_docs"], check["failed_records"], check["missing_chunks"]) == (0, 0, 0, 0), check


def test_the_resumed_graph_is_the_uninterrupted_one_counted_once(interrupted):
    _, reference, kb, _, _ = interrupted
    comparison = compare_graphs(reference, kb)
    assert comparison["comparable"] and comparison["same"], comparison
    once = counted_once(reference, kb)
    assert (once["weight_mismatches"], once["entity_source_mismatches"], once["relation_source_mismatches"]) == (0, 0, 0), once
    assert once["chunks_uninterrupted"] == once["chunks_killed"]


def test_a_repair_killed_before_its_flush_is_finished_by_the_next_ingest(interrupted, tmp_path):
    corpus, reference, _, _, _ = interrupted
    kb = tmp_path / "kb"
    shutil.copytree(reference, kb)
    victim = content_doc_id(file_sha256(corpus[3]))
    chunks = json.loads((kb / "kv_store_doc_status.json").read_text())[victim]["chunks_list"]
    # As a repair killed in its flush leaves it: the status and chunk files were written after its
    # deletion, the graph file not yet; only the chunk ids it saved in the journal still name them.
    _edit_json(kb / "kv_store_doc_status.json", lambda status: status.pop(victim))
    _edit_json(kb / "kv_store_text_chunks.json", lambda stored: [stored.pop(c) for c in chunks])
    (kb / "kv_store_ragopt_in_flight.json").write_text(
        json.dumps({"documents": {"doc_ids": [], "repairing_chunks": {victim: chunks}}}))
    result = _ingest(kb, corpus)
    rows = {Path(r.file).name: (r.status, r.stage) for r in result.files.itertuples()}
    assert rows == {p.name: ("ok", None) if p == corpus[3] else ("skipped", "resume") for p in corpus}, rows
    once = counted_once(reference, kb)
    assert (once["weight_mismatches"], once["entity_source_mismatches"], once["relation_source_mismatches"]) == (0, 0, 0), once
    assert compare_graphs(reference, kb)["same"]

def test_the_crash_benchmark_three_kills_lose_double_corrupt_and_orphan_nothing(tmp_path):
    corpus = tmp_path / "corpus"
    synthetic_corpus(corpus, 7, seed=5, paragraphs_per_doc=2)  # the seventh is a DOCX with an image and a table
    # The fifth's table has the DOCX's table's header, so the same entity name: ragopt.engine.repair's limit.
    (corpus / "note_0005.md").unlink()
    result = crash_trial(corpus, tmp_path / "scratch", FAST, kills=3, seed=1)
    assert result["kills"] == 3, result["kill_records"]
    assert result["kills_in_flushes"] == 1
    assert {r["phase"] for r in result["kill_records"]} - {"start-up"}, "no kill landed after start-up"
    assert (result["lost_docs"], result["duplicate_docs"], result["failed_records"],
            result["processed_without_chunks"]) == (0, 0, 0, 0), result
    assert result["corrupt_files"] == 0 and result["orphan_processes"] == 0, result["kill_records"]
    assert result["same_graph"], result["graph"]
    assert result["weights_or_sources_counted_twice"] == 0 and result["same_chunks"], result["counted_once"]
    assert result["final_run"]["failed"] == 0
    assert result["extra_llm_calls"] == result["llm_calls_killed"] - result["llm_calls_uninterrupted"] >= 0
