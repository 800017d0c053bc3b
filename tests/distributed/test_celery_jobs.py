"""Ingest jobs on real workers: per-file progress from Redis, queries while a job runs, cancel, one writer
per knowledge base, a killed writer's knowledge base taken over, and a Redis restart mid-batch.

A file named ``gated*`` is parsed by ``gated_parser`` only once the test opens
its gate, so each scenario holds a batch in flight exactly as long as it needs.
"""

import subprocess
import sys

import pytest
from redis.exceptions import RedisError

from ragopt.aio import run_sync
from ragopt.compat.raganything import ensure_initialized
from ragopt.distributed.client import Job, query, submit
from ragopt.distributed.factory import default_factory
from ragopt.engine.release import arelease_rag
from ragopt.measure.integrity import doc_status_check, doc_status_records
from ragopt.measure.workloads import synthetic_corpus

from celery_cluster import poll
from corpora import ALPHA, BETA, write_bad_files
from gated_parser import SPEC

pytestmark = pytest.mark.slow


def kb_check(config, kb, files):
    """The doc-status check of knowledge base ``kb``, opened as the workers' factory opens it (workers idle)."""
    rag = default_factory(kb, config)

    async def check():
        await ensure_initialized(rag)
        try:
            return doc_status_check(await doc_status_records(rag.lightrag), files)
        finally:
            await arelease_rag(rag)

    return run_sync(check())


def statuses(job):
    return {row["file"]: row["status"] for row in job.status()["files"]}


def status_when(job, condition):
    """``job.status()`` once ``condition(file statuses)`` holds, read through any Redis outage."""
    def ready():
        try:
            return condition(statuses(job)) and job.status()
        except RedisError:
            return None

    return poll(ready, every_s=0.2)


def start(cluster, **settings):
    c = cluster(RAGOPT_PARSER=SPEC, **settings)
    return c, c.worker("parse", concurrency=2), c.worker("ingest", concurrency=4)


def second_batch_in_flight(job, parser):
    """Wait until batch 0 (alpha, beta) is in and batch 1 (delta, gated) is held by gated's parse.

    LightRAG's run of a batch starts once all its documents are queued, so
    delta, parsed, waits in the batch with gated.
    """
    status_when(job, lambda s: s["alpha.txt"] == s["beta.md"] == "ok")
    poll(lambda: [t for t in parser.active() if str(t["kwargs"].get("path")).endswith("gated.txt")])


def texts(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text({"alpha.txt": ALPHA, "beta.md": BETA}.get(name, f"# {name}\n\n{ALPHA}"), encoding="utf-8")
    return [folder / name for name in names]


def test_a_jobs_progress_is_read_from_redis_a_query_is_answered_while_it_runs_and_cancel_keeps_what_is_done(
        cluster, tmp_path):
    c, _, writer = start(cluster)
    c.worker("query", concurrency=2)  # queries it takes for the knowledge base go to its writer
    corpus = tmp_path / "corpus"
    texts(corpus, ["alpha.txt", "beta.md", "gated.txt", "zeta.txt"])
    write_bad_files(corpus)
    (corpus / "empty.txt").unlink(), (corpus / "garbage.txt").unlink()
    (corpus / "big.txt").write_text("x" * (1024 * 1024 + 1))  # over RAGOPT_TRANSFER_MAX_MB=1
    # Sorted: alpha, beta | big (refused at submit) | corrupt, gated | zeta.
    job = submit(corpus, "notes", app=c.app, batch_size=2)
    first = job.status()
    assert first["state"] in ("queued", "running") and first["counts"]["total"] == 6
    assert {r["file"]: r["status"] for r in first["files"]}["big.txt"] == "failed"

    status = status_when(job, lambda s: s["alpha.txt"] == s["beta.md"] == "ok" and s["corrupt.pdf"] == "failed")
    rows = {r["file"]: r for r in status["files"]}
    assert rows["big.txt"]["stage"] == "transfer" and "RAGOPT_TRANSFER_MAX_MB=1" in rows["big.txt"]["error"]
    assert rows["corrupt.pdf"]["stage"] == "parse" and rows["corrupt.pdf"]["error"].startswith("corrupt.pdf is not a valid PDF")
    assert (rows["gated.txt"]["status"], rows["zeta.txt"]["status"], status["state"]) == ("pending", "pending", "running")

    answers = [query("notes", "What did Ada Okafor present?", mode=mode, app=c.app) for mode in ("mix", "local", "naive")]
    for answer in answers:
        assert "Ada Okafor" in answer.get(timeout=None)
        assert answer.worker == writer.name  # answered by the process that writes the knowledge base
    assert job.status()["state"] == "running" and statuses(job)["gated.txt"] == "pending"  # still ingesting

    job.cancel()
    final = poll(lambda: job.done() and job.status())
    assert final["state"] == "cancelled"
    assert statuses(job) == {"alpha.txt": "ok", "beta.md": "ok", "big.txt": "failed", "corrupt.pdf": "failed",
                             "gated.txt": "cancelled", "zeta.txt": "cancelled"}
    listed = subprocess.run([sys.executable, "-m", "ragopt.cli", "jobs"], env=c.env, capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert [line.split()[:3] for line in listed.stdout.splitlines()[1:]] == [[job.id, "notes", "cancelled"]]
    check = kb_check(c.config, "notes", [corpus / "alpha.txt", corpus / "beta.md"])
    assert (check["records"], check["lost_docs"], check["duplicate_docs"]) == (2, 0, 0), check


def test_two_jobs_for_one_knowledge_base_never_write_at_once_and_one_for_another_runs_beside(cluster, tmp_path):
    """The first job of "shared" is held in its batch by a gated parse: the second waits for the knowledge base,
    a job for "other" (submitted by the CLI) runs to the end meanwhile; then the gate opens and all finish."""
    c, _, _ = start(cluster)
    first = submit(texts(tmp_path / "first", ["alpha.txt", "gated.txt"]), "shared", app=c.app)
    poll(lambda: statuses(first)["alpha.txt"] == "pending" and first.status()["state"] == "running")
    second = submit(texts(tmp_path / "second", ["beta.md", "delta.txt"]), "shared", app=c.app)
    texts(tmp_path / "other", ["zeta.txt"])
    submitted = subprocess.run([sys.executable, "-m", "ragopt.cli", "submit", str(tmp_path / "other"), "--kb", "other"],
                               env=c.env, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr[-2000:]
    beside = Job(submitted.stdout.split()[1], c.app)  # "job <id> submitted for knowledge base other"
    assert poll(lambda: beside.done() and beside.status())["state"] == "done"
    assert statuses(beside) == {"zeta.txt": "ok"}  # the other knowledge base did not wait for "shared"
    assert first.status()["state"] == "running" and not second.status()["batches"]  # "shared" has one writer
    c.open_gate()
    for job in (first, second):
        assert poll(lambda: job.done() and job.status())["state"] == "done"
        assert set(statuses(job).values()) == {"ok"}, job.status()
    [a], [b] = (job.status()["batches"] for job in (first, second))
    assert a["ended"] <= b["started"], (a, b)  # one writer at a time
    assert b["token"] > a["token"]  # each tenure its own fencing token


def test_a_writer_killed_mid_job_frees_its_knowledge_base_after_the_lease_and_a_new_job_resumes_it(cluster, tmp_path):
    c, parser, writer = start(cluster)
    files = texts(tmp_path / "corpus", ["alpha.txt", "beta.md", "delta.txt", "gated.txt"])
    killed = submit(files, "notes", app=c.app, batch_size=2)
    second_batch_in_flight(killed, parser)
    writer.kill()  # kill -9 of the whole writer, mid-batch, holding its lease
    c.open_gate()
    c.worker("ingest", concurrency=4)
    resumed = submit(files, "notes", app=c.app, batch_size=4)
    final = poll(lambda: resumed.done() and resumed.status())
    assert final["state"] == "done", final
    assert {r["file"]: (r["status"], r["stage"]) for r in final["files"]} == {
        "alpha.txt": ("skipped", "resume"), "beta.md": ("skipped", "resume"), "delta.txt": ("ok", None),
        "gated.txt": ("ok", None)}
    assert [batch["token"] for batch in final["batches"]] == [3]  # the dead writer had tokens 1 and 2
    assert killed.status()["state"] == "running"  # its batch is Redis's to deliver again, after the visibility timeout
    check = kb_check(c.config, "notes", files)
    assert (check["records"], check["lost_docs"], check["duplicate_docs"]) == (4, 0, 0), check


def test_redis_restarted_mid_batch_loses_and_duplicates_nothing(cluster, redis_server, tmp_path):
    c, parser, _ = start(cluster)
    files = texts(tmp_path / "corpus", ["alpha.txt", "beta.md", "delta.txt", "gated.txt"])
    job = submit(files, "notes", app=c.app, batch_size=2)
    second_batch_in_flight(job, parser)
    redis_server.restart()
    restarted = job.store.now()
    c.open_gate()
    final = status_when(job, lambda s: "pending" not in s.values())
    assert poll(lambda: job.done() and job.status())["state"] == "done", final
    assert set(statuses(job).values()) == {"ok"}, job.status()["files"]
    first, second = job.status()["batches"]
    assert (first["token"], second["token"]) == (1, 2)  # the second batch kept its lease through the restart ...
    assert second["last_check"] > restarted  # ... and confirmed it again before it wrote
    check = kb_check(c.config, "notes", files)
    assert (check["records"], check["lost_docs"], check["duplicate_docs"]) == (4, 0, 0), check
