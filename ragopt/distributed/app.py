"""The Celery app, configured from ``RagoptConfig`` (the environment).

JSON is the only serializer (a task message is never unpickled); three
queues, each task routed to its own: ``parse`` (parse tasks, any number of
workers on any machines), ``ingest`` (batches of an ingest job, on the
writer of a knowledge base) and ``query``. Tasks are acknowledged late and
rejected back to the queue when their worker dies
(``task_acks_late``, ``task_reject_on_worker_lost``), one at a time per
process (``worker_prefetch_multiplier=1``).

Redis delivers a task again once it has been unacknowledged for
``visibility_timeout``, even while it still runs, so every task is bounded in
time below it, and ``check_bounds`` refuses a configuration where one is not.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from ragopt.config import ConfigError, RagoptConfig, mask_password

log = logging.getLogger("ragopt.distributed")

QUEUES = ("parse", "ingest", "query")
ROUTES = {
    "ragopt.parse": {"queue": "parse"},
    "ragopt.ingest_batch": {"queue": "ingest"},
    "ragopt.query": {"queue": "query"},
}
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
JOB_BATCH_SIZE = 20  # documents per job batch when BATCH_SIZE is unset (the guide's value)
JOB_BATCH_TIMEOUT_S = 600.0  # seconds per job batch when BATCH_TIMEOUT is unset (the guide's value)
RETRIES = 3  # attempts after the first for a transient error


@dataclass(frozen=True)
class Endpoints:
    broker: str
    backend: str
    redis_uri: Optional[str]
    """What LightRAG's Redis storages should read as REDIS_URI (None: leave it as it is)."""
    notes: Tuple[str, ...]


def endpoints(config: RagoptConfig, environ: Mapping[str, str] = os.environ) -> Endpoints:
    """Broker and result backend from REDIS_URL / CELERY_BROKER_URL / CELERY_RESULT_BACKEND (and REDIS_URI).

    When only one of a pair is set it serves for both, and a note says so.
    """
    notes = []
    redis_uri = environ.get("REDIS_URI") or None
    redis = config.redis_url or redis_uri
    if config.redis_url and not redis_uri:
        notes.append("REDIS_URI (LightRAG's Redis storages) is unset: it is set to REDIS_URL")
    elif redis_uri and not config.redis_url and not (config.celery_broker_url and config.celery_result_backend):
        notes.append("REDIS_URL is unset: using REDIS_URI (LightRAG's) for Celery")
    broker = config.celery_broker_url or redis
    backend = config.celery_result_backend or redis
    if broker and not backend:
        backend = broker
        notes.append("CELERY_RESULT_BACKEND is unset: results go to the broker")
    elif backend and not broker:
        broker = backend
        notes.append("CELERY_BROKER_URL is unset: the result backend is the broker too")
    elif not broker:
        broker = backend = DEFAULT_REDIS
        notes.append(f"REDIS_URL is unset: using {DEFAULT_REDIS}")
    for name, url in (("broker", broker), ("result backend", backend)):
        if not url.startswith(("redis://", "rediss://")):
            raise ConfigError(f"the Celery {name} must be Redis (redis:// or rediss://), not {mask_password(url)}")
    return Endpoints(broker, backend, config.redis_url if config.redis_url and not redis_uri else None, tuple(notes))


def job_batch_timeout_s(config: RagoptConfig) -> float:
    return config.batch_timeout_s or JOB_BATCH_TIMEOUT_S


def batch_task_limit_s(batch_timeout_s: float) -> float:
    """A batch task's limit: its documents fail at BATCH_TIMEOUT (the engine's limit), and its set-up and
    tear-down (fetching files, opening and closing the knowledge base) get as long again."""
    return 2 * batch_timeout_s


def task_bounds(config: RagoptConfig) -> Dict[str, float]:
    """The longest each task may run, in seconds."""
    return {
        "ragopt.parse": config.parse_time_limit_s,
        "ragopt.ingest_batch": batch_task_limit_s(job_batch_timeout_s(config)),
        "ragopt.query": config.query_time_limit_s,
    }


def retry_backoff_max_s(config: RagoptConfig) -> int:
    """Longest wait between retries: a waiting retry is held unacknowledged, so well inside visibility_timeout."""
    return max(1, int(min(60.0, config.visibility_timeout_s / 4)))


def check_bounds(config: RagoptConfig) -> None:
    """``ConfigError`` unless visibility_timeout exceeds every task's limit and the soft limit is below the hard one."""
    if config.parse_soft_time_limit_s >= config.parse_time_limit_s:
        raise ConfigError(f"RAGOPT_PARSE_SOFT_TIME_LIMIT={config.parse_soft_time_limit_s:g} must be below "
                          f"RAGOPT_PARSE_TIME_LIMIT={config.parse_time_limit_s:g}")
    task, longest = max(task_bounds(config).items(), key=lambda item: item[1])
    if config.visibility_timeout_s <= longest:
        raise ConfigError(
            f"RAGOPT_VISIBILITY_TIMEOUT={config.visibility_timeout_s:g} s must exceed the longest task limit, "
            f"{task}'s {longest:g} s: Redis would deliver a task again while it still runs. Raise it, or lower "
            "RAGOPT_PARSE_TIME_LIMIT, BATCH_TIMEOUT (a batch task may take twice that) or RAGOPT_QUERY_TIME_LIMIT"
        )


def celery_settings(config: RagoptConfig, environ: Mapping[str, str] = os.environ) -> Dict[str, Any]:
    """The Celery configuration ``make_app`` applies (no connection is made)."""
    from kombu import Queue

    where = endpoints(config, environ)
    visibility = config.visibility_timeout_s
    transport = {
        "visibility_timeout": visibility,
        # Sweep for unacknowledged tasks of dead workers often enough for short visibility timeouts.
        "unacked_restore_interval": max(1, min(10, int(visibility / 10))),
        "unacked_restore_throttle": 1,
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "health_check_interval": 10,
    }
    return {
        "broker_url": where.broker,
        "result_backend": where.backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_queues": [Queue(name) for name in QUEUES],
        "task_routes": dict(ROUTES),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": transport,
        # Keep going through a Redis restart: reconnect, publish and store results again.
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_publish_retry_policy": {"max_retries": 20, "interval_start": 0.1, "interval_step": 0.5, "interval_max": 2},
        "result_backend_always_retry": True,
        "result_backend_max_retries": 40,
        "redis_backend_health_check_interval": 10,
        # Running tasks carry on through a lost connection; a task whose ack is lost runs again, and every task is idempotent.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_max_memory_per_child": config.worker_max_memory_mb * 1024 if config.worker_max_memory_mb else None,
        "worker_send_task_events": True,  # Flower and `celery events` see every task
        "task_send_sent_event": True,
        "worker_direct": True,  # each worker has its own queue: queries go to a knowledge base's writer
        "result_extended": True,
        "result_expires": int(config.transfer_ttl_hours * 3600),
    }


def make_app(config: Optional[RagoptConfig] = None, environ: Mapping[str, str] = os.environ):
    """A Celery app for ragopt's tasks on ``config`` (default ``RagoptConfig.from_env()``).

    Refuses task limits that Redis's visibility timeout does not cover;
    exports REDIS_URI for LightRAG when only REDIS_URL is set; logs each
    choice it made for an unset variable.
    """
    from celery import Celery

    from ragopt.distributed.tasks import register_tasks

    config = config or RagoptConfig.from_env()
    check_bounds(config)
    where = endpoints(config, environ)
    for note in where.notes:
        log.info("ragopt.distributed: %s", note)
    if where.redis_uri and environ is os.environ:
        os.environ["REDIS_URI"] = where.redis_uri
    app = Celery("ragopt", set_as_current=False)
    app.conf.update(celery_settings(config, environ))
    app.ragopt_config = config
    register_tasks(app, config)
    return app
