"""Content-addressed parse cache on joblib's file-system store.

RAG-Anything 1.4.3 keys its parse cache on absolute path + mtime + content +
options, so a renamed, copied or merely touched file is parsed again. Here an
entry is keyed on what decides the parse result only: the file's bytes, the
parser and its version, and the options listed in ``PARSE_RESULT_OPTIONS``.

Storage is joblib's ``FileSystemStoreBackend`` (what ``joblib.Memory`` uses):
one directory per key holding ``output.pkl`` plus copies of the images the
content list points at. joblib writes every file to a unique temporary name
and renames it into place, so concurrent writers of one key each leave a
complete entry and readers never see a partial one.

Entries are pickles, and unpickling runs code, so a location that anyone but
its owner can write to is refused (``UnsafeCacheLocation``).

``ContentCache("redis://host:6379/0")`` keeps the entries in Redis instead
(``ragopt.cache.redis_store``: JSON and raw image bytes, never pickles), so
parse workers on any machine and the caller share one cache.

Stats are counters of one ``ContentCache`` instance. A pickled copy (the one a
worker process receives) starts from zero; send each copy's ``stats()`` back
and fold them in with ``merge_stats``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import stat
import time
import warnings
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable, Iterable

import platformdirs
from joblib._store_backends import (
    CacheWarning,
    FileSystemStoreBackend,
    concurrency_safe_write,
)
from joblib.backports import concurrency_safe_rename

# Options that change what a parser returns. Everything else (output_dir,
# device, model download source, server URLs, display/verbosity flags and any
# unknown option) is left out of the key, so it cannot cause a miss.
PARSE_RESULT_OPTIONS = frozenset(
    {
        "method",  # auto / ocr / txt
        "parse_method",  # RAG-Anything's name for `method`
        "lang",
        "start_page",
        "end_page",
        "formula",
        "table",
        "backend",  # MinerU pipeline and VLM backends give different output
        "include_layout_blocks",
        "tables",  # Docling
        "table_mode",  # Docling
        "allow_ocr",  # Docling
        "cls",  # PaddleOCR
        "page_idx",  # PaddleOCR
    }
)

# content_list fields that name an image file written by the parser.
IMAGE_FIELDS = ("img_path", "table_img_path", "equation_img_path")

# Bumped when the stored entry layout changes, so old entries just miss.
ENTRY_FORMAT = 1

_CHUNK_BYTES = 1024 * 1024
_ENTRY_FILE = "output.pkl"
_COUNTERS = (
    "hits",
    "misses",
    "parse_seconds_saved",
    "evictions",
    "expirations",
    "corrupt_entries_recovered",
)


class UnsafeCacheLocation(PermissionError):
    """The cache location could be written by someone other than its owner."""


def default_location() -> Path:
    """Per-user cache directory (not /tmp, which other users can reach)."""
    return Path(platformdirs.user_cache_dir("ragopt")) / "parse-cache"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in chunks so big PDFs stay out of memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_key(
    path: str | os.PathLike,
    parser_name: str,
    parser_version: str,
    file_digest: str | None = None,
    **options: Any,
) -> str:
    """Cache key of a parse: file bytes, parser, version, result-changing options.

    Never the path or the mtime. An option set to None means "parser default",
    the same as leaving it out. ``file_digest`` is the file's SHA-256 when the
    caller has it already (the file is then not read again).
    """
    relevant = {
        name: value
        for name, value in options.items()
        if name in PARSE_RESULT_OPTIONS and value is not None
    }
    identity = {
        "format": ENTRY_FORMAT,
        "file_sha256": file_digest or file_sha256(path),
        "parser": parser_name,
        "parser_version": parser_version,
        "options": relevant,
    }
    encoded = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()


def _create_private_dir(location: Path) -> None:
    """Create the missing part of ``location`` with mode 0700, top down."""
    missing = [d for d in (location, *location.parents) if not d.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another process made it; the ownership check below judges it


def _refuse_shared_location(location: Path) -> None:
    """Raise if anyone but the owner could plant an entry (entries are unpickled).

    Parents may be world-writable only with the sticky bit (like /tmp): there
    others cannot rename or delete our directory.
    """
    if os.name == "nt":  # POSIX mode bits mean nothing there
        return
    for directory in (location, *location.parents):
        mode = directory.stat().st_mode
        writable_by_others = mode & (stat.S_IWGRP | stat.S_IWOTH)
        sticky_parent = directory != location and mode & stat.S_ISVTX
        if writable_by_others and not sticky_parent:
            raise UnsafeCacheLocation(
                f"Refusing parse cache at {location}: {directory} is group- or "
                f"world-writable (mode {stat.filemode(mode)}). Cache entries are "
                "unpickled, so whoever can write there can run code in this "
                "process. Use a private directory (chmod 700) or location=None."
            )
    if location.stat().st_uid != os.getuid():
        raise UnsafeCacheLocation(
            f"Refusing parse cache at {location}: it is owned by another user. "
            "Cache entries are unpickled, so its owner could run code in this "
            "process."
        )


def _copy_atomically(source: Path, destination: Path) -> None:
    temporary = concurrency_safe_write(source, str(destination), shutil.copyfile)
    concurrency_safe_rename(temporary, str(destination))


def is_redis_url(location: Any) -> bool:
    return isinstance(location, str) and location.startswith(("redis://", "rediss://"))


class ContentCache:
    """Parse cache keyed on file content, in the manner of ``joblib.Memory``.

    ``location=None`` disables it: every lookup misses, nothing is written,
    calls are still counted. ``size_limit_bytes`` and ``max_entries`` evict
    least recently used entries after each store; ``ttl_hours`` turns entries
    stored longer ago than that into misses and removes them. A ``redis://``
    or ``rediss://`` location makes a ``RedisContentCache``.
    """

    def __new__(cls, location: Any = None, *args: Any, **kwargs: Any) -> "ContentCache":
        if cls is ContentCache and is_redis_url(location):
            from ragopt.cache.redis_store import RedisContentCache

            cls = RedisContentCache
        return super().__new__(cls)

    def __init__(
        self,
        location: str | os.PathLike | None = None,
        size_limit_bytes: int | None = None,
        ttl_hours: float | None = None,
        max_entries: int | None = None,
    ):
        self.location = None
        self.size_limit_bytes = size_limit_bytes
        self.ttl_hours = ttl_hours
        self.max_entries = max_entries
        for counter in _COUNTERS:
            setattr(self, counter, 0)
        self._store = None
        if location is not None:
            self._open(location)

    def _open(self, location: str | os.PathLike) -> None:
        """Set ``location`` and ``_store`` (a backend overrides this)."""
        self.location = Path(location).resolve()
        _create_private_dir(self.location)
        _refuse_shared_location(self.location)
        self._store = FileSystemStoreBackend()
        self._store.configure(str(self.location), verbose=0)

    @classmethod
    def from_config(cls, config: Any, fallback_location: str | os.PathLike | None = None) -> "ContentCache":
        """The parse cache a ``RagoptConfig`` describes: off (ENABLE_PARSE_CACHE=false), at
        CACHE_STORAGE, else at ``fallback_location`` or the user's cache directory;
        bounded by CACHE_SIZE_LIMIT (entries or bytes) and CACHE_TTL_HOURS."""
        if not config.enable_parse_cache:
            return cls(None)
        limit = config.cache_size_limit
        return cls(
            config.cache_storage or fallback_location or default_location(),
            size_limit_bytes=None if limit is None else limit.bytes,
            ttl_hours=config.cache_ttl_hours,
            max_entries=None if limit is None else limit.entries,
        )

    # Only settings travel to worker processes; each copy counts on its own.
    def __getstate__(self) -> dict:
        return {
            "location": self.location,
            "size_limit_bytes": self.size_limit_bytes,
            "ttl_hours": self.ttl_hours,
            "max_entries": self.max_entries,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def __repr__(self) -> str:
        return f"ContentCache(location={str(self.location)!r})"

    # -- lookups -----------------------------------------------------------

    def get_or_parse(
        self,
        path: str | os.PathLike,
        parse_fn: Callable[..., list],
        parser_name: str,
        parser_version: str,
        file_digest: str | None = None,
        **options: Any,
    ) -> list:
        """Cached content_list of ``path``; calls ``parse_fn(path, **options)`` on a miss.

        ``file_digest``: the file's SHA-256 if already known (saves reading it again).
        """
        if self._store is None:  # like Memory(None): no hashing, just the call
            self.misses += 1
            return parse_fn(path, **options)
        key = content_key(path, parser_name, parser_version, file_digest, **options)
        content_list = self.get(key)
        if content_list is None:
            started = time.perf_counter()
            content_list = parse_fn(path, **options)
            self.put(key, content_list, time.perf_counter() - started)
        return content_list

    def cached(
        self, parser_name: str, parser_version: str
    ) -> Callable[[Callable[..., list]], Callable[..., list]]:
        """Decorator: ``cache.cached("mineru", "2.5")(parse_fn)(path, **options)``."""

        def decorate(parse_fn: Callable[..., list]) -> Callable[..., list]:
            @functools.wraps(parse_fn)
            def cached_parse(path: str | os.PathLike, **options: Any) -> list:
                return self.get_or_parse(
                    path, parse_fn, parser_name, parser_version, **options
                )

            return cached_parse

        return decorate

    def get(self, key: str) -> list | None:
        """Stored content_list for ``key``, or None on a miss.

        Expired, truncated or otherwise unreadable entries are removed and
        count as misses, so the next ``put`` rewrites them.
        """
        entry = self._load(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self.parse_seconds_saved += entry["parse_seconds"]
        return entry["content_list"]

    def put(self, key: str, content_list: list, parse_seconds: float) -> None:
        """Store ``content_list`` with copies of the images it references."""
        if self._store is None:
            return
        entry_dir = self.location / key
        images = []  # (item index, field, file name inside entry_dir)
        try:
            self._store.create_location(str(entry_dir))
            for index, item in enumerate(content_list):
                for field in IMAGE_FIELDS:
                    source = item.get(field)
                    if source and Path(source).is_file():
                        name = f"{index}-{field}{Path(source).suffix}"
                        _copy_atomically(Path(source), entry_dir / name)
                        images.append((index, field, name))
        except OSError as error:  # e.g. evicted by another process meanwhile
            warnings.warn(f"Parse cache entry not stored: {error}", CacheWarning)
            return
        # output.pkl goes last: an entry is visible only once its images exist.
        entry = {
            "content_list": content_list,
            "images": images,
            "parse_seconds": parse_seconds,
        }
        self._store.dump_item([key], entry, verbose=0)
        if self.size_limit_bytes is not None or self.max_entries is not None:
            self.reduce_size()

    def _load(self, key: str) -> dict | None:
        if self._store is None:
            return None
        entry_dir = self.location / key
        entry_file = entry_dir / _ENTRY_FILE
        try:
            stored = entry_file.stat()
        except OSError:
            return None
        if self._expired(stored.st_mtime):
            self._store.clear_item([key])
            self.expirations += 1
            return None
        try:
            entry = self._store.load_item([key], verbose=0)
            content_list = entry["content_list"]  # a fresh unpickled copy
            for index, field, name in entry["images"]:
                image = entry_dir / name
                if not image.is_file():
                    raise FileNotFoundError(image)
                content_list[index][field] = str(image)
            parse_seconds = float(entry["parse_seconds"])
        except Exception:  # whatever a damaged pickle raises, it is just a miss
            self._store.clear_item([key])
            self.corrupt_entries_recovered += 1
            return None
        # joblib's store orders entries by the atime of output.pkl; set it
        # explicitly (noatime/relatime mounts would not) and keep the mtime,
        # which records when the entry was stored.
        try:
            os.utime(entry_file, ns=(time.time_ns(), stored.st_mtime_ns))
        except OSError:
            pass  # removed by another process since; the data is already read
        return {"content_list": content_list, "parse_seconds": parse_seconds}

    def _expired(self, stored_at: float) -> bool:
        return (
            self.ttl_hours is not None
            and time.time() - stored_at > self.ttl_hours * 3600
        )

    # -- bounds ------------------------------------------------------------

    def reduce_size(self) -> None:
        """Remove expired entries, then least recently used ones over the entry or size limit."""
        if self._store is None:
            return
        items = sorted(self._unexpired_items(), key=attrgetter("last_access"))
        total, count = sum(item.size for item in items), len(items)
        for item in items:  # least recently used first
            over_bytes = self.size_limit_bytes is not None and total > self.size_limit_bytes
            over_count = self.max_entries is not None and count > self.max_entries
            if not (over_bytes or over_count):
                break
            self._store.clear_location(item.path)
            total, count = total - item.size, count - 1
            self.evictions += 1

    def _unexpired_items(self) -> list:
        """The store's items, after removing (and counting) the expired ones."""
        items = self._store.get_items()
        if self.ttl_hours is None:
            return items
        kept = []
        for item in items:
            try:
                stored_at = os.stat(Path(item.path) / _ENTRY_FILE).st_mtime
            except OSError:  # still being written, or already gone
                kept.append(item)
                continue
            if self._expired(stored_at):
                self._store.clear_location(item.path)
                self.expirations += 1
            else:
                kept.append(item)
        return kept

    def clear(self) -> None:
        """Remove every entry."""
        if self._store is not None:
            self._store.clear()

    # -- stats -------------------------------------------------------------

    def stats(self) -> dict:
        """This instance's counters plus the store's current entries and bytes."""
        lookups = self.hits + self.misses
        counters = {counter: getattr(self, counter) for counter in _COUNTERS}
        entries, stored = self._store_size()
        return {
            **counters,
            "hit_rate": self.hits / lookups if lookups else 0.0,
            "entries": entries,
            "bytes_stored": stored,
        }

    def _store_size(self) -> tuple:
        """(entries, bytes) in the store."""
        items = self._store.get_items() if self._store is not None else []
        return len(items), sum(item.size for item in items)

    def merge_stats(self, stats_dicts: Iterable[dict]) -> None:
        """Add other copies' counters (e.g. from worker processes) to this one.

        Only the counters are summed; hit_rate, entries and bytes_stored are
        recomputed by ``stats()``, as they describe the shared store.
        """
        for other in stats_dicts:
            for counter in _COUNTERS:
                setattr(self, counter, getattr(self, counter) + other[counter])

    def stats_frame(self):
        """``stats()`` as a one-row pandas DataFrame."""
        import pandas  # lazily: worker processes never need it

        return pandas.DataFrame([self.stats()])
