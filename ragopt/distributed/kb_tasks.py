"""The tasks that use a knowledge base: a batch of an ingest job, and a query.

Both run in a worker's threads pool and hand their work to the process's
``KnowledgeBaseHost``. A batch whose knowledge base is busy waits by being
replaced with itself after a second or so (the chain of the job's later
batches goes with it); a query whose knowledge base another process holds is
forwarded to that process's own queue (Celery's worker_direct), since only
the writer can answer it.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any, Dict

from celery import Task

from ragopt.distributed.app import batch_task_limit_s


log = logging.getLogger("ragopt.distributed")
_host = None
_host_lock = threading.Lock()


def host_for(task: Any):
    """This worker process's knowledge-base host, made on first use."""
    global _host
    with _host_lock:
        if _host is None:
            from ragopt.distributed.host import KnowledgeBaseHost

            _host = KnowledgeBaseHost(task.app, task.request.hostname)
        return _host


class BatchTask(Task):
    """A batch task that fails for good (not retried, or out of retries) fails its job and the job's pending files."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        from ragopt.cache.redis_store import redis_client
        from ragopt.distributed.job_store import JobStore

        job_id = args[0]
        store = JobStore(redis_client(self.app.conf.broker_url))
        error = f"the job failed in batch {args[1]}: {type(exc).__name__}: {exc}"
        left = {i: {**row, "status": "failed", "stage": "job", "error": error}
                for i, row in enumerate(store.files(job_id)) if row["status"] == "pending"}
        store.update_files(job_id, left)
        store.set(job_id, state="failed", error=error, finished=store.now())
        log.error("job %s: %s", job_id, error)


def ingest_batch(task: Any, job_id: str, index: int) -> Dict[str, Any]:
    from ragopt.distributed.host import KnowledgeBaseBusy

    host = host_for(task)
    limit_s = batch_task_limit_s(host.jobs.job(job_id)["batch_timeout_s"])
    try:
        return host.run(host.ingest_batch(job_id, index), limit_s, f"batch {index} of job {job_id}")
    except KnowledgeBaseBusy:
        return task.replace(task.si(job_id, index).set(countdown=random.uniform(0.5, 1.5)))


def answer_query(task: Any, kb: str, question: str, mode: str = "mix") -> str:
    from celery.utils.nodenames import worker_direct

    from ragopt.distributed.host import KnowledgeBaseBusy

    config = task.app.ragopt_config
    host = host_for(task)
    try:
        return host.run(host.answer(kb, question, mode), config.query_time_limit_s, f"query on {kb}")
    except KnowledgeBaseBusy as busy:
        # A lease left by this node's previous process: wait for it to run out rather than bounce at once.
        wait = config.writer_lease_s / 3 if busy.node == task.request.hostname else None
        forward = {"queue": worker_direct(busy.node)} if busy.node else {"countdown": 0.5}  # released meanwhile: again
        return task.replace(task.si(kb, question, mode).set(countdown=wait, **forward))
