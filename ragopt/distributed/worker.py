"""``ragopt worker --queues parse|ingest|query``: a Celery worker with the right pool for its queues.

Parse workers run the prefork pool, one process per core (or WORKER_POOL_SIZE;
GPU parsers: one per GPU), where Celery's soft and hard time limits and
RAGOPT_WORKER_MAX_MEMORY_MB act. Ingest and query workers run the threads
pool, so that one process holds a knowledge base and answers its queries
while it ingests; an ingest worker consumes ``query`` too. Every worker also
consumes its own queue (worker_direct) and sends task events.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

from ragopt.config import ConfigError, RagoptConfig
from ragopt.distributed import kombu_fix
from ragopt.distributed.app import QUEUES
from ragopt.distributed.factory import load_factory

KB_THREADS = 8  # batches and queries one ingest/query worker runs at once


def worker_argv(queues: Sequence[str], config: RagoptConfig, concurrency: Optional[int] = None,
                name: Optional[str] = None, loglevel: str = "INFO") -> List[str]:
    """The ``celery worker`` arguments for ``queues``."""
    chosen = [q for q in QUEUES if q in set(queues)]
    unknown = set(queues) - set(QUEUES)
    if unknown or not chosen:
        raise ConfigError(f"--queues takes {', '.join(QUEUES)}; got {', '.join(sorted(queues)) or 'none'}")
    if "parse" in chosen and len(chosen) > 1:
        raise ConfigError("parse workers run the prefork pool and ingest/query workers the threads pool: "
                          "start them as separate workers")
    if chosen == ["parse"]:
        from ragopt.engine.parse_pool import OFFLINE, pool_size

        pool, concurrency = "prefork", concurrency or pool_size(OFFLINE, config.worker_pool_size)
    else:
        if "ingest" in chosen and "query" not in chosen:
            chosen.append("query")  # a knowledge base's writer answers its queries
        pool, concurrency = "threads", concurrency or KB_THREADS
    return ["worker", "--queues", ",".join(chosen), "--pool", pool, "--concurrency", str(concurrency),
            "--hostname", name or f"ragopt-{chosen[0]}@%h", "--loglevel", loglevel, "--task-events",
            "--without-gossip", "--without-mingle"]


def run_worker(queues: Sequence[str], config: Optional[RagoptConfig] = None, concurrency: Optional[int] = None,
               name: Optional[str] = None, loglevel: str = "INFO") -> None:
    """Start a worker in this process (it runs until stopped); the app's checks run first."""
    from ragopt.distributed.app import make_app

    config = config or RagoptConfig.from_env()
    argv = worker_argv(queues, config, concurrency, name, loglevel)
    app = make_app(config)
    kombu_fix.apply()
    if "parse" not in queues:
        factory = load_factory(config.rag_factory)  # a bad RAGOPT_RAG_FACTORY fails now, not in the first batch
        if hasattr(factory, "warm_up"):
            factory.warm_up(config)  # e.g. the embedding model loads while the worker starts
    app.worker_main(argv)

