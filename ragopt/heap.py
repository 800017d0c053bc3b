"""glibc malloc's heap: bytes in use and freed-but-held, and handing the freed ones back.

Memory that torch, numpy, lxml or JSON code frees stays in malloc's arenas,
and so in RSS, until ``malloc_trim``; a long-lived worker that allocates
buffers of ever new sizes keeps growing that way. Kept free of heavy imports:
the parse and embedding worker processes use it. Off glibc, stats are NaN and
trimming does nothing.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Dict, Optional

MB = 1024 * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.lru_cache(maxsize=1)
def _glibc() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return None


def malloc_stats() -> Dict[str, float]:
    """This process's malloc heap in MB: ``in_use_mb`` and ``free_mb`` (freed but held); NaN off glibc."""
    libc = _glibc()
    if libc is None:
        return {"in_use_mb": float("nan"), "free_mb": float("nan")}
    info = libc.mallinfo2()
    return {"in_use_mb": (info.uordblks + info.hblkhd) / MB, "free_mb": info.fordblks / MB}


_freed_at_last_trim = [0.0]  # malloc's free MB right after the last trim (it keeps counting trimmed pages)


def trim_free_heap(min_free_mb: float = 0.0) -> bool:
    """``malloc_trim(0)`` once malloc holds ``min_free_mb`` more freed memory than after the last trim.

    ``mallinfo2`` still counts trimmed pages as free, hence the comparison with
    the last trim rather than with zero. Returns whether it trimmed.
    """
    libc = _glibc()
    if libc is None:
        return False
    free_mb = malloc_stats()["free_mb"]
    _freed_at_last_trim[0] = min(_freed_at_last_trim[0], free_mb)  # freed memory was reused meanwhile
    if free_mb - _freed_at_last_trim[0] < min_free_mb:
        return False
    libc.malloc_trim(0)
    _freed_at_last_trim[0] = malloc_stats()["free_mb"]
    return True
