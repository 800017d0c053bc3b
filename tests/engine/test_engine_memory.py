"""The memory budget and release_rag on real batch ingestion (simulated LLM, "fast" preset)."""

import asyncio
import gc
import uuid
import weakref

import pytest

from ragopt.engine.orchestrator import ingest
from ragopt.config import RagoptConfig
from ragopt.resources.budget import MemoryBudget
from ragopt.engine.release import release_rag
from ragopt.engine.build import build_rag
from ragopt.measure.workloads import synthetic_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return synthetic_corpus(tmp_path_factory.mktemp("corpus"), 3, seed=13)


def _rag(tmp_path):
    # A workspace of its own keeps LightRAG's process-global shared storage apart from other tests.
    return build_rag(
        RagoptConfig(sim_preset="fast"),
        tmp_path / "rag",
        optimized=True,
        lightrag_kwargs={"workspace": f"ragopt-{uuid.uuid4().hex[:8]}"},
    )


class HighThenLow:
    """An RSS reading far above the budget for the first ``high_reads`` calls, then far below."""

    def __init__(self, high_reads=3):
        self.high_reads = high_reads
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return 10_000.0 if self.calls <= self.high_reads else 0.1


def test_budget_holds_documents_back_then_lets_all_through(tmp_path, corpus):
    rss = HighThenLow(high_reads=3)
    budget = MemoryBudget(max_mb=1, rss_fn=rss, poll_s=0.02)
    rag = _rag(tmp_path)
    try:
        result = ingest(rag, corpus, budget=budget, parse_workers=1, progress=False)
    finally:
        release_rag(rag)
    assert result.counts() == {"ok": len(corpus), "failed": 0, "skipped": 0}, result.files
    assert rss.calls > rss.high_reads  # the gate polled until RSS came down
    assert budget.held_count >= 1
    assert budget.held_seconds > 0
    event = budget.events[0]
    assert event.rss_mb_at_hold == 10_000.0 and event.rss_mb_at_resume == 0.1
    assert result.memory_gate == {"held_count": budget.held_count, "held_seconds": budget.held_seconds}


def test_ingested_rag_is_collected_after_release(tmp_path, corpus):
    rag = _rag(tmp_path)
    result = ingest(rag, corpus, parse_workers=1, progress=False)
    assert result.counts()["ok"] == len(corpus)
    assert result.memory_gate == {}  # no budget, nothing to report
    ref = weakref.ref(rag)
    lightrag_ref = weakref.ref(rag.lightrag)
    release_rag(rag)
    del rag, result
    gc.collect()
    assert lightrag_ref() is None, "LightRAG outlived release_rag"
    assert ref() is None, "the RAGAnything instance outlived release_rag"


def test_release_after_ingest_stops_every_task_ingest_left_on_its_loop(tmp_path, corpus):
    from ragopt.aio import _private_loop

    rag = _rag(tmp_path)
    ingest(rag, corpus, parse_workers=1, progress=False)
    loop = _private_loop()
    assert [t for t in asyncio.all_tasks(loop) if not t.done()], "expected LightRAG's queue workers to be running"
    release_rag(rag)
    left = [t for t in asyncio.all_tasks(loop) if not t.done()]
    assert not left, [t.get_coro() for t in left]


def _merge_lock_keys(workspace):
    from lightrag.kg import shared_storage

    return [k for k in shared_storage._storage_keyed_lock._async_lock if k.startswith(f"{workspace}:GraphDB:")]


def test_release_forgets_the_workspaces_idle_merge_locks_only(tmp_path, corpus):
    from lightrag.kg.shared_storage import get_storage_keyed_lock

    rag = _rag(tmp_path)
    workspace = rag.lightrag_kwargs["workspace"]
    ingest(rag, corpus, parse_workers=1, progress=False)
    assert _merge_lock_keys(workspace), "LightRAG no longer keeps a lock per merged entity"

    async def hold_then_release(other):
        async with get_storage_keyed_lock(["idle entity"], namespace=f"{other}:GraphDB"):
            pass
        async with get_storage_keyed_lock(["held entity"], namespace=f"{workspace}:GraphDB"):
            await asyncio.to_thread(release_rag, rag)  # released while another merge holds a lock

    other = f"other-{uuid.uuid4().hex[:8]}"
    asyncio.run(hold_then_release(other))
    assert _merge_lock_keys(workspace) == [f"{workspace}:GraphDB:held entity"]
    assert _merge_lock_keys(other) == [f"{other}:GraphDB:idle entity"]  # another workspace's stay


def test_documents_held_by_the_gate_do_not_keep_lightrag_from_starting(tmp_path, corpus):
    """Memory is freed by the work under way: the run must start with the documents already admitted."""
    from ragopt.aio import run_sync
    from ragopt.engine.orchestrator import aingest

    rag = _rag(tmp_path)
    started = []

    def rss_mb():  # the first document gets in; then memory is high until LightRAG's run starts
        rss_mb.reads += 1
        return 0.1 if rss_mb.reads == 1 or started else 10_000.0

    rss_mb.reads = 0
    budget = MemoryBudget(max_mb=1, rss_fn=rss_mb, poll_s=0.001)  # reads cached for 0.5 ms only

    async def scenario():
        await rag._ensure_lightrag_initialized()
        run = rag.lightrag.apipeline_process_enqueue_documents

        async def recorded_run(*args, **kwargs):
            started.append(True)
            return await run(*args, **kwargs)

        rag.lightrag.apipeline_process_enqueue_documents = recorded_run
        return await asyncio.wait_for(aingest(rag, corpus, budget=budget, parse_workers=1, progress=False), 120)

    try:
        result = run_sync(scenario())
    finally:
        release_rag(rag)
    assert result.counts() == {"ok": len(corpus), "failed": 0, "skipped": 0}, result.files
    assert budget.held_count >= 1
