"""An embedding micro-batcher: many concurrent small calls become few large ones.

LightRAG embeds each merged entity and relation in its own call (one text per
call), and a transformer pays a fixed cost per call. Requests are queued;
one worker per event loop takes whatever has arrived, waits at most
``max_wait_s`` for more (up to ``max_batch`` texts), encodes them in one call,
and hands each caller its own rows. One batch is encoded at a time: on a CPU
the model already uses every core, and requests that arrive meanwhile make the
next batch larger.

LightRAG times each embedding call from when its queue hands the call over,
that is here, where it waits for every batch ahead of it: on two busy cores
a call queued behind a few dozen batches of chunks ran past LightRAG's 60 s
and failed its document. So the limit LightRAG sets on one call applies to
each batch instead (``batch_limit_s``: a stalled model still fails within
it), and LightRAG's own is raised to cover every batch its queue may hold
ahead of a call.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ragopt.engine.registry import BEFORE_INIT, Optimization, Target, register_optimization

IDLE_EXIT_S = 1.0
QUERY, DOCUMENT = 0, 1  # the lanes: with queries_first, LightRAG's query embeddings are taken first
MEMO_ENTRIES = 1024  # query texts whose vectors are kept (RAG-Anything retrieves twice per question)


class _Lanes:
    """Requests waiting for the worker, in two lanes, each first come first served."""

    def __init__(self) -> None:
        self.lanes = (collections.deque(), collections.deque())
        self.arrived = asyncio.Event()

    def put(self, item: Tuple[List[str], asyncio.Future], lane: int) -> None:
        self.lanes[lane].append(item)
        self.arrived.set()

    def empty(self) -> bool:
        return not any(self.lanes)

    def first_lane(self) -> int:
        return QUERY if self.lanes[QUERY] else DOCUMENT

    async def wait(self, lane: Optional[int], timeout: float) -> bool:
        """Whether a request is waiting in ``lane`` (None: either) within ``timeout`` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not (self.lanes[lane] if lane is not None else not self.empty()):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        return True


def micro_batched(embed: Callable, max_batch: int = 64, max_wait_s: float = 0.02, stats: Dict[str, int] | None = None,
                  queries_first: bool = False, query_memo: bool = False, batch_limit_s: Optional[float] = None) -> Callable:
    """A plain ``async def (texts) -> ndarray`` that coalesces concurrent calls to ``embed``.

    ``stats`` receives calls (requests), batches (calls to ``embed``) and texts.
    ``batch_limit_s``: a batch still encoding after this fails its callers with ``TimeoutError``.
    Calls with ``context="query"`` are LightRAG's query embeddings:

    - ``queries_first``: they form batches of their own, taken before waiting
      document texts, so a query waits for the batch being encoded at most,
      not for every document text queued ahead of it (``query_batches``;
      ``query_wait_s`` is the seconds queries waited for their vectors);
    - ``query_memo``: a query text's vector is kept (the last ``MEMO_ENTRIES``),
      so the same text is encoded once (``query_memo_hits``); the vector of a
      text never changes, so it cannot go stale.
    """
    stats = {} if stats is None else stats
    workers: Dict[asyncio.AbstractEventLoop, Tuple[_Lanes, asyncio.Task]] = {}
    memo: "collections.OrderedDict[str, np.ndarray]" = collections.OrderedDict()

    async def worker(lanes: _Lanes) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not await lanes.wait(None, IDLE_EXIT_S):
                if lanes.empty():  # no await between this check and the exit
                    return
                continue
            lane = lanes.first_lane()
            batch: List[Tuple[List[str], asyncio.Future]] = [lanes.lanes[lane].popleft()]
            size = len(batch[0][0])
            deadline = loop.time() + max_wait_s
            # Up to max_batch texts of the same lane: what is there, and what arrives within max_wait_s.
            while size < max_batch and (lanes.lanes[lane] or await lanes.wait(lane, deadline - loop.time())):
                item = lanes.lanes[lane].popleft()
                batch.append(item)
                size += len(item[0])
            if lane == QUERY:
                stats["query_batches"] = stats.get("query_batches", 0) + 1
            await _encode(batch)

    async def _encode(batch: List[Tuple[List[str], asyncio.Future]]) -> None:
        texts = [text for request, _ in batch for text in request]
        stats["batches"] = stats.get("batches", 0) + 1
        stats["texts"] = stats.get("texts", 0) + len(texts)
        try:
            vectors = np.asarray(await asyncio.wait_for(embed(texts), batch_limit_s))
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

    async def batched(texts: List[str], context: Optional[str] = None, **_: Any) -> np.ndarray:
        loop = asyncio.get_running_loop()
        lanes, task = workers.get(loop, (None, None))
        if task is None or task.done():
            # A worker per loop, gone when idle: a notebook may run several loops over time.
            for old in [old for old in workers if old.is_closed()]:
                del workers[old]
            lanes = _Lanes()
            workers[loop] = (lanes, loop.create_task(worker(lanes)))
        stats["calls"] = stats.get("calls", 0) + 1
        query = context == "query"
        if query and query_memo and texts and all(text in memo for text in texts):
            stats["query_memo_hits"] = stats.get("query_memo_hits", 0) + 1
            for text in texts:
                memo.move_to_end(text)
            return np.stack([memo[text] for text in texts])
        future = loop.create_future()
        asked = loop.time()
        lanes.put((list(texts), future), QUERY if queries_first and query else DOCUMENT)
        vectors = await future
        if query:
            stats["query_wait_s"] = stats.get("query_wait_s", 0.0) + loop.time() - asked
            if query_memo:
                memo.update(zip(texts, vectors))
                while len(memo) > MEMO_ENTRIES:
                    memo.popitem(last=False)
        return vectors

    async def shutdown() -> None:
        """Stop this loop's worker now rather than after IDLE_EXIT_S (``release_rag``)."""
        _, task = workers.pop(asyncio.get_running_loop(), (None, None))
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    batched.shutdown = shutdown
    batched.max_batch, batched.max_wait_s, batched.batch_limit_s = max_batch, max_wait_s, batch_limit_s
    batched.queries_first, batched.query_memo = queries_first, query_memo
    return batched


def micro_batched_embedding(embedding_func: Any, max_batch: int = 64, max_wait_s: float = 0.02, stats: Dict[str, int] | None = None,
                            queries_first: bool = False, query_memo: bool = False, batch_limit_s: Optional[float] = None) -> Any:
    """The same LightRAG ``EmbeddingFunc`` with its inner function micro-batched.

    With ``queries_first`` or ``query_memo`` it declares ``supports_asymmetric``,
    so LightRAG hands the batcher each call's ``context`` (the model still gets texts only).
    """
    func = micro_batched(embedding_func.func, max_batch, max_wait_s, stats, queries_first, query_memo, batch_limit_s)
    return dataclasses.replace(embedding_func, func=func,
                               supports_asymmetric=embedding_func.supports_asymmetric or queries_first or query_memo)


def _install(target: Target) -> None:
    from ragopt.compat.lightrag import embedding_call_limit_s, lightrag_default, set_embedding_call_limit_s

    config, kwargs = target.config, target.rag.lightrag_kwargs
    batch_limit_s = embedding_call_limit_s(kwargs)
    admitted = kwargs.get("embedding_func_max_async") or lightrag_default("embedding_func_max_async")
    # Ahead of a call: the batch encoding now and, at worst, one batch per other admitted call.
    set_embedding_call_limit_s(kwargs, batch_limit_s * (admitted + 1))
    target.rag.embedding_func = micro_batched_embedding(
        target.rag.embedding_func, config.embedding_batch_size, config.embedding_batch_wait_s, target.stats,
        queries_first=config.query_embeddings_first, query_memo=config.query_embedding_memo, batch_limit_s=batch_limit_s,
    )


register_optimization(Optimization(
    name="micro_batch_embeddings",
    field="micro_batch_embeddings",
    summary="concurrent embedding calls of a few texts each coalesce into batches of up to RAGOPT_EMBED_BATCH_SIZE",
    when=BEFORE_INIT,
    install=_install,
    counts=("calls", "batches", "texts"),
))
