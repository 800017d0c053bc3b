"""The caller's side of jobs and queries: ``submit``, the ``Job`` handle, ``jobs``, and ``query``.

``submit(corpus, kb)`` uploads each file's bytes by content hash, records the
job in Redis and sends it as a Celery chain of batch tasks of BATCH_SIZE
documents (default 20), each bounded by BATCH_TIMEOUT (default 600 s), to the
``ingest`` queue. ``Job.status()`` reads each file's progress from Redis while
the job runs; ``Job.cancel()`` stops the running batch cleanly (what it
finished stays ingested) and the rest from starting.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from ragopt.cache.content_cache import file_sha256
from ragopt.cache.redis_store import redis_client
from ragopt.config import RagoptConfig
from ragopt.distributed.app import JOB_BATCH_SIZE, check_bounds, job_batch_timeout_s, make_app
from ragopt.distributed.factory import check_kb_name
from ragopt.distributed.job_store import FINISHED, JobStore
from ragopt.distributed.parse_task import transfer_for
from ragopt.distributed.transfer import FileTooLargeError

MODES = ("local", "global", "hybrid", "mix", "naive")


def _named_files(corpus: str | Path | Iterable[str | Path]) -> List[tuple]:
    """(path, name the job stores it under): relative to a corpus folder, else the file name."""
    from ragopt.measure.workloads import corpus_files

    if isinstance(corpus, (str, Path)) and Path(corpus).is_dir():
        return [(p, p.relative_to(corpus).as_posix()) for p in corpus_files(corpus)]
    paths = [Path(p) for p in ([corpus] if isinstance(corpus, (str, Path)) else corpus)]
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        raise ValueError("two files of the list have the same name: submit their folder instead")
    return list(zip(paths, names))


class Job:
    """A submitted ingest job; every method reads Redis, so any process can follow or cancel it."""

    def __init__(self, job_id: str, app: Any):
        self.id, self.app = job_id, app
        self.store = JobStore(redis_client(app.conf.broker_url))

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> Dict[str, Any]:
        """The job's state and counts, each file's row (status, stage, error) and its batches' writers."""
        job = self.store.job(self.id)
        files = self.store.files(self.id)
        counts = {s: 0 for s in ("pending", "ok", "skipped", "failed", "cancelled")}
        for row in files:
            counts[row["status"]] += 1
        return {
            "job": self.id, "kb": job["kb"], "state": job["state"], "error": job.get("error"),
            "counts": {**counts, "done": counts["ok"] + counts["skipped"], "total": len(files)},
            "files": [{k: row.get(k) for k in ("file", "status", "stage", "error")} for row in files],
            "writer": job["writer"], "batches": self.store.batch_log(self.id),
        }

    def files(self):
        """``status()["files"]`` as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.status()["files"], columns=["file", "status", "stage", "error"])

    def done(self) -> bool:
        return self.store.job(self.id)["state"] in FINISHED

    def wait(self, timeout_s: Optional[float] = None, poll_s: float = 0.5) -> Dict[str, Any]:
        """Block until the job has finished (or ``timeout_s`` passed: ``TimeoutError``); returns ``status()``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.done():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still {self.store.job(self.id)['state']} after {timeout_s:g} s")
            time.sleep(poll_s)
        return self.status()

    def cancel(self) -> None:
        self.store.request_cancel(self.id)


def submit(corpus: str | Path | Iterable[str | Path], kb: str, *, config: Optional[RagoptConfig] = None,
           app: Any = None, batch_size: Optional[int] = None, batch_timeout_s: Optional[float] = None) -> Job:
    """Ingest ``corpus`` (a folder, or a list of files) into knowledge base ``kb`` on the workers; returns its ``Job``.

    A file over RAGOPT_TRANSFER_MAX_MB fails at once with its own error; the
    others go in batches of ``batch_size`` (BATCH_SIZE, default 20), each
    allowed ``batch_timeout_s`` (BATCH_TIMEOUT, default 600 s).
    """
    app = app or make_app(config)
    config = app.ragopt_config
    check_kb_name(kb)
    timeout_s = batch_timeout_s or job_batch_timeout_s(config)
    check_bounds(config.replace(batch_timeout_s=timeout_s))  # this job's batches, too, inside the visibility timeout
    transfer = transfer_for(app)
    rows: List[Dict[str, Any]] = []
    for path, name in _named_files(corpus):
        digest = file_sha256(path)
        row = {"file": name, "digest": digest, "status": "pending", "stage": None, "error": None}
        try:
            transfer.upload(path, digest)
        except FileTooLargeError as error:
            row.update(status="failed", stage="transfer", error=str(error))
        rows.append(row)
    size = batch_size or config.batch_size or JOB_BATCH_SIZE
    pending = [i for i, row in enumerate(rows) if row["status"] == "pending"]
    batches = [pending[i:i + size] for i in range(0, len(pending), size)]
    job = Job(uuid.uuid4().hex, app)
    job.store.create(job.id, kb, rows, batches, timeout_s)
    if batches:
        from celery import chain

        chain(*(app.signature("ragopt.ingest_batch", args=(job.id, i), immutable=True) for i in range(len(batches)))).apply_async()
    return job


def jobs(config: Optional[RagoptConfig] = None, app: Any = None, limit: Optional[int] = 50) -> List[Dict[str, Any]]:
    """The newest jobs first: id, kb, state, file counts."""
    app = app or make_app(config)
    listed = []
    for job_id in JobStore(redis_client(app.conf.broker_url)).job_ids(limit):
        status = Job(job_id, app).status()
        listed.append({"job": job_id, "kb": status["kb"], "state": status["state"], **status["counts"]})
    return listed


def query(kb: str, question: str, mode: str = "mix", *, config: Optional[RagoptConfig] = None, app: Any = None):
    """Ask knowledge base ``kb`` (``aquery`` in mode local, global, hybrid, mix or naive); returns Celery's
    ``AsyncResult`` (``.get(timeout=...)`` is the answer). Answered by the process that writes ``kb``, also
    while it ingests."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
    app = app or make_app(config)
    return app.send_task("ragopt.query", args=(check_kb_name(kb), question, mode))
