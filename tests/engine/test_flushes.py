"""Coalesced flushes: shared, ordered, same durability."""

import asyncio
import itertools
from types import SimpleNamespace
from ragopt.engine.flushes import coalesce_flushes, status_writes_deferred

STORAGE_NAMES = (
    "full_docs", "text_chunks", "full_entities", "full_relations", "entity_chunks", "relation_chunks",
    "llm_response_cache", "entities_vdb", "relationships_vdb", "chunks_vdb", "chunk_entity_relation_graph",
)


class Clock:
    """Logical time: each event gets the next tick, so order is exact and no wall clock is read."""

    def __init__(self):
        self.ticks = itertools.count()

    def __call__(self):
        return next(self.ticks)


class FakeStorage:
    def __init__(self, name, log, clock, gates):
        self.name, self.log, self.clock, self.gates = name, log, clock, gates
        self.flushes = 0

    async def index_done_callback(self):
        self.log.append(("start", self.name, self.clock()))
        if self.name == "doc_status" and self.gates is not None:
            gate = asyncio.Event()
            self.gates.append(gate)
            await gate.wait()  # this flush runs until the test lets it end
        else:
            await asyncio.sleep(0)
        self.flushes += 1
        self.log.append(("end", self.name, self.clock()))


class FakeStatusStore(FakeStorage):
    """Records in memory; ``upsert`` then flushes the whole store, as LightRAG's JsonDocStatusStorage does."""

    def __init__(self, *args):
        super().__init__(*args)
        self.records = {}

    async def get_by_ids(self, ids):
        return [self.records.get(i) for i in ids]

    async def upsert(self, data):
        self.records.update(data)
        await self.index_done_callback()


def fake_lightrag(gated=False):
    log, clock, gates = [], Clock(), ([] if gated else None)
    storages = {name: FakeStorage(name, log, clock, gates) for name in STORAGE_NAMES}
    storages["doc_status"] = FakeStatusStore("doc_status", log, clock, gates)
    return SimpleNamespace(**storages, clock=clock, gates=gates), log


async def _turns(n=20):
    for _ in range(n):
        await asyncio.sleep(0)


def test_coalesce_flushes_shares_flushes_between_concurrent_callers():
    """Three waves of callers, each arriving while the previous flush runs: three flushes in all."""
    lightrag, log = fake_lightrag(gated=True)
    stats = {}
    coalesce_flushes(lightrag, stats)
    clock = lightrag.clock

    async def caller():
        called = clock()
        await lightrag._insert_done()
        return called, clock()

    async def scenario():
        callers = []
        for wave, size in enumerate((3, 4, 3)):
            callers += [asyncio.ensure_future(caller()) for _ in range(size)]
            await _turns()
            assert len(lightrag.gates) == max(1, wave)  # a flush runs; this wave waits for the next one
            if wave:
                lightrag.gates[wave - 1].set()  # the running flush ends: the waiting wave's starts
                await _turns()
                assert len(lightrag.gates) == wave + 1
        lightrag.gates[-1].set()
        return await asyncio.gather(*callers)

    spans = asyncio.run(scenario())
    assert stats == {"requests": 10, "flushes": 3}
    assert lightrag.doc_status.flushes == 3
    assert all(getattr(lightrag, name).flushes == 3 for name in STORAGE_NAMES)
    # Durability: every caller returns only after a flush that began after its call.
    flushes = _flush_windows(log)
    for called, returned in spans:
        assert any(start > called and end < returned for start, end in flushes), (called, returned, flushes)


def test_coalesce_flushes_writes_doc_status_after_the_other_storages():
    lightrag, log = fake_lightrag()
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
    lightrag, log = fake_lightrag()
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



def test_status_writes_wait_for_the_next_full_flush_inside_an_ingest_call_except_new_chunk_lists():
    lightrag, _ = fake_lightrag()
    status = lightrag.doc_status
    stats = {}
    coalesce_flushes(lightrag, stats)

    async def scenario():
        await status.upsert({"d1": {"status": "pending"}})  # outside an ingest call: at once, as shipped
        assert status.flushes == 1
        with status_writes_deferred():
            await status.upsert({"d1": {"status": "processing", "chunks_list": ["c1", "c2"]}})  # new chunks: at once
            assert status.flushes == 2
            await status.upsert({"d1": {"status": "processed", "chunks_list": ["c1", "c2"]}})
            await asyncio.ensure_future(status.index_done_callback())  # tasks started inside defer too
            assert status.flushes == 2
            await status.upsert({"d1": {"status": "processed", "chunks_list": ["c1", "c2", "mm"]}})  # multimodal chunk
            assert status.flushes == 3
            await status.upsert({"d1": {"status": "processed", "multimodal_processed": True,
                                        "chunks_list": ["c1", "c2", "mm"]}})
            await lightrag.full_docs.index_done_callback()  # other stores' own flushes act at once
            assert status.flushes == 3 and lightrag.full_docs.flushes == 1
            await lightrag._insert_done()  # the full flush writes every store, status last
            assert status.flushes == 4 and lightrag.full_docs.flushes == 2
        await status.index_done_callback()
        assert status.flushes == 5

    asyncio.run(scenario())
    assert stats == {"requests": 1, "flushes": 1, "deferred": 3}
