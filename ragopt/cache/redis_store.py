"""Parse-cache entries in Redis: a joblib store backend of JSON and raw bytes, never pickles.

``ContentCache("redis://host:6379/0")`` (or ``CACHE_STORAGE=redis://...``) is a
``RedisContentCache``: the same keys, bounds and counters as the folder cache,
in a Redis that every machine reaches, so a file parsed by a worker anywhere is
a hit everywhere.

A shared cache is a trust boundary: whoever can write to that Redis can write
an entry. So an entry is one Redis hash whose ``item`` field is JSON (the
content list, its image names, parse seconds, when it was stored) and whose
``blob:N`` fields are the images' raw bytes. Nothing read from Redis is
unpickled or imported, and an entry that is not JSON of exactly that shape, or
whose content list names a file that is not one of its own images, is refused:
removed, counted in ``corrupt_entries_recovered``, and the file parsed again.

Images are written out as plain files where the reader asks (``fetch(key,
output_dir)`` puts ``images/<name>`` under ``output_dir``, where a local parse
would have put it) or under ``image_dir/<key>/``. ``ttl_hours`` is also a Redis
expiry on each entry, so Redis frees what nobody reads.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from joblib._store_backends import CacheItemInfo, CacheWarning, StoreBackendBase

from ragopt.cache.content_cache import (
    ENTRY_FORMAT,
    IMAGE_FIELDS,
    ContentCache,
    _create_private_dir,
    default_location,
)

PREFIX = "ragopt:{parse-cache}"  # one hash tag: the scripts touch several keys, which a cluster needs in one slot
_SAFE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")

_clients: Dict[str, Any] = {}


def redis_client(url: str):
    """One redis-py client (and connection pool) per URL in this process."""
    client = _clients.get(url)
    if client is None:
        import redis

        client = _clients[url] = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30,
                                                      health_check_interval=10)
    return client


class UnsafeCacheEntry(ValueError):
    """A stored entry that is not the JSON-and-bytes shape ragopt writes; it is refused, never run."""


# put: replace the entry and its index records, keeping the byte total exact.
_PUT = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then redis.call('DECRBY', KEYS[4], old) end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if tonumber(ARGV[4]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('INCRBY', KEYS[4], ARGV[2])
"""
_REMOVE = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then redis.call('DECRBY', KEYS[4], old) end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('DEL', KEYS[1])
"""


class RedisStoreBackend(StoreBackendBase):
    """A joblib store backend (``StoreBackendBase``) on Redis that stores JSON items and raw blobs only.

    joblib's file-like item API, the path by which its other backends
    unpickle, is refused here. Not registered with ``joblib.Memory``, whose
    results are arbitrary Python objects: it backs ``RedisContentCache``.
    """

    def configure(self, location: str, verbose: int = 0, backend_options: Optional[dict] = None) -> None:
        options = backend_options or {}
        self.location = location
        self.verbose = verbose
        self.ttl_s = options.get("ttl_s")
        self.client = redis_client(location)
        self._put = self.client.register_script(_PUT)
        self._remove = self.client.register_script(_REMOVE)

    # Keys: one hash per entry, an LRU index, each entry's size, the byte total.
    def _entry(self, key: str) -> str:
        return f"{PREFIX}:entry:{key}"

    def _index_keys(self, key: str) -> List[str]:
        return [self._entry(key), f"{PREFIX}:sizes", f"{PREFIX}:lru", f"{PREFIX}:bytes"]

    @staticmethod
    def _key(call_id: Any) -> str:
        return call_id if isinstance(call_id, str) else "/".join(call_id)

    # -- joblib's abstract API --------------------------------------------

    def _open_item(self, f, mode):
        raise UnsafeCacheEntry("Redis entries are JSON and bytes; they are never opened as files to unpickle")

    def _item_exists(self, location: str) -> bool:
        return bool(self.client.exists(self._entry(self._key(location))))

    def _move_item(self, src: str, dst: str) -> None:
        raise UnsafeCacheEntry("Redis entries are written whole by dump_item, never moved into place")

    def create_location(self, location: str) -> None:
        """Keys need no folders."""

    def clear_location(self, location: str) -> None:
        key = self._key(location)
        self._remove(keys=self._index_keys(key), args=[key])

    def get_items(self) -> List[CacheItemInfo]:
        """Every indexed entry as (key, bytes, last access); includes any Redis expired but not yet pruned."""
        pairs = self.client.zrange(f"{PREFIX}:lru", 0, -1, withscores=True)
        if not pairs:
            return []
        keys = [k.decode() for k, _ in pairs]
        sizes = self.client.hmget(f"{PREFIX}:sizes", keys)
        return [CacheItemInfo(key, int(size or 0), datetime.fromtimestamp(score))
                for key, (_, score), size in zip(keys, pairs, sizes)]

    # -- items ---------------------------------------------------------------

    def dump_item(self, call_id: Any, item: Any, verbose: int = 1, blobs: Optional[Mapping[str, bytes]] = None) -> None:
        """Store ``item`` as JSON (it must be JSON-serializable) and ``blobs`` (name -> bytes) as raw bytes."""
        key = self._key(call_id)
        text = json.dumps(item, ensure_ascii=False, allow_nan=False)
        fields: List[Any] = ["item", text]
        for name, data in (blobs or {}).items():
            fields += [f"blob:{name}", bytes(data)]
        size = len(text.encode()) + sum(len(d) for d in (blobs or {}).values())
        ttl_ms = int(self.ttl_s * 1000) if self.ttl_s else 0
        self._put(keys=self._index_keys(key), args=[key, size, time.time(), ttl_ms, *fields])

    def load_item(self, call_id: Any, verbose: int = 1, timestamp: Any = None,
                  metadata: Any = None) -> Optional[Tuple[Any, Dict[str, bytes]]]:
        """(item, blobs), or None if there is no entry; ``UnsafeCacheEntry`` if ``item`` is not JSON."""
        from redis.exceptions import ResponseError

        try:
            stored = self.client.hgetall(self._entry(self._key(call_id)))
        except ResponseError:  # WRONGTYPE: something else was written under the entry's name
            raise UnsafeCacheEntry("it is not a Redis hash") from None
        if not stored:
            return None
        try:
            item = json.loads(stored.get(b"item", b"").decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise UnsafeCacheEntry("its item is not JSON (a Redis entry is never unpickled)") from None
        blobs = {k.decode()[len("blob:"):]: v for k, v in stored.items() if k.startswith(b"blob:")}
        return item, blobs

    def touch(self, call_id: Any) -> None:
        """Record a read, for least-recently-used eviction."""
        self.client.zadd(f"{PREFIX}:lru", {self._key(call_id): time.time()}, xx=True)

    def contains_item(self, call_id: Any) -> bool:
        return self._item_exists(call_id)

    def clear_item(self, call_id: Any) -> None:
        self.clear_location(call_id)

    def prune_vanished(self) -> int:
        """Drop index records of entries Redis has expired; returns how many."""
        keys = [k.decode() for k in self.client.zrange(f"{PREFIX}:lru", 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.exists(self._entry(key))
        vanished = [key for key, exists in zip(keys, pipe.execute()) if not exists]
        for key in vanished:
            self.clear_location(key)
        return len(vanished)

    def size(self) -> Tuple[int, int]:
        """(entries, bytes) from the index, without listing it."""
        entries, stored = self.client.pipeline(transaction=False).zcard(f"{PREFIX}:lru").get(f"{PREFIX}:bytes").execute()
        return int(entries), int(stored or 0)

    def clear(self) -> None:
        for key in self.client.scan_iter(match=f"{PREFIX}:*", count=500):
            self.client.delete(key)



def _image_name(source: Path, index: int, field: str) -> str:
    """``images/<file>``: where the parser put it, relative to its output folder, if both parts are plain names."""
    parts = [source.parent.name, source.name]
    if all(_SAFE_PART.fullmatch(p) for p in parts):
        return "/".join(parts)
    suffix = source.suffix if _SAFE_PART.fullmatch(source.suffix.lstrip(".") or "-") else ""
    return f"images/{index}-{field}{suffix}"


def _checked(item: Any, blobs: Dict[str, bytes]) -> dict:
    """``item`` if it is exactly an entry ragopt writes; ``UnsafeCacheEntry`` otherwise."""
    if not isinstance(item, dict) or item.get("format") != ENTRY_FORMAT:
        raise UnsafeCacheEntry("not a ragopt entry of this format")
    content, images = item.get("content_list"), item.get("images")
    if not isinstance(content, list) or not all(isinstance(block, dict) for block in content):
        raise UnsafeCacheEntry("its content list is not a list of blocks")
    if not isinstance(images, list) or not all(isinstance(i, dict) for i in images):
        raise UnsafeCacheEntry("its image list is malformed")
    if not all(isinstance(item.get(k), (int, float)) for k in ("parse_seconds", "stored_at")):
        raise UnsafeCacheEntry("its timings are not numbers")
    own = set()
    for image in images:
        index, field, name, blob = (image.get(k) for k in ("index", "field", "name", "blob"))
        if not (isinstance(index, int) and 0 <= index < len(content) and field in IMAGE_FIELDS):
            raise UnsafeCacheEntry("an image refers to no block")
        if not (isinstance(name, str) and all(_SAFE_PART.fullmatch(p) for p in name.split("/"))):
            raise UnsafeCacheEntry(f"image name {name!r} is not a plain relative name")
        if blob not in blobs:
            raise UnsafeCacheEntry(f"image {name!r} has no bytes")
        own.add((index, field))
    for index, block in enumerate(content):
        for field in IMAGE_FIELDS:
            if block.get(field) and (index, field) not in own:
                raise UnsafeCacheEntry(f"block {index} names a file ({field}) that is not one of its images")
    return item


def write_atomically(target: Path, data: bytes) -> None:
    """Write then rename, so a concurrent reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    os.replace(temporary, target)


class RedisContentCache(ContentCache):
    """``ContentCache`` with its entries in Redis (see the module docstring); ``image_dir`` holds read images."""

    def __init__(self, location: str, size_limit_bytes: Optional[int] = None, ttl_hours: Optional[float] = None,
                 max_entries: Optional[int] = None, image_dir: Optional[str | os.PathLike] = None):
        self.image_dir = Path(image_dir or default_location().parent / "redis-images").resolve()
        super().__init__(location, size_limit_bytes=size_limit_bytes, ttl_hours=ttl_hours, max_entries=max_entries)

    def _open(self, location: str) -> None:
        self.location = str(location)
        self._store = RedisStoreBackend()
        self._store.configure(self.location, backend_options={"ttl_s": self.ttl_hours and self.ttl_hours * 3600})

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "image_dir": str(self.image_dir)}

    def __repr__(self) -> str:
        from ragopt.config import mask_password

        return f"RedisContentCache(location={mask_password(self.location)!r})"

    # -- entries -------------------------------------------------------------

    def put(self, key: str, content_list: list, parse_seconds: float) -> None:
        """Store ``content_list`` as JSON and the images it names as bytes; a file named but missing is dropped."""
        stored, images, blobs = [dict(block) for block in content_list], [], {}
        for index, block in enumerate(stored):
            for field in IMAGE_FIELDS:
                source = block.get(field)
                if not source:
                    continue
                path = Path(source)
                if not path.is_file():
                    del block[field]
                    continue
                name, blob = _image_name(path, index, field), str(len(images))
                blobs[blob] = path.read_bytes()
                images.append({"index": index, "field": field, "name": name, "blob": blob})
                block[field] = name
        item = {"format": ENTRY_FORMAT, "content_list": stored, "images": images,
                "parse_seconds": parse_seconds, "stored_at": time.time()}
        try:
            self._store.dump_item([key], item, blobs=blobs)
        except (TypeError, ValueError) as error:
            warnings.warn(f"Parse cache entry not stored: its content list is not JSON ({error})", CacheWarning)
            return
        if self.size_limit_bytes is not None or self.max_entries is not None:
            self.reduce_size()

    def _load(self, key: str, output_dir: Optional[str | os.PathLike] = None) -> Optional[dict]:
        try:
            loaded = self._store.load_item([key])
            if loaded is None:
                return None
            item = _checked(*loaded)
        except UnsafeCacheEntry as refused:
            warnings.warn(f"Parse cache entry {key} refused: {refused}", CacheWarning)
            self._store.clear_item([key])
            self.corrupt_entries_recovered += 1
            return None
        if self._expired(item["stored_at"]):
            self._store.clear_item([key])
            self.expirations += 1
            return None
        blobs = loaded[1]
        content_list = item["content_list"]
        for image in item["images"]:
            target = self._image_path(key, image["name"], blobs[image["blob"]], output_dir)
            content_list[image["index"]][image["field"]] = str(target)
        self._store.touch([key])
        return {"content_list": content_list, "parse_seconds": float(item["parse_seconds"])}

    def fetch(self, key: str, output_dir: str | os.PathLike) -> Optional[list]:
        """The stored content list with its images written under ``output_dir``, or None; not counted as a lookup
        (a worker counted it when it parsed or hit)."""
        entry = self._load(key, output_dir)
        return None if entry is None else entry["content_list"]

    def _image_path(self, key: str, name: str, data: bytes, output_dir: Optional[str | os.PathLike]) -> Path:
        """Where ``data`` now lies as a file: ``output_dir/name`` unless a different file is there already,
        else ``image_dir/key/name``."""
        if output_dir is not None:
            target = Path(output_dir) / name
            if target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
                return target.resolve()
            if not target.exists():
                write_atomically(target, data)
                return target.resolve()
        _create_private_dir(self.image_dir)
        target = self.image_dir / key / name
        if not (target.is_file() and target.read_bytes() == data):
            write_atomically(target, data)
        return target

    # -- bounds and sizes ----------------------------------------------------

    def _unexpired_items(self) -> list:
        self.expirations += self._store.prune_vanished()  # Redis expired them at ttl_hours
        return self._store.get_items()

    def _store_size(self) -> tuple:
        return self._store.size()
