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


def trim_free_heap() -> bool:
    """``malloc_trim(0)``: hand the pages of malloc's freed memory back to the OS.

    Unconditional: ``mallinfo2`` keeps counting trimmed pages as free, so the
    freed-but-held figure cannot tell when a trim is due (a threshold on it
    let an embedding worker keep ~190 MB). A trim costs under 0.1 ms once the
    freed pages are back. Returns whether it ran (False off glibc).
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
