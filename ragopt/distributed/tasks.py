"""ragopt's tasks registered on an app, with Celery's own limits and retries.

Transient errors only (a lost broker or Redis connection, a timeout, a lost
writer lease) are retried, with exponential backoff and jitter, at most
``RETRIES`` times; a file that is simply bad fails once, with its own error.
Parse tasks have Celery's soft and hard time limits (RAGOPT_PARSE_SOFT_TIME_LIMIT,
RAGOPT_PARSE_TIME_LIMIT); batch and query tasks run in a threads pool, which
cannot interrupt a thread, so their limits act on the knowledge-base host's
loop (BATCH_TIMEOUT inside the engine, RAGOPT_QUERY_TIME_LIMIT).
"""

from __future__ import annotations

from typing import Any

from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ragopt.config import RagoptConfig
from ragopt.distributed.app import RETRIES, retry_backoff_max_s
from ragopt.distributed.kb_tasks import BatchTask, answer_query, ingest_batch
from ragopt.distributed.lock import LeaseLost
from ragopt.distributed.parse_task import parse_file

TRANSIENT = (ConnectionError, TimeoutError, RedisConnectionError, RedisTimeoutError, OperationalError)


def register_tasks(app: Any, config: RagoptConfig) -> None:
    # shared=False: each app gets its own task objects (with its own limits), not the first app's
    retried = dict(retry_backoff=True, retry_backoff_max=retry_backoff_max_s(config), retry_jitter=True,
                   max_retries=RETRIES, autoretry_for=TRANSIENT, shared=False)
    app.task(name="ragopt.parse", bind=True, soft_time_limit=config.parse_soft_time_limit_s,
             time_limit=config.parse_time_limit_s, **retried)(parse_file)
    app.task(name="ragopt.ingest_batch", bind=True, base=BatchTask,
             **{**retried, "autoretry_for": TRANSIENT + (LeaseLost,)})(ingest_batch)
    app.task(name="ragopt.query", bind=True, **retried)(answer_query)
