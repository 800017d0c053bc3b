"""The writer lock of a knowledge base: one holder, a lease, a fencing token, and no write without the lease."""

import json
import threading
import time

import pytest

from ragopt.aio import run_sync
from ragopt.cache.redis_store import redis_client
from ragopt.compat.raganything import ensure_initialized
from ragopt.config import RagoptConfig
from ragopt.distributed.fence import fence_writes
from ragopt.distributed.lock import LeaseLost, WriterLock, holder_of, lock_key

from celery_cluster import poll


def test_one_holder_at_a_time_and_each_tenure_a_higher_token(redis_server):
    client = redis_client(redis_server.url)
    a, b = WriterLock(client, "kb", "node-a|1|x", 5), WriterLock(client, "kb", "node-b|2|y", 5)
    assert a.acquire() == 1
    assert b.acquire() is None and holder_of(client, "kb") == "node-a|1|x"
    a.release()
    assert b.acquire() == 2 and holder_of(client, "kb") == "node-b|2|y"
    a.release()  # a no longer holds it: its release must leave b's lease alone
    assert holder_of(client, "kb") == "node-b|2|y"


def test_a_dead_writers_lease_expires_and_the_next_takes_over_while_the_old_one_is_refused(redis_server):
    client = redis_client(redis_server.url)
    dead, next_writer = WriterLock(client, "kb", "dead|1|x", 0.3), WriterLock(client, "kb", "next|2|y", 5)
    assert dead.acquire() == 1
    token = poll(next_writer.acquire, every_s=0.05)  # the dead writer never renews
    assert token == 2
    with pytest.raises(LeaseLost, match="now held by next"):
        dead.renew()


def test_the_lease_survives_a_redis_restart_and_is_confirmed_before_going_on(redis_server):
    client = redis_client(redis_server.url)
    lock = WriterLock(client, "kb", "node|1|x", 30)
    assert lock.acquire() == 1
    redis_server.stop()
    renewed = threading.Thread(target=lock.renew)
    renewed.start()
    poll(lambda: lock.reconnects > 0)  # the writer saw Redis go away ...
    redis_server.start()  # ... and back, with the lock in its append-only file
    renewed.join()
    assert (lock.checks, lock.token, holder_of(client, "kb")) == (1, 1, "node|1|x")


def test_a_kept_lease_outlives_its_holders_idle_thread_reports_its_loss_and_stops_at_release(redis_server):
    client = redis_client(redis_server.url)
    lock, lost = WriterLock(client, "kb", "node|1|x", 1.2), []
    lock.acquire()
    lock.keep(lost.append)
    time.sleep(3)  # the holder's own thread does nothing for 2.5 leases
    assert (holder_of(client, "kb"), lost) == ("node|1|x", []) and lock.checks >= 2
    client.delete(lock_key("kb"))  # as if Redis had let the lease run out ...
    assert WriterLock(client, "kb", "other|2|y", 30).acquire() == 2  # ... and another writer took over
    poll(lambda: lost)
    assert [type(error) for error in lost] == [LeaseLost] and "now held by other|2|y" in str(lost[0])
    lock.release()
    assert holder_of(client, "kb") == "other|2|y"

    kept = WriterLock(client, "kb2", "node|1|x", 1.2)
    kept.acquire()
    kept.keep(lost.append)
    kept.release()
    checks = kept.checks
    time.sleep(1.2)
    assert (kept.checks, len(lost), holder_of(client, "kb2")) == (checks, 1, None)  # released: renews nothing more


def test_a_knowledge_base_slower_to_open_than_its_lease_keeps_its_writer_lock(redis_server, tmp_path):
    """A worker's first RAGAnything takes 3-5 s to build (imports); under load, longer than the lease."""
    from ragopt.distributed.app import make_app
    from ragopt.distributed.host import KnowledgeBaseHost

    config = RagoptConfig(sim_preset="fast", redis_url=redis_server.url, kb_root=str(tmp_path), writer_lease_s=1.2)
    host = KnowledgeBaseHost(make_app(config, environ={}), "node")
    build = host.factory

    def slow_factory(kb, config):
        time.sleep(3)  # 2.5 leases, the host's event loop blocked all along
        return build(kb, config)

    host.factory = slow_factory
    open_kb = host.run(host._enter("kb"), 120, "open")
    time.sleep(1.2)
    client = redis_client(redis_server.url)
    assert (open_kb.lost, open_kb.lock.token, holder_of(client, "kb")) == (None, 1, host.holder)
    host.run(host._leave(open_kb), 120, "close")
    assert holder_of(client, "kb") is None


def test_a_writer_cut_off_past_its_lease_has_lost_it(redis_server):
    lock = WriterLock(redis_client(redis_server.url), "kb", "node|1|x", 0.5)
    lock.acquire()
    redis_server.stop()
    with pytest.raises(LeaseLost, match="out of reach"):
        lock.renew()


def test_a_flush_without_the_lease_is_refused_and_writes_nothing(redis_server, tmp_path):
    from ragopt.engine.build import build_rag
    from ragopt.engine.release import release_rag

    client = redis_client(redis_server.url)
    rag = build_rag(RagoptConfig(sim_preset="fast"), tmp_path, optimized=True)
    lock = WriterLock(client, "kb", "writer|1|x", 30)
    lock.acquire()
    run_sync(ensure_initialized(rag))
    fence_writes(rag, lock)
    docs = rag.lightrag.full_docs
    try:
        run_sync(docs.upsert({"doc-1": {"content": "first"}}))
        run_sync(docs.index_done_callback())  # holds the lease: written
        client.delete("ragopt:kb:kb:writer")  # the lease ran out while this writer was away ...
        assert WriterLock(client, "kb", "other|2|y", 30).acquire() == 2  # ... and another writer took over
        run_sync(docs.upsert({"doc-2": {"content": "second"}}))
        with pytest.raises(LeaseLost):
            run_sync(docs.index_done_callback())
    finally:
        with pytest.raises(LeaseLost):
            release_rag(rag)  # its closing flush is refused too
    on_disk = json.loads((tmp_path / "kv_store_full_docs.json").read_text())
    assert sorted(on_disk) == ["doc-1"]
