"""File bytes through Redis by content hash, so a worker on another machine needs no shared filesystem.

Each file is stored once under its SHA-256, with a TTL (RAGOPT_TRANSFER_TTL_HOURS)
that every later upload of the same bytes renews. Files above
RAGOPT_TRANSFER_MAX_MB are refused with their own error (Redis holds a value
in memory, up to 512 MB). A downloaded file is checked against its hash.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ragopt.cache.redis_store import write_atomically

_MB = 1024 * 1024


def file_key(digest: str) -> str:
    return f"ragopt:file:{digest}"


class FileTooLargeError(ValueError):
    """A file above the transfer size limit."""


class TransferError(RuntimeError):
    """A file's bytes are not in Redis (expired, never uploaded) or do not match their hash."""


class FileTransfer:
    """Upload and download file bytes by content hash on one Redis."""

    def __init__(self, client, max_mb: float, ttl_hours: float):
        self.client, self.max_mb, self.ttl_s = client, max_mb, int(ttl_hours * 3600)

    def upload(self, path: str | os.PathLike, digest: str) -> None:
        """Store ``path``'s bytes under ``digest`` unless they are there already (then keep them longer)."""
        size = os.path.getsize(path)
        if size > self.max_mb * _MB:
            raise FileTooLargeError(
                f"{path}: {size / _MB:.1f} MB is over the transfer limit RAGOPT_TRANSFER_MAX_MB={self.max_mb:g} "
                "(file bytes travel to the workers through Redis)"
            )
        key = file_key(digest)
        if not self.client.expire(key, self.ttl_s):
            self.client.set(key, Path(path).read_bytes(), ex=self.ttl_s)

    def download(self, digest: str, target: Path, name: str) -> None:
        """Write the bytes of ``digest`` to ``target`` (atomically); ``name`` is for the error message."""
        data = self.client.get(file_key(digest))
        if data is None:
            raise TransferError(f"{name}: its bytes (sha256 {digest[:12]}...) are not in Redis: they expired after "
                                "RAGOPT_TRANSFER_TTL_HOURS or were never uploaded; submit the file again")
        if hashlib.sha256(data).hexdigest() != digest:
            raise TransferError(f"{name}: the bytes in Redis do not match their sha256 {digest[:12]}...")
        write_atomically(target, data)
