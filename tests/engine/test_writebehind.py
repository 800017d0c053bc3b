"""Write-behind vector storage: the stored vectors are those of sequential writes, with fewer embeddings.

- after any mix of writes and deletes, the storage holds what applying them
  one by one would leave; a newer write of a pending id replaces it unembedded;
- a read or flush sees every write made before it; a flush is not held up by
  writes that keep coming;
- a failed batch stays pending and the next flush stores it;
- end to end, every stored vector is the embedding of the stored text, and the
  vector storages hold exactly the graph's entities and relations.
"""

import asyncio
import base64
import json
import random
import zlib

import numpy as np
import pytest

from ragopt.engine.writebehind import VectorWriteBehind


class FakeVectorStorage:
    """A vector storage whose upsert takes a while, as embedding does; records every batch it embeds."""

    def __init__(self, fail_next_upserts: int = 0):
        self.rows = {}
        self.embedded_batches = []
        self.flushed = []
        self.fail_next_upserts = fail_next_upserts

    async def upsert(self, data):
        await asyncio.sleep(0.005)
        if self.fail_next_upserts:
            self.fail_next_upserts -= 1
            raise RuntimeError("embedding service down")
        self.embedded_batches.append(sorted(data))
        self.rows.update({key: value["content"] for key, value in data.items()})

    async def delete(self, ids):
        for id_ in ids:
            self.rows.pop(id_, None)

    async def get_by_id(self, id_):
        return self.rows.get(id_)

    async def query(self, text, top_k=5):
        return sorted(key for key, content in self.rows.items() if text in content)[:top_k]

    async def index_done_callback(self):
        self.flushed.append(dict(self.rows))
        return True


def run(coro):
    return asyncio.run(coro)


def test_random_writes_and_deletes_end_as_if_applied_one_by_one():
    rng = random.Random(7)
    operations = []
    for step in range(400):
        key = f"ent-{rng.randrange(25)}"
        operations.append(("delete", key) if rng.random() < 0.15 else ("upsert", key, f"text {step}"))

    async def scenario():
        storage = FakeVectorStorage()
        buffer = VectorWriteBehind(storage).install()
        for op in operations:
            if op[0] == "upsert":
                await storage.upsert({op[1]: {"content": op[2]}})
            else:
                await storage.delete([op[1]])
            if rng.random() < 0.3:
                await asyncio.sleep(0.002)  # let the background drain run part of the time
        await storage.index_done_callback()
        return storage, buffer

    storage, buffer = run(scenario())
    expected = {}
    for op in operations:
        if op[0] == "upsert":
            expected[op[1]] = op[2]
        else:
            expected.pop(op[1], None)
    assert storage.rows == expected
    assert storage.flushed[-1] == expected  # the flush saw every write made before it
    writes = sum(op[0] == "upsert" for op in operations)
    assert buffer.stats["writes"] == writes
    assert buffer.stats["embedded"] + buffer.stats["superseded"] >= writes - sum(op[0] == "delete" for op in operations)
    assert buffer.stats["embedded"] < writes  # superseded writes were never embedded
    assert sum(len(batch) for batch in storage.embedded_batches) == buffer.stats["embedded"]


def test_a_read_sees_the_write_before_it():
    async def scenario():
        storage = FakeVectorStorage()
        VectorWriteBehind(storage).install()
        await storage.upsert({"ent-a": {"content": "first"}})
        await storage.upsert({"ent-a": {"content": "second"}})
        return await storage.get_by_id("ent-a")

    assert run(scenario()) == "second"


def test_a_vector_search_reads_what_is_stored_without_waiting_for_the_backlog_unless_told_to():
    async def scenario(queries_wait):
        storage = FakeVectorStorage()
        VectorWriteBehind(storage, queries_wait=queries_wait).install()
        await storage.upsert({"ent-old": {"content": "alpha, stored"}})
        await storage.index_done_callback()
        for step in range(40):  # a backlog: queued without a pause, so no drain has run yet
            await storage.upsert({f"ent-{step}": {"content": f"alpha {step}"}})
        found = await storage.query("alpha", top_k=100)
        await storage.index_done_callback()
        return found, await storage.query("alpha", top_k=100)

    found, after_flush = run(scenario(queries_wait=False))
    assert found == ["ent-old"]  # what is stored, the backlog not embedded first
    assert len(after_flush) == 41  # the flush stored every write
    found, _ = run(scenario(queries_wait=True))
    assert len(found) == 41  # read-your-writes: the search drained first


def test_a_flush_is_not_held_up_by_writes_that_keep_coming():
    async def scenario():
        storage = FakeVectorStorage()
        VectorWriteBehind(storage).install()
        await storage.upsert({"ent-before": {"content": "written before the flush"}})
        stop = asyncio.Event()

        async def writer():
            step = 0
            while not stop.is_set():
                await storage.upsert({f"ent-{step}": {"content": str(step)}})
                step += 1
                await asyncio.sleep(0.001)

        task = asyncio.ensure_future(writer())
        await asyncio.sleep(0.02)
        try:
            await asyncio.wait_for(storage.index_done_callback(), timeout=5)
        finally:
            stop.set()
            await task
        return storage.flushed[0]

    assert "ent-before" in run(scenario())


def test_a_failed_batch_stays_pending_and_the_next_flush_stores_it():
    async def scenario():
        storage = FakeVectorStorage(fail_next_upserts=2)  # the background drain and the first flush fail
        buffer = VectorWriteBehind(storage).install()
        await storage.upsert({"ent-a": {"content": "a"}, "ent-b": {"content": "b"}})
        await asyncio.sleep(0.05)
        assert buffer.stats["drain_errors"] == 1 and storage.rows == {}
        with pytest.raises(RuntimeError, match="embedding service down"):
            await storage.index_done_callback()
        await storage.upsert({"ent-b": {"content": "b, newer"}})
        await storage.index_done_callback()
        return storage

    storage = run(scenario())
    assert storage.rows == {"ent-a": "a", "ent-b": "b, newer"}
    assert storage.flushed == [{"ent-a": "a", "ent-b": "b, newer"}]


def _stored_vectors(path):
    rows = json.loads(path.read_text())["data"]
    decoded = [np.frombuffer(zlib.decompress(base64.b64decode(row["vector"])), dtype=np.float16) for row in rows]
    return rows, np.stack(decoded).astype(np.float32)


@pytest.mark.slow
def test_end_to_end_every_stored_vector_is_the_embedding_of_its_stored_text(tmp_path):
    import networkx as nx
    from lightrag.utils import compute_mdhash_id

    from ragopt.backends.embedding import encode, preload
    from ragopt.engine.orchestrator import ingest
    from ragopt.config import RagoptConfig
    from ragopt.engine.release import release_rag
    from ragopt.engine.build import build_rag
    from ragopt.measure.workloads import synthetic_corpus

    preload(None)
    paths = synthetic_corpus(tmp_path / "corpus", 8, seed=3, paragraphs_per_doc=2)  # entities recur across documents
    rag = build_rag(RagoptConfig(sim_preset="fast"), tmp_path / "rag", optimized=True)
    try:
        result = ingest(rag, paths, progress=False)
        stats = dict(rag.ragopt_stats["write_behind_vectors"])
    finally:
        release_rag(rag)
    assert result.counts()["ok"] == len(paths)
    assert stats["superseded"] > 0 and stats["embedded"] < stats["writes"]

    graph = nx.read_graphml(tmp_path / "rag" / "graph_chunk_entity_relation.graphml")
    entities, entity_vectors = _stored_vectors(tmp_path / "rag" / "vdb_entities.json")
    relations, relation_vectors = _stored_vectors(tmp_path / "rag" / "vdb_relationships.json")
    assert {row["__id__"] for row in entities} == {compute_mdhash_id(node, prefix="ent-") for node in graph.nodes}
    assert len(relations) == graph.number_of_edges()
    for rows, stored in ((entities, entity_vectors), (relations, relation_vectors)):
        fresh = encode([row["content"] for row in rows])
        # float16 storage: a stale vector (of an older, shorter description) would differ by far more
        assert np.abs(stored - fresh).max() < 2e-3
