"""Scale-out on Celery + Redis: a parse farm on any machines, one writer per knowledge base, queued jobs and queries.

- ``make_app(config)``: the Celery app (``ragopt.distributed.app``); ``ragopt worker --queues ...`` runs one.
- ``CeleryParseExecutor``: ``ingest(rag, paths, executor=CeleryParseExecutor())`` parses on the workers.
- ``submit(corpus, kb)`` -> ``Job`` (``status()``, ``wait()``, ``cancel()``); ``jobs()``; ``query(kb, question)``.

The names load on first use, so importing this package costs nothing.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "make_app": "ragopt.distributed.app",
    "CeleryParseExecutor": "ragopt.distributed.executor",
    "submit": "ragopt.distributed.client",
    "Job": "ragopt.distributed.client",
    "jobs": "ragopt.distributed.client",
    "query": "ragopt.distributed.client",
    "run_worker": "ragopt.distributed.worker",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ragopt.distributed' has no attribute {name!r}")
    return getattr(import_module(module), name)
