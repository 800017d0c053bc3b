"""The parse stage on Celery parse workers: ``ingest(rag, paths, executor=CeleryParseExecutor())``.

Insertion stays in the caller; each file's parse goes to the ``parse`` queue
as the same work the local pool does (``parse_through_cache`` with the rag's
``ParserSpec``), its bytes by content hash, and its result through the Redis
parse cache: the ingest cache if it is on Redis, else one on the broker's Redis
whose entries expire with RAGOPT_TRANSFER_TTL_HOURS (results travel through
it even with the parse cache off). A file's error reaches its result row as the
worker raised it, with the caller's path.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from ragopt.cache.content_cache import ContentCache
from ragopt.cache.redis_store import RedisContentCache
from ragopt.distributed.parse_task import ParseTimeLimitError, spec_to_json, transfer_for
from ragopt.engine.parse_pool import ParserSpec


class ResultWaiter:
    """One thread that polls the result backend for every pending task and wakes its awaiting coroutine.

    Celery's ``AsyncResult.get`` blocks a thread per task; here a single
    ``backend.get_many`` sweep serves hundreds of files in flight.
    """

    def __init__(self, app: Any, interval_s: float = 0.005):
        self.app, self.interval_s = app, interval_s
        self._pending: Dict[str, Tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None

    async def wait(self, task_id: str) -> dict:
        """The task's result meta once it is ready (SUCCESS, FAILURE or REVOKED)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._pending[task_id] = (loop, future)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ragopt-result-waiter", daemon=True)
                self._thread.start()
        self._wake.set()
        try:
            return await future
        finally:
            with self._lock:
                self._pending.pop(task_id, None)

    def _run(self) -> None:
        from redis.exceptions import RedisError

        backend = self.app.backend  # this thread's own (Celery's backends are per thread)
        failures = 0
        while True:
            self._wake.wait()
            with self._lock:
                ids = set(self._pending)
                if not ids:
                    self._wake.clear()
                    continue
            try:
                for task_id, meta in backend.get_many(ids, interval=self.interval_s, max_iterations=1):
                    self._resolve(task_id, meta)
                failures = 0
            except (RedisError, OSError):  # Redis restarting: retry (redis-py reconnects) with a growing pause
                failures += 1
                time.sleep(min(2.0, 0.05 * 2 ** failures))

    def _resolve(self, task_id: str, meta: dict) -> None:
        with self._lock:
            pending = self._pending.get(task_id)
        if pending is not None:
            loop, future = pending
            loop.call_soon_threadsafe(lambda: future.done() or future.set_result(meta))


class CeleryParseExecutor:
    """Parse-stage executor of ``ingest`` that sends each file to the Celery ``parse`` queue.

    ``app``: a ``make_app`` app (default: one from the environment).
    ``ingest`` calls ``parse`` and ``idle``, as for ``LocalParseExecutor``.
    """

    def __init__(self, app: Any = None):
        from ragopt.distributed.app import make_app

        self.app = app or make_app()
        config = self.app.ragopt_config
        self.transfer = transfer_for(self.app)
        self.results = ContentCache(self.app.conf.broker_url, ttl_hours=config.transfer_ttl_hours)
        self.waiter = ResultWaiter(self.app)

    def _store_for(self, cache: ContentCache) -> RedisContentCache:
        return cache if isinstance(cache, RedisContentCache) else self.results

    async def parse(self, path: str, digest: Optional[str], output_dir: str, cache: ContentCache,
                    spec: ParserSpec) -> Tuple[List[dict], bool, float, Dict[str, Any]]:
        store = self._store_for(cache)
        settings = {k: v for k, v in store.__getstate__().items() if k != "image_dir"}  # a folder of this machine

        def send() -> str:
            self.transfer.upload(path, digest)
            return self.app.send_task(
                "ragopt.parse", kwargs={"spec": spec_to_json(spec), "digest": digest, "path": str(path), "cache": settings},
            ).id

        task_id = await asyncio.to_thread(send)
        meta = await self.waiter.wait(task_id)
        if meta["status"] != "SUCCESS":
            raise _file_error(path, meta)
        reply = meta["result"]

        def collect() -> Optional[List[dict]]:
            content = store.fetch(reply["key"], output_dir)
            self.app.AsyncResult(task_id).forget()  # read: the result need not wait for result_expires
            return content

        content = await asyncio.to_thread(collect)
        if content is None:
            raise RuntimeError(f"{path}: parsed by a worker, but its entry left the parse cache before it was read "
                               "(CACHE_SIZE_LIMIT too small for the files in flight?)")
        return content, reply["hit"], reply["seconds"], reply["stats"]

    def idle(self) -> None:
        """Nothing to release: the parse workers are shared and stay up."""


def _file_error(path: str, meta: dict) -> BaseException:
    """The exception for a failed parse task, as clear as the worker's own."""
    error = meta["result"]
    name = type(error).__name__
    if name == "TimeLimitExceeded":  # the hard limit: the worker's process was killed
        return ParseTimeLimitError(f"{path}: the parse worker was stopped at its hard time limit "
                                   f"(RAGOPT_PARSE_TIME_LIMIT) after {error}")
    if meta["status"] == "REVOKED":
        return RuntimeError(f"{path}: its parse task was revoked")
    return error if isinstance(error, BaseException) else RuntimeError(f"{path}: {error}")

