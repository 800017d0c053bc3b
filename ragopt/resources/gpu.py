"""Device choice, GPU memory queries and out-of-memory-adaptive batching.

The batching helpers serve any batched model call: embeddings, rerankers,
and parsers that take a batch size (e.g. MinerU), via ``batch_size_for``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)
BATCH_HISTORY = 1024  # batch sizes kept in AdaptiveBatcher.stats


class DeviceUnavailableError(RuntimeError):
    """The requested accelerator is not usable and falling back to CPU is off."""


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def choose_device(
    prefer: Optional[str] = None,
    gpu_memory_fraction: Optional[float] = None,
    fallback_to_cpu: bool = True,
) -> str:
    """Return "cuda", "mps" or "cpu".

    ``prefer=None`` picks the best available device. ``prefer="cuda"`` or
    ``"mps"`` requires that device: when it is absent the result is "cpu" if
    ``fallback_to_cpu``, else ``DeviceUnavailableError``.

    On CUDA, ``gpu_memory_fraction`` (``RagoptConfig.gpu_memory_fraction``,
    GPU_MEMORY_FRACTION) caps this process's share of GPU memory through
    ``torch.cuda.set_per_process_memory_fraction``, so a process sharing the
    GPU gets an OOM error instead of starving its neighbours.
    """
    if prefer not in (None, "cuda", "mps", "cpu"):
        raise ValueError(f"prefer must be None, 'cuda', 'mps' or 'cpu', got {prefer!r}")
    available = {"cuda": _cuda_available(), "mps": _mps_available(), "cpu": True}
    if prefer is None:
        device = "cuda" if available["cuda"] else "mps" if available["mps"] else "cpu"
    elif available[prefer]:
        device = prefer
    elif fallback_to_cpu:
        logger.warning("%s requested but not available; using cpu", prefer)
        device = "cpu"
    else:
        build = f"torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no (CPU-only wheel)'}"
        raise DeviceUnavailableError(
            f"{prefer} was required but is not available ({build}); pass fallback_to_cpu=True to run on CPU"
        )

    if device == "cuda":
        fraction = gpu_memory_fraction
        if fraction is not None:
            if not 0 < fraction <= 1:
                raise ValueError(f"GPU memory fraction must be in (0, 1], got {fraction}")
            torch.cuda.set_per_process_memory_fraction(fraction)
    return device


def _is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def free_memory_bytes(device: str) -> Optional[int]:
    """Free memory on a CUDA device as the driver reports it; None for other devices.

    Uses ``torch.cuda.mem_get_info``, which sees other processes and memory the
    caching allocator holds. ``memory_allocated`` would see neither and
    overstate what is free.
    """
    if not _is_cuda(device):
        return None
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


@dataclass
class PeakMemory:
    device: str
    peak_bytes: Optional[int] = None  # set when the block ends; None off CUDA


@contextlib.contextmanager
def track_peak_memory(device: str) -> Iterator[PeakMemory]:
    """Record ``torch.cuda.max_memory_allocated`` over the block (peak stats reset first)."""
    result = PeakMemory(device=str(device))
    if not _is_cuda(device):
        yield result
        return
    torch.cuda.reset_peak_memory_stats(device)
    try:
        yield result
    finally:
        result.peak_bytes = int(torch.cuda.max_memory_allocated(device))


def is_oom_error(exc: BaseException) -> bool:
    """True for torch's OutOfMemoryError and for RuntimeErrors saying 'out of memory' (e.g. MPS, cuDNN)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def initial_batch_size(
    free_bytes: int,
    bytes_per_item: int,
    safety: float = 0.5,
    min_size: int = 1,
    max_size: Optional[int] = None,
) -> int:
    """How many items fit in ``safety`` x ``free_bytes``, clipped to [min_size, max_size]."""
    if bytes_per_item <= 0:
        raise ValueError(f"bytes_per_item must be positive, got {bytes_per_item}")
    size = max(min_size, int(free_bytes * safety) // bytes_per_item)
    return min(size, max_size) if max_size is not None else size


def batch_size_for(
    device: str,
    bytes_per_item: Optional[int] = None,
    cpu_batch_size: int = 32,
    safety: float = 0.5,
    max_size: Optional[int] = 4096,
) -> int:
    """A starting batch size for ``device``, e.g. for a parser's batch-size setting.

    On CUDA with a known ``bytes_per_item`` it is sized from free memory;
    otherwise (CPU, MPS, unknown item size) it is ``cpu_batch_size``.
    """
    free = free_memory_bytes(device)
    if free is None or bytes_per_item is None:
        return cpu_batch_size
    return initial_batch_size(free, bytes_per_item, safety=safety, max_size=max_size)


def _empty_cache(device: str) -> None:
    # Hand the allocator's cached blocks back so the smaller retry can use them.
    if _is_cuda(device) and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif str(device) == "mps" and _mps_available():
        torch.mps.empty_cache()


def _concat(chunks: List[Any]) -> Any:
    """Join per-batch outputs: tensors with torch.cat, arrays with numpy, anything else as a list."""
    if chunks and all(isinstance(c, torch.Tensor) for c in chunks):
        if len({c.device for c in chunks}) > 1:  # some batches fell back to CPU
            chunks = [c.cpu() for c in chunks]
        return torch.cat(chunks)
    if chunks and all(isinstance(c, np.ndarray) for c in chunks):
        return np.concatenate(chunks)
    return [item for chunk in chunks for item in chunk]


class AdaptiveBatcher:
    """Run ``fn(batch, device=...)`` over items in batches that adapt to memory.

    ``fn`` gets a list of items and the device to run on, and returns one
    output per item (a list, or a tensor/array whose first dimension is the
    batch). On an out-of-memory error the same items are retried at half the
    batch size; after ``grow_after`` successes in a row the size doubles
    again, up to the starting size. Growing back is worth the odd extra OOM
    because memory per batch varies: a batch of long texts needs far more than
    one of short texts. When even one item runs out of memory on an
    accelerator, the rest of the run falls back to ``device="cpu"`` at
    ``cpu_batch_size`` (``cpu_fallback=False`` re-raises instead); ``fn``
    must then handle CPU, e.g. ``model.encode(batch, device=device)`` moves
    a sentence-transformers model.

    Every item is processed exactly once in the output and order is kept.
    The current batch size carries over between ``run`` calls; the CPU
    fallback does not. ``stats`` accumulates: ooms, shrinks, grows,
    fallbacks, and batch_sizes (the sizes of the last ``BATCH_HISTORY``
    successful batches: a long-lived batcher must not grow with its calls).
    """

    def __init__(
        self,
        fn: Callable[..., Sequence[Any]],
        device: str = "cpu",
        *,
        start_size: Optional[int] = None,
        bytes_per_item: Optional[int] = None,
        max_size: Optional[int] = 4096,
        cpu_batch_size: int = 32,
        grow_after: int = 4,
        safety: float = 0.5,
        cpu_fallback: bool = True,
    ):
        self.fn = fn
        self.device = str(device)
        self.start_size = start_size or batch_size_for(
            self.device, bytes_per_item, cpu_batch_size=cpu_batch_size, safety=safety, max_size=max_size
        )
        self.batch_size = self.start_size
        self.cpu_batch_size = cpu_batch_size
        self.grow_after = grow_after
        self.cpu_fallback = cpu_fallback
        self.stats: Dict[str, Any] = {"ooms": 0, "shrinks": 0, "grows": 0, "fallbacks": 0,
                                      "batch_sizes": collections.deque(maxlen=BATCH_HISTORY)}

    def run(self, items: Iterable[Any]) -> Any:
        items = list(items)
        chunks: List[Any] = []
        device, size, ceiling = self.device, self.batch_size, self.start_size
        successes = 0
        start = 0
        while start < len(items):
            batch = items[start : start + size]
            out_of_memory = False
            try:
                output = self.fn(batch, device=device)
            except Exception as exc:
                last_resort = size == 1 and (device == "cpu" or not self.cpu_fallback)
                if not is_oom_error(exc) or last_resort:
                    raise
                out_of_memory = True
            # Handled outside the except block: by now the exception and the
            # tensors its traceback frames reference are released.
            if out_of_memory:
                self.stats["ooms"] += 1
                _empty_cache(device)
                successes = 0
                if size > 1:
                    size //= 2
                    self.stats["shrinks"] += 1
                else:
                    logger.warning("out of memory at batch size 1 on %s; continuing on cpu", device)
                    device, size, ceiling = "cpu", self.cpu_batch_size, self.cpu_batch_size
                    self.stats["fallbacks"] += 1
                continue

            if len(output) != len(batch):
                raise ValueError(f"fn returned {len(output)} outputs for a batch of {len(batch)}")
            chunks.append(output)
            self.stats["batch_sizes"].append(len(batch))
            start += len(batch)
            successes += 1
            if successes >= self.grow_after and size < ceiling:
                size = min(size * 2, ceiling)
                successes = 0
                self.stats["grows"] += 1
            if device == self.device:
                self.batch_size = size
        return _concat(chunks)
