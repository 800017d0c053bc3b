"""The queue driver resolves each document's waiter from LightRAG's status records, also when one vanishes."""

import asyncio

import pytest

from ragopt.engine import queue_driver
from ragopt.engine.queue_driver import LightRAGQueue


class FakeStatus:
    def __init__(self):
        self.records = {}

    async def get_by_ids(self, ids):
        return [self.records.get(i) for i in ids]


class FakeLightRAG:
    """Enqueue writes a pending record; a run either processes each pending one or, like LightRAG's
    consistency check for a record whose text is missing from full_docs, deletes it."""

    def __init__(self, drop_on_run=False):
        self.doc_status = FakeStatus()
        self.drop_on_run = drop_on_run

    async def apipeline_enqueue_documents(self, input, ids, file_paths):
        self.doc_status.records[ids] = {"status": "pending", "updated_at": "t0"}
        return "track-1"

    async def apipeline_process_enqueue_documents(self):
        await asyncio.sleep(0.01)
        for doc_id in list(self.doc_status.records):
            if self.drop_on_run:
                del self.doc_status.records[doc_id]
            else:
                self.doc_status.records[doc_id] = {"status": "processed", "updated_at": "t1", "chunks_count": 2}


@pytest.fixture(autouse=True)
def idle_pipeline(monkeypatch):
    async def status(lightrag):
        return {"busy": False, "request_pending": False}

    monkeypatch.setattr(queue_driver, "pipeline_status", status)


def _process(lightrag):
    async def scenario():
        queue = LightRAGQueue(lightrag, start_after=1, all_queued=lambda: True)
        poll = asyncio.create_task(queue.poll())
        try:
            return await asyncio.wait_for(queue.process_text("doc-1", "text", "a.txt", None, lambda: None), 5), queue
        finally:
            poll.cancel()

    return asyncio.run(scenario())


def test_a_processed_record_resolves_its_waiter():
    track_id, queue = _process(FakeLightRAG())
    assert track_id == "track-1" and queue.chunks_done == 2 and not queue.waiting


def test_a_record_lightrag_deleted_fails_its_document_instead_of_waiting_forever():
    with pytest.raises(RuntimeError, match="deleted the document's status record"):
        _process(FakeLightRAG(drop_on_run=True))


class RewritingLightRAG(FakeLightRAG):
    """A run during which the status store misses the record for a few polls (a store rewriting it), then
    marks it processed: LightRAG is busy all that time."""

    def __init__(self):
        super().__init__()
        self.pipeline = {"busy": False, "request_pending": False}

    async def apipeline_process_enqueue_documents(self):
        self.pipeline["busy"] = True
        record = self.doc_status.records.pop("doc-1")
        await asyncio.sleep(4 * queue_driver.STATUS_POLL_S)
        self.doc_status.records["doc-1"] = {**record, "status": "processed", "updated_at": "t1", "chunks_count": 1}
        self.pipeline["busy"] = False


def test_a_record_missing_for_a_moment_while_lightrag_is_busy_does_not_fail_its_document(monkeypatch):
    lightrag = RewritingLightRAG()

    async def status(_):
        return lightrag.pipeline

    monkeypatch.setattr(queue_driver, "pipeline_status", status)
    track_id, queue = _process(lightrag)
    assert track_id == "track-1" and queue.chunks_done == 1
