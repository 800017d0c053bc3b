"""Coalesced flushes: shared, ordered, same durability."""

import asyncio
import time
from types import SimpleNamespace
from ragopt.ingest.flushes import coalesce_flushes
STORAGE_NAMES = (
    "full_docs", "text_chunks", "full_entities", "full_relations", "entity_chunks", "relation_chunks",
    "llm_response_cache", "entities_vdb", "relationships_vdb", "chunks_vdb", "chunk_entity_relation_graph",
)


class FakeStorage:
    def __init__(self, name, log, delay_s):
        self.name, self.log, self.delay_s = name, log, delay_s
        self.flushes = 0

    async def index_done_callback(self):
        self.log.append(("start", self.name, time.perf_counter()))
        await asyncio.sleep(self.delay_s)
        self.flushes += 1
        self.log.append(("end", self.name, time.perf_counter()))


def fake_lightrag(delay_s=0.02):
    log = []
    storages = {name: FakeStorage(name, log, delay_s) for name in STORAGE_NAMES + ("doc_status",)}
    return SimpleNamespace(**storages), log


def test_coalesce_flushes_shares_flushes_between_concurrent_callers():
    lightrag, log = fake_lightrag()
    stats = {}
    coalesce_flushes(lightrag, stats)

    async def caller(i):
        await asyncio.sleep(0.003 * i)  # arrive spread over a few flushes' time
        called = time.perf_counter()
        await lightrag._insert_done()
        return called, time.perf_counter()

    async def scenario():
        return await asyncio.gather(*(caller(i) for i in range(10)))

    spans = asyncio.run(scenario())
    assert stats["requests"] == 10
    assert 1 <= stats["flushes"] <= 3, stats
    assert lightrag.doc_status.flushes == stats["flushes"]
    assert all(getattr(lightrag, name).flushes == stats["flushes"] for name in STORAGE_NAMES)

    # Durability: every caller returns only after a flush that began after its call ended.
    flushes = _flush_windows(log)
    for called, returned in spans:
        assert any(start >= called and end <= returned for start, end in flushes), (called, returned, flushes)


def test_coalesce_flushes_writes_doc_status_after_the_other_storages():
    lightrag, log = fake_lightrag(delay_s=0.005)
    lightrag.doc_status.delay_s = 0.0
    coalesce_flushes(lightrag, {})

    async def scenario():
        await asyncio.gather(*(lightrag._insert_done() for _ in range(3)))

    asyncio.run(scenario())
    doc_status_starts = [i for i, (kind, name, _) in enumerate(log) if kind == "start" and name == "doc_status"]
    other_ends = [i for i, (kind, name, _) in enumerate(log) if kind == "end" and name != "doc_status"]
    assert doc_status_starts
    for start in doc_status_starts:
        # Every other storage of the same flush ended before doc_status started.
        ended_before = [i for i in other_ends if i < start]
        assert len(ended_before) >= len(STORAGE_NAMES)


def test_coalesce_flushes_passes_a_flush_error_to_its_callers_and_recovers():
    lightrag, log = fake_lightrag(delay_s=0.001)
    failures = {"left": 1}
    flush = lightrag.chunks_vdb.index_done_callback

    async def failing_once():
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("disk full")
        await flush()

    lightrag.chunks_vdb.index_done_callback = failing_once
    coalesce_flushes(lightrag, {})

    async def scenario():
        first = await asyncio.gather(lightrag._insert_done(), lightrag._insert_done(), return_exceptions=True)
        await lightrag._insert_done()  # the next flush works
        return first

    first = asyncio.run(scenario())
    assert all(isinstance(r, OSError) for r in first)


def _flush_windows(log):
    """(start, end) of each whole flush: first storage start to doc_status end."""
    windows, start = [], None
    for kind, name, t in log:
        if kind == "start" and start is None:
            start = t
        if kind == "end" and name == "doc_status":
            windows.append((start, t))
            start = None
    return windows
