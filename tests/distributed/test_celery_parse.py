"""``ingest(rag, paths, executor=CeleryParseExecutor(app))``: the parse stage on real Celery workers.

- the same per-file results and the same graph as the local pool, a corrupt
  file's error once (never retried), a file over the transfer limit its own;
- a parse past the soft time limit fails its file alone;
- ``kill -9`` of the worker's child mid-parse, or of the whole worker (a new
  worker takes the task after the short visibility timeout): the file is parsed
  again and every document is ingested exactly once.
"""

import asyncio
import os
import shutil
import signal

import pytest

from ragopt.aio import run_sync
from ragopt.config import RagoptConfig
from ragopt.distributed.executor import CeleryParseExecutor
from ragopt.engine.build import build_rag
from ragopt.engine.orchestrator import aingest, ingest
from ragopt.engine.release import release_rag
from ragopt.measure.graphs import compare_graphs, graph_signature
from ragopt.measure.integrity import inspect_knowledge_base
from ragopt.measure.workloads import synthetic_corpus

from celery_cluster import TaskEvents, poll
from corpora import ALPHA, BETA, write_bad_files
from gated_parser import SPEC

FAST = RagoptConfig(sim_preset="fast")
COLUMNS = ["status", "stage", "error_type", "error"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def embedding_model():
    from ragopt.backends.embedding import preload

    preload(None)


def rows(result, names=None):
    frame = result.files.assign(name=result.files.file.map(lambda f: os.path.basename(f))).set_index("name")
    frame = frame[COLUMNS].astype(object).where(frame[COLUMNS].notna(), None)
    return frame.loc[sorted(names or frame.index)].to_dict("index")


def write_texts(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    texts = {"alpha.txt": ALPHA, "beta.md": BETA}
    for name in names:
        (folder / name).write_text(texts.get(name, f"# {name}\n\n{ALPHA}"), encoding="utf-8")
    return [folder / name for name in names]


def test_celery_parse_workers_ingest_as_the_local_pool_does(cluster, tmp_path):
    corpus = tmp_path / "corpus"
    files = write_texts(corpus, "alpha.txt", "beta.md")
    files.append(synthetic_corpus(tmp_path / "synthetic", 7, paragraphs_per_doc=1)[-1])  # a DOCX with an image
    write_bad_files(corpus)
    files += [corpus / "corrupt.pdf", corpus / "empty.txt"]
    big = corpus / "big.txt"
    big.write_text("x" * (1024 * 1024 + 1))  # over the cluster's RAGOPT_TRANSFER_MAX_MB=1
    working = tmp_path / "w"  # both runs in the same path: image paths are part of the chunk text

    rag = build_rag(FAST, working, optimized=True)
    try:
        local = ingest(rag, files, config=FAST, progress=False)
    finally:
        release_rag(rag)
    local_graph = graph_signature(working)
    shutil.rmtree(working)

    c = cluster()
    c.worker("parse", concurrency=2)
    events = TaskEvents(c.app)
    rag = build_rag(FAST, working, optimized=True)
    try:
        remote = ingest(rag, files + [big], config=FAST, executor=CeleryParseExecutor(c.app), progress=False)
    finally:
        release_rag(rag)
        events.close()

    names = [f.name for f in files]
    assert rows(remote, names) == rows(local, names)
    assert rows(local, ["alpha.txt", "beta.md", "note_0007.docx", "corrupt.pdf"]) == {
        **{n: {"status": "ok", "stage": None, "error_type": None, "error": None} for n in ("alpha.txt", "beta.md", "note_0007.docx")},
        "corrupt.pdf": rows(local, ["corrupt.pdf"])["corrupt.pdf"]}
    assert rows(remote, ["corrupt.pdf"])["corrupt.pdf"]["error_type"] == "CorruptDocumentError"
    too_big = rows(remote, ["big.txt"])["big.txt"]
    assert (too_big["status"], too_big["stage"], too_big["error_type"]) == ("failed", "parse", "FileTooLargeError")
    assert str(big) in too_big["error"] and "RAGOPT_TRANSFER_MAX_MB=1" in too_big["error"]
    comparison = compare_graphs(local_graph, graph_signature(working), min_entities=10)
    assert comparison["comparable"] and comparison["same"], comparison
    check = inspect_knowledge_base(FAST, working, files[:3])
    assert (check["lost_docs"], check["duplicate_docs"], check["records"]) == (0, 0, 3), check
    # The corrupt file's task ran once and failed once: a bad file is not retried.
    [corrupt_task] = events.task_ids("ragopt.parse", "corrupt.pdf")
    assert sorted(events.of_task(corrupt_task)) == ["task-failed", "task-received", "task-sent", "task-started"]


def gated_ingest(c, tmp_path, files, act):
    """Ingest ``files`` with the gated parser through Celery while ``act(events)`` runs (in a thread)."""
    rag = build_rag(FAST.replace(parser=SPEC), tmp_path / "w", optimized=True)
    events = TaskEvents(c.app)

    async def scenario():
        ingestion = asyncio.ensure_future(aingest(rag, files, config=FAST, executor=CeleryParseExecutor(c.app),
                                                  progress=False))
        acted = await asyncio.to_thread(act, events)
        return await ingestion, acted

    try:
        result, acted = run_sync(scenario())
    finally:
        release_rag(rag)
        events.close()
    return result, events, acted


def gated_task(worker):
    """The gated file's parse task once it runs in ``worker`` (Celery's inspect: its id and pool process)."""
    return poll(lambda: [t for t in worker.active() if str(t["kwargs"].get("path")).endswith("gated.txt")])[0]


def started(events, task_id):
    return [e for e in events.events if e["type"] == "task-started" and e["uuid"] == task_id]


def test_a_parse_past_its_soft_time_limit_fails_its_file_alone(cluster, tmp_path):
    c = cluster(RAGOPT_PARSE_SOFT_TIME_LIMIT="1", RAGOPT_PARSE_TIME_LIMIT="30")
    c.worker("parse", concurrency=2)
    files = write_texts(tmp_path / "corpus", "alpha.txt", "gated.txt")  # the gate never opens
    result, events, _ = gated_ingest(c, tmp_path, files, lambda events: None)
    got = rows(result)
    assert got["alpha.txt"]["status"] == "ok"
    assert (got["gated.txt"]["status"], got["gated.txt"]["error_type"]) == ("failed", "ParseTimeLimitError")
    assert "gated.txt: parsing passed RAGOPT_PARSE_SOFT_TIME_LIMIT=1 s" in got["gated.txt"]["error"]
    [task] = events.task_ids("ragopt.parse", "gated.txt")
    assert len(started(events, task)) == 1


def test_kill_9_of_a_parse_workers_child_mid_parse_loses_and_duplicates_nothing(cluster, tmp_path):
    c = cluster()
    worker = c.worker("parse", concurrency=1)
    files = write_texts(tmp_path / "corpus", "alpha.txt", "gated.txt", "beta.md")

    def kill_the_child(events):
        task = gated_task(worker)
        os.kill(task["worker_pid"], signal.SIGKILL)  # the pool process, mid-parse
        poll(lambda: len(started(events, task["id"])) == 2)  # delivered again, to a fresh pool process
        c.open_gate()
        return task

    result, events, task = gated_ingest(c, tmp_path, files, kill_the_child)
    assert result.counts() == {"ok": 3, "failed": 0, "skipped": 0}, result.files
    assert len(started(events, task["id"])) == 2 and events.of_task(task["id"]).count("task-succeeded") == 1
    with pytest.raises(ProcessLookupError):
        os.kill(task["worker_pid"], 0)  # the killed pool process is gone; the worker made another
    check = inspect_knowledge_base(FAST, tmp_path / "w", files)
    assert (check["lost_docs"], check["duplicate_docs"], check["records"]) == (0, 0, 3), check


def test_kill_9_of_a_whole_parse_worker_mid_parse_and_a_new_worker_loses_and_duplicates_nothing(cluster, tmp_path):
    # A short visibility timeout, so Redis hands the dead worker's task to the new one soon; every limit below it.
    c = cluster(RAGOPT_VISIBILITY_TIMEOUT="12", RAGOPT_PARSE_SOFT_TIME_LIMIT="8", RAGOPT_PARSE_TIME_LIMIT="10",
                BATCH_TIMEOUT="5", RAGOPT_QUERY_TIME_LIMIT="5")
    first = c.worker("parse", concurrency=1)
    files = write_texts(tmp_path / "corpus", "alpha.txt", "gated.txt", "beta.md")

    def kill_the_worker(events):
        task = gated_task(first)
        first.kill()
        c.worker("parse", concurrency=1)
        poll(lambda: len(started(events, task["id"])) == 2)  # redelivered after the visibility timeout
        c.open_gate()
        return task

    result, events, task = gated_ingest(c, tmp_path, files, kill_the_worker)
    assert result.counts() == {"ok": 3, "failed": 0, "skipped": 0}, result.files
    assert [e["hostname"] for e in started(events, task["id"])] == [first.name, c.workers[1].name]
    check = inspect_knowledge_base(FAST, tmp_path / "w", files)
    assert (check["lost_docs"], check["duplicate_docs"], check["records"]) == (0, 0, 3), check
