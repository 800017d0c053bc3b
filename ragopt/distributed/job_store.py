"""Ingest jobs in Redis: what was submitted, each file's progress, the batches and their writers.

Keys, for job ``<id>``: ``ragopt:job:<id>`` (a hash: kb, state, times, the
batches as file indexes, the writer's lease figures), ``ragopt:job:<id>:files``
(file index -> JSON row: file, digest, status, stage, error) and
``ragopt:job:<id>:batches`` (one JSON record per batch run: token, writer, start
and end on Redis's clock, which every machine shares); ``ragopt:jobs`` lists
them by submission time. A finished job's keys expire after ``KEEP_S``.

States: queued, running, cancelling, then done, failed or cancelled. File
statuses: pending, then ok, failed, skipped (already ingested, or the same
content as an earlier file) or cancelled.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

FINISHED = ("done", "failed", "cancelled")
KEEP_S = 7 * 24 * 3600
JOBS = "ragopt:jobs"


class JobStore:
    """Reads and writes job records on one Redis client."""

    def __init__(self, client):
        self.client = client

    @staticmethod
    def _keys(job_id: str) -> tuple:
        key = f"ragopt:job:{job_id}"
        return key, f"{key}:files", f"{key}:batches"

    def now(self) -> float:
        """Redis's clock: one time for every machine's records."""
        seconds, micros = self.client.time()
        return seconds + micros / 1e6

    def create(self, job_id: str, kb: str, files: List[Dict[str, Any]], batches: List[List[int]],
               batch_timeout_s: float) -> None:
        job, rows, _ = self._keys(job_id)
        created = self.now()
        pipe = self.client.pipeline()
        pipe.hset(job, mapping={"kb": kb, "state": "queued" if batches else "done", "created": created,
                                "batches": json.dumps(batches), "batch_timeout_s": batch_timeout_s,
                                "files": len(files)})
        if files:
            pipe.hset(rows, mapping={str(i): json.dumps(row) for i, row in enumerate(files)})
        pipe.zadd(JOBS, {job_id: created})
        pipe.execute()

    def job(self, job_id: str) -> Dict[str, Any]:
        raw = self.client.hgetall(self._keys(job_id)[0])
        if not raw:
            raise KeyError(f"no job {job_id!r} in Redis (finished jobs are kept {KEEP_S // 86400} days)")
        job = {k.decode(): v.decode() for k, v in raw.items()}
        job["id"] = job_id
        job["batches"] = json.loads(job["batches"])
        job["writer"] = json.loads(job.get("writer", "null"))
        for name in ("created", "started", "finished", "batch_timeout_s"):
            if name in job:
                job[name] = float(job[name])
        return job

    def files(self, job_id: str) -> List[Dict[str, Any]]:
        raw = self.client.hgetall(self._keys(job_id)[1])
        return [json.loads(raw[k]) for k in sorted(raw, key=int)]

    def update_files(self, job_id: str, rows: Dict[int, Dict[str, Any]]) -> None:
        if rows:
            self.client.hset(self._keys(job_id)[1], mapping={str(i): json.dumps(r) for i, r in rows.items()})

    def set(self, job_id: str, **fields: Any) -> None:
        values = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in fields.items()}
        self.client.hset(self._keys(job_id)[0], mapping=values)
        if fields.get("state") in FINISHED:
            for key in self._keys(job_id):
                self.client.expire(key, KEEP_S)

    def log_batch(self, job_id: str, record: Dict[str, Any]) -> None:
        self.client.rpush(self._keys(job_id)[2], json.dumps(record))

    def batch_log(self, job_id: str) -> List[Dict[str, Any]]:
        return [json.loads(r) for r in self.client.lrange(self._keys(job_id)[2], 0, -1)]

    def request_cancel(self, job_id: str) -> None:
        """Ask the job to stop: its running batch stops cleanly, the rest do not start."""
        job = self.job(job_id)
        if job["state"] not in FINISHED:
            self.set(job_id, cancel="1", state="cancelling")

    def cancel_requested(self, job_id: str) -> bool:
        return self.client.hget(self._keys(job_id)[0], "cancel") == b"1"

    def job_ids(self, limit: Optional[int] = None) -> List[str]:
        """Newest first; ids whose records have expired are dropped from the list."""
        ids = [i.decode() for i in self.client.zrevrange(JOBS, 0, -1 if limit is None else limit - 1)]
        gone = [i for i in ids if not self.client.exists(self._keys(i)[0])]
        if gone:
            self.client.zrem(JOBS, *gone)
        return [i for i in ids if i not in gone]
