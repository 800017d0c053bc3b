"""The parse task: one file, in any worker, with the rag's parser, through the shared parse cache.

It gets JSON only: the ``ParserSpec`` fields, the file's SHA-256 and the
caller's path (for its name and for messages), and the settings of the Redis
parse cache. The bytes come from Redis by hash (``transfer``); the result goes
into the cache, from which the caller reads it, so the reply is small.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Dict

from ragopt.cache.content_cache import ContentCache, content_key
from ragopt.cache.redis_store import redis_client
from ragopt.distributed.transfer import FileTransfer
from ragopt.engine.parse_pool import ParserSpec, parse_through_cache


class ParseTimeLimitError(RuntimeError):
    """A parse that passed its time limit (one file fails; the batch goes on)."""


def spec_to_json(spec: ParserSpec) -> Dict[str, Any]:
    return dataclasses.asdict(spec)


def spec_from_json(data: Dict[str, Any]) -> ParserSpec:
    return ParserSpec(**{**data, "options": tuple(tuple(pair) for pair in data.get("options", ()))})


def transfer_for(app: Any) -> FileTransfer:
    """File bytes travel through the broker's Redis, which every worker reaches."""
    config = app.ragopt_config
    return FileTransfer(redis_client(app.conf.broker_url), config.transfer_max_mb, config.transfer_ttl_hours)


def parse_file(task: Any, spec: Dict[str, Any], digest: str, path: str, cache: Dict[str, Any]) -> Dict[str, Any]:
    """Parse the file whose bytes are stored under ``digest``; returns its cache key, hit, seconds and cache stats."""
    from celery.exceptions import SoftTimeLimitExceeded

    parser = spec_from_json(spec)
    with tempfile.TemporaryDirectory(prefix="ragopt-parse-") as folder:
        store = ContentCache(**cache, image_dir=Path(folder) / "hit")  # a hit's images are the caller's to write
        local = Path(folder) / "in" / Path(path).name  # the parser dispatches on the suffix
        transfer_for(task.app).download(digest, local, path)
        try:
            _, hit, seconds, stats = parse_through_cache(str(local), digest, str(Path(folder) / "out"), store, parser)
        except SoftTimeLimitExceeded:
            limit = task.app.ragopt_config.parse_soft_time_limit_s
            raise ParseTimeLimitError(f"{path}: parsing passed RAGOPT_PARSE_SOFT_TIME_LIMIT={limit:g} s") from None
        except Exception as error:  # name the caller's file, not this worker's copy
            error.args = tuple(a.replace(str(local), path) if isinstance(a, str) else a for a in error.args)
            raise
    key = content_key(path, parser.name, parser.version, digest, **parser.kwargs())
    return {"key": key, "hit": hit, "seconds": seconds, "stats": stats}
