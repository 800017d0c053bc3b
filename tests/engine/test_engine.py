"""ragopt.batch end to end on tiny corpora with the fast simulator preset.

- one bad file never stops the batch: each gets a failed "parse" row naming it;
- 429s from the simulator's fault injection are retried: nothing lost, nothing doubled;
- a cancelled ingestion resumes: what was done is skipped, the rest is done once;
- the blocking ``ingest`` works inside a running event loop, and a second
  ingest of the same files skips them all.

Every RAGAnything built here is released before the next is built: LightRAG
keeps JSON storage data in process-global shared state keyed by workspace.
"""

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from raganything.callbacks import ProcessingCallback

from ragopt.aio import run_sync
from ragopt.cache.content_cache import file_sha256
from ragopt.engine.orchestrator import aingest, content_doc_id, ingest
from ragopt.config import RagoptConfig
from ragopt.measure.graphs import compare_graphs, graph_signature
from ragopt.engine.release import arelease_rag, release_rag
from ragopt.engine.build import build_rag
from ragopt.measure.workloads import synthetic_corpus

from corpora import ALPHA, BAD_FILES, BETA, GOOD_FILES, write_bad_files, write_good_files  # noqa: E402

FAST = RagoptConfig(sim_preset="fast")


@pytest.fixture(scope="module", autouse=True)
def embedding_model():
    from ragopt.backends.embedding import preload

    preload(None)  # once for the module, not inside the first test's ingest


def doc_status_on_disk(working_dir) -> dict:
    return json.loads((Path(working_dir) / "kv_store_doc_status.json").read_text())


def assert_each_file_processed_once(working_dir, files):
    """One processed, fully ingested record per file; no failed and no "dup-" records."""
    records = doc_status_on_disk(working_dir)
    assert not [k for k in records if k.startswith("dup-")], sorted(records)
    by_file = {}
    for doc_id, record in records.items():
        by_file.setdefault(record["file_path"], []).append((doc_id, record))
    assert sorted(by_file) == sorted(Path(f).name for f in files), sorted(by_file)
    for name, entries in by_file.items():
        assert len(entries) == 1, f"{name}: {len(entries)} records"
        doc_id, record = entries[0]
        assert record["status"] == "processed", f"{name}: {record['status']} {record.get('error_msg')}"
        assert record.get("multimodal_processed") is True, f"{name}: multimodal_processed={record.get('multimodal_processed')!r}"
    # Each document's chunks stored once.
    chunks = json.loads((Path(working_dir) / "kv_store_text_chunks.json").read_text())
    listed = [c for _, r in records.items() for c in r["chunks_list"]]
    assert len(listed) == len(set(listed)) == len(chunks)
    # Numbered 0..n-1 per document, multimodal chunks after the text's (as RAG-Anything numbers them).
    for name, [(doc_id, record)] in by_file.items():
        order = sorted(chunks[c]["chunk_order_index"] for c in record["chunks_list"])
        assert order == list(range(len(order))), f"{name}: chunk order {order}"
    return records


def doc_id_of(path) -> str:
    return content_doc_id(file_sha256(path))


def rows_by_name(result) -> dict:
    return {Path(row.file).name: row for row in result.files.itertuples(index=False)}


# -- per-file isolation ---------------------------------------------------------


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("messy")
    write_good_files(folder)
    (folder / "zz_alpha_copy.txt").write_text(ALPHA, encoding="utf-8")  # same bytes, another name
    write_bad_files(folder)
    working_dir = tmp_path_factory.mktemp("messy-w")
    rag = build_rag(FAST, working_dir, optimized=True)

    def slow_to_hash_first(path):  # alpha.txt's hash finishes after its copy's: the first listed must still win
        if Path(path).name == "alpha.txt":
            time.sleep(0.5)
        return file_sha256(path)

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("ragopt.engine.orchestrator.file_sha256", slow_to_hash_first)
            result = ingest(rag, sorted(folder.iterdir()), progress=False)
        stats = rag.ragopt_stats
    finally:
        release_rag(rag)
    return folder, working_dir, result, stats


def test_bad_files_fail_alone_with_a_parse_row_naming_the_file(messy):
    folder, _, result, _ = messy
    rows = rows_by_name(result)
    assert len(rows) == 7
    for name, reason in BAD_FILES.items():
        row = rows[name]
        assert row.status == "failed", (name, row)
        assert row.stage == "parse"
        assert str(folder / name) in row.error
        assert reason in row.error
        assert row.error_type in {"EmptyDocumentError", "CorruptDocumentError"}
    for name in GOOD_FILES:
        assert rows[name].status == "ok", f"{name}: {rows[name].error}"
        assert rows[name].stage is None and pd.isna(rows[name].error)
        assert rows[name].processing_s > 0 and rows[name].parse_s > 0
    copy = rows["zz_alpha_copy.txt"]
    assert copy.status == "skipped" and copy.stage == "dedupe" and "alpha.txt" in copy.error
    assert result.counts() == {"ok": 3, "failed": 3, "skipped": 1}


def test_good_files_are_stored_once_beside_the_bad_ones(messy):
    folder, working_dir, result, stats = messy
    records = assert_each_file_processed_once(working_dir, [folder / name for name in GOOD_FILES])
    assert set(records) == {doc_id_of(folder / name) for name in GOOD_FILES}
    entities, relations = graph_signature(working_dir)
    assert {"Ada Okafor of Northwind Labs", "Orion Systems", "Cedar Health"} <= entities and relations
    # The optimizations were on: coalesced flushes and micro-batched embeddings.
    assert 0 < stats["coalesce_flushes"]["flushes"] <= stats["coalesce_flushes"]["requests"]
    # Status changes waited for the full flushes, and the last one wrote them (records above are read from disk).
    assert stats["coalesce_flushes"]["deferred"] > 0
    assert stats["micro_batch_embeddings"]["texts"] >= stats["micro_batch_embeddings"]["batches"] > 0


# -- retries against the simulator's fault injection ------------------------------


@pytest.fixture(scope="module")
def corpus6(tmp_path_factory):
    return synthetic_corpus(tmp_path_factory.mktemp("corpus6"), 6, paragraphs_per_doc=1)


@pytest.fixture(scope="module")
def rate_limited(corpus6, tmp_path_factory):
    working_dir = tmp_path_factory.mktemp("429-w")
    rag = build_rag(FAST.replace(sim_rate_429=0.3), working_dir, optimized=True)
    try:
        result = ingest(rag, corpus6, progress=False)
        stats = rag.ragopt_stats
    finally:
        release_rag(rag)
    return working_dir, result, stats


def test_429s_are_retried_and_no_document_is_lost_or_duplicated(corpus6, rate_limited):
    working_dir, result, stats = rate_limited
    assert result.counts() == {"ok": 6, "failed": 0, "skipped": 0}, result.files[["file", "status", "error"]]
    assert stats["llm_retries"]["RateLimitError"] > 0
    assert stats["llm_retries"]["retries"] >= stats["llm_retries"]["RateLimitError"]
    assert "gave_up" not in stats["llm_retries"]
    assert_each_file_processed_once(working_dir, corpus6)


# -- resume after cancellation ----------------------------------------------------


class CancelOnFirstDocument(ProcessingCallback):
    """A RAG-Anything callback that cancels the ingestion when the first document completes."""

    def __init__(self):
        self.task = None
        self.events = []

    def on_document_complete(self, file_path=None, **fields):
        self.events.append(("document_complete", file_path))
        if self.task is not None and not self.task.done():
            self.task.cancel()


@pytest.fixture(scope="module")
def resumed(corpus6, tmp_path_factory):
    working_dir = tmp_path_factory.mktemp("resume-w")
    # One LLM slot: documents finish one after another, so the cancel lands mid-batch.
    config = FAST.replace(max_concurrent_processing=1)

    async def scenario():
        rag = build_rag(config, working_dir, optimized=True)
        recorder = CancelOnFirstDocument()
        rag.callback_manager.register(recorder)
        recorder.task = asyncio.ensure_future(aingest(rag, corpus6, progress=False))
        cancelled = False
        try:
            await recorder.task
        except asyncio.CancelledError:
            cancelled = True
        await arelease_rag(rag)  # as a process that stops would: what is done is on disk
        before = doc_status_on_disk(working_dir)

        rag = build_rag(config, working_dir, optimized=True)  # a fresh start on the same working dir
        try:
            result = await aingest(rag, corpus6, progress=False)
        finally:
            await arelease_rag(rag)
        return cancelled, recorder.events, before, result

    return (working_dir, *run_sync(scenario()))


def test_cancelled_ingestion_stops_part_way(resumed, corpus6):
    _, cancelled, events, before, _ = resumed
    assert cancelled
    completed = [path for event, path in events if event == "document_complete"]
    assert len(completed) == 1
    done = {r["file_path"] for r in before.values() if r["status"] == "processed" and r.get("multimodal_processed")}
    assert Path(completed[0]).name in done
    assert len(done) < len(corpus6), "every document was already done when the cancel landed"


def test_rerun_skips_what_was_done_and_does_the_rest_once(resumed, corpus6):
    working_dir, _, _, before, result = resumed
    done_before = {r["file_path"] for r in before.values() if r["status"] == "processed" and r.get("multimodal_processed")}
    rows = rows_by_name(result)
    assert sorted(rows) == sorted(p.name for p in corpus6)
    for name, row in rows.items():
        if name in done_before:
            assert (row.status, row.stage) == ("skipped", "resume"), (name, row)
        else:
            assert row.status == "ok", f"{name}: {row.status} {row.stage} {row.error}"
    assert_each_file_processed_once(working_dir, corpus6)


def test_retries_and_resume_build_the_same_graph(rate_limited, resumed):
    """Neither retried requests nor an interrupted run change the knowledge graph."""
    comparison = compare_graphs(rate_limited[0], resumed[0])
    assert comparison["entities_a"] > 10 and comparison["relations_a"] > 5
    assert comparison["same"], comparison


# -- the blocking form inside a running event loop --------------------------------

NESTED_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from ragopt.engine.orchestrator import ingest
    from ragopt.config import RagoptConfig
    from ragopt.engine.release import arelease_rag
    from ragopt.engine.build import build_rag

    async def main():
        loop = asyncio.get_running_loop()
        files = sorted(Path(sys.argv[1]).iterdir())
        rag = build_rag(RagoptConfig(sim_preset="fast"), sys.argv[2], optimized=True)
        first = ingest(rag, files, progress=False)  # blocking call while this loop runs
        second = ingest(rag, files, progress=False)
        assert asyncio.get_running_loop() is loop
        await arelease_rag(rag)
        rows = lambda r: r.files[["file", "status", "stage", "error"]].astype(object).where(r.files.notna(), None).to_dict("records")
        return {"first": rows(first), "second": rows(second)}

    print(json.dumps(asyncio.run(main())))
    """
)


@pytest.mark.isolated
def test_blocking_ingest_inside_a_running_loop_and_a_second_ingest_skips_all(tmp_path):
    # In a child process: nest-asyncio patches asyncio for the whole process,
    # which would change how every later test's event loops behave.
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "alpha.txt").write_text(ALPHA, encoding="utf-8")
    (corpus / "beta.md").write_text(BETA, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGOPT_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    completed = subprocess.run(
        [sys.executable, "-c", NESTED_SCRIPT, str(corpus), str(tmp_path / "w")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    runs = json.loads(completed.stdout.strip().splitlines()[-1])
    assert [r["status"] for r in runs["first"]] == ["ok", "ok"], runs["first"]
    assert [(r["status"], r["stage"]) for r in runs["second"]] == [("skipped", "resume")] * 2, runs["second"]
    assert_each_file_processed_once(tmp_path / "w", sorted(corpus.iterdir()))


def test_parse_pool_is_replaced_after_its_share_of_files_and_released_when_parsing_is_done(tmp_path, monkeypatch):
    from concurrent.futures import ProcessPoolExecutor

    from ragopt.engine import parse_pool

    created = []

    class CountedPool(ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            created.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(parse_pool, "RECYCLE_AFTER_FILES", 2)
    monkeypatch.setattr(parse_pool, "ProcessPoolExecutor", CountedPool)
    corpus = synthetic_corpus(tmp_path / "corpus", 5, seed=11, paragraphs_per_doc=1)
    rag = build_rag(FAST, tmp_path / "w", optimized=True)
    try:
        result = ingest(rag, corpus, parse_workers=1, progress=False)
        released = dict(parse_pool._pools)
    finally:
        release_rag(rag)
    assert result.counts() == {"ok": 5, "failed": 0, "skipped": 0}, result.files
    assert len(created) == 3  # files 1-2, 3-4 and 5: a pool per RECYCLE_AFTER_FILES files of its one worker
    assert released == {}  # every file parsed: no idle parse worker holds memory through the rest of the run
    assert_each_file_processed_once(tmp_path / "w", corpus)


# -- when LightRAG's run starts -------------------------------------------------------


def test_first_run_waits_for_a_document_parsed_but_not_yet_queued(tmp_path):
    """Documents queued after LightRAG's run has picked its batch wait behind that batch."""
    corpus = synthetic_corpus(tmp_path / "corpus", 3, seed=5, paragraphs_per_doc=1)
    slow_id = doc_id_of(corpus[-1])
    rag = build_rag(FAST, tmp_path / "w", optimized=True)
    batches = []

    async def scenario():
        await rag._ensure_lightrag_initialized()
        lightrag = rag.lightrag
        enqueue, statuses = lightrag.apipeline_enqueue_documents, lightrag.doc_status.get_docs_by_statuses

        async def slow_enqueue(*args, **kwargs):
            if kwargs.get("ids") == slow_id:
                await asyncio.sleep(0.5)  # parsed, not yet in LightRAG's queue
            return await enqueue(*args, **kwargs)

        async def recorded_statuses(*args, **kwargs):
            docs = await statuses(*args, **kwargs)
            if docs:
                batches.append(sorted(docs))
            return docs

        lightrag.apipeline_enqueue_documents = slow_enqueue
        lightrag.doc_status.get_docs_by_statuses = recorded_statuses
        return await aingest(rag, corpus, progress=False)

    try:
        result = run_sync(scenario())
    finally:
        release_rag(rag)
    assert result.counts() == {"ok": 3, "failed": 0, "skipped": 0}, result.files
    assert batches[0] == sorted(doc_id_of(path) for path in corpus), batches


def test_fewer_buffered_documents_than_start_the_run_still_finish(corpus6, tmp_path):
    rag = build_rag(FAST, tmp_path / "w", optimized=True)
    try:
        result = run_sync(asyncio.wait_for(aingest(rag, corpus6, max_in_flight=2, progress=False), 240))
    finally:
        release_rag(rag)
    assert result.counts() == {"ok": 6, "failed": 0, "skipped": 0}, result.files
    assert_each_file_processed_once(tmp_path / "w", corpus6)


# -- batches and their time limit ------------------------------------------------------


@pytest.mark.slow
def test_a_batch_past_its_time_limit_fails_its_unfinished_documents_and_a_rerun_finishes_them(tmp_path):
    corpus = synthetic_corpus(tmp_path / "corpus", 4, seed=21, paragraphs_per_doc=1)
    # 0.3 s per LLM call and an extract then a glean per chunk: no document can be done within 0.2 s.
    slow = RagoptConfig(sim_preset="default")
    rag = build_rag(slow, tmp_path / "w", optimized=True)
    try:
        first = ingest(rag, corpus, config=slow, batch_size=2, batch_timeout_s=0.2, progress=False)
        second = ingest(rag, corpus, config=slow, batch_size=2, progress=False)
    finally:
        release_rag(rag)
    assert first.batches == 2
    assert first.counts() == {"ok": 0, "failed": 4, "skipped": 0}, first.files
    for row in first.files.itertuples():
        assert row.stage == "batch_timeout" and row.error_type == "BatchTimeoutError"
        assert "BATCH_TIMEOUT=0.2 s" in row.error and "batch of 2 documents" in row.error
    assert second.counts()["failed"] == 0, second.files[["file", "status", "stage", "error"]].to_string()
    assert second.counts()["ok"] + second.counts()["skipped"] == 4
    assert_each_file_processed_once(tmp_path / "w", corpus)
