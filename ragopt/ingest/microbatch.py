"""An embedding micro-batcher: many concurrent small calls become few large ones.

LightRAG embeds each merged entity and relation in its own call (one text per
call), and a transformer pays a fixed cost per call. Requests are queued;
one worker per event loop takes whatever has arrived, waits at most
``max_wait_s`` for more (up to ``max_batch`` texts), encodes them in one call,
and hands each caller its own rows. One batch is encoded at a time: on a CPU
the model already uses every core, and requests that arrive meanwhile make the
next batch larger.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

from ragopt.ingest.registry import BEFORE_INIT, Optimization, Target, register_optimization

IDLE_EXIT_S = 1.0


def micro_batched(embed: Callable, max_batch: int = 64, max_wait_s: float = 0.02, stats: Dict[str, int] | None = None) -> Callable:
    """A plain ``async def (texts) -> ndarray`` that coalesces concurrent calls to ``embed``.

    ``stats`` receives calls (requests), batches (calls to ``embed``) and texts.
    """
    stats = {} if stats is None else stats
    workers: Dict[asyncio.AbstractEventLoop, Tuple[asyncio.Queue, asyncio.Task]] = {}

    async def worker(queue: asyncio.Queue) -> None:
        while True:
            try:
                first = await asyncio.wait_for(queue.get(), IDLE_EXIT_S)
            except asyncio.TimeoutError:
                if queue.empty():  # no await between this check and the exit
                    return
                continue
            batch: List[Tuple[List[str], asyncio.Future]] = [first]
            size = len(batch[0][0])
            deadline = asyncio.get_running_loop().time() + max_wait_s
            while size < max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0 and queue.empty():
                    break
                try:
                    item = queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                batch.append(item)
                size += len(item[0])
            await _encode(batch)

    async def _encode(batch: List[Tuple[List[str], asyncio.Future]]) -> None:
        texts = [text for request, _ in batch for text in request]
        stats["batches"] = stats.get("batches", 0) + 1
        stats["texts"] = stats.get("texts", 0) + len(texts)
        try:
            vectors = np.asarray(await embed(texts))
        except Exception as error:  # every caller of the batch sees the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        start = 0
        for request, future in batch:
            if not future.done():
                future.set_result(vectors[start:start + len(request)])
            start += len(request)

    async def batched(texts: List[str], **_: Any) -> np.ndarray:
        loop = asyncio.get_running_loop()
        queue, task = workers.get(loop, (None, None))
        if task is None or task.done():
            # A worker per loop, gone when idle: a notebook may run several loops over time.
            for old in [old for old in workers if old.is_closed()]:
                del workers[old]
            queue = asyncio.Queue()
            workers[loop] = (queue, loop.create_task(worker(queue)))
        stats["calls"] = stats.get("calls", 0) + 1
        future = loop.create_future()
        queue.put_nowait((list(texts), future))
        return await future

    async def shutdown() -> None:
        """Stop this loop's worker now rather than after IDLE_EXIT_S (``release_rag``)."""
        _, task = workers.pop(asyncio.get_running_loop(), (None, None))
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    batched.shutdown = shutdown
    batched.max_batch, batched.max_wait_s = max_batch, max_wait_s
    return batched


def micro_batched_embedding(embedding_func: Any, max_batch: int = 64, max_wait_s: float = 0.02, stats: Dict[str, int] | None = None) -> Any:
    """The same LightRAG ``EmbeddingFunc`` with its inner function micro-batched."""
    return dataclasses.replace(embedding_func, func=micro_batched(embedding_func.func, max_batch, max_wait_s, stats))


def _install(target: Target) -> None:
    config = target.config
    target.rag.embedding_func = micro_batched_embedding(
        target.rag.embedding_func, config.embedding_batch_size, config.embedding_batch_wait_s, target.stats
    )


register_optimization(Optimization(
    name="micro_batch_embeddings",
    field="micro_batch_embeddings",
    summary="concurrent embedding calls of a few texts each coalesce into batches of up to RAGOPT_EMBED_BATCH_SIZE",
    when=BEFORE_INIT,
    install=_install,
    counts=("calls", "batches", "texts"),
))
