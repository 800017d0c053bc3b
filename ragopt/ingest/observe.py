"""The one place a RAGAnything is observed: listeners on its model calls, storage flushes and cache lookups.

``observation(rag)`` installs, once and before anything else wraps them, a
thin layer at the innermost end of the rag's LLM, vision and embedding
functions (so a listener sees each request the service serves: every retry
attempt, every micro-batch), and, once LightRAG exists, around each
storage's flush and the LLM and parse cache lookups. Listeners (a Recorder,
the live view) come and go at any time; with none, the layer only passes the
call on. Document events travel through RAG-Anything's own CallbackManager,
which ``ragopt.ingest`` dispatches to as RAG-Anything's entry points do.

A listener implements any of ``llm_call(start_ns, end_ns, info, error)``,
``embedding_call(start_ns, end_ns, texts)``, ``flush(start_ns, end_ns,
storage)`` and ``cache_lookup(cache, hit)``; ``info`` is what the backend
reported through ``ragopt.backends.callinfo``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, List, Optional

from ragopt.backends import callinfo
from ragopt.compat.raganything import after_initialization, is_initialized, wrap_parse_cache_lookup


def _notify(listeners: List[Any], method: str, *args: Any) -> None:
    for listener in listeners:
        handler = getattr(listener, method, None)
        if handler is not None:
            handler(*args)


def _fill_in(info: dict, args: tuple, kwargs: dict, answer: Any) -> None:
    """What a backend did not report: the prompt's kind, and tokens counted with the offline tokenizer."""
    if "kind" in info and "prompt_tokens" in info:
        return
    from ragopt.backends.llm_sim import split_messages
    from ragopt.backends.prompt_kinds import classify
    from ragopt.backends.tokenizer import count_tokens

    if kwargs.get("messages"):
        system_prompt, history, prompt, _ = split_messages(kwargs["messages"])
    else:
        prompt = args[0] if args else kwargs.get("prompt", "")
        system_prompt, history = kwargs.get("system_prompt"), kwargs.get("history_messages") or []
    info.setdefault("kind", classify(prompt or "", system_prompt))
    if "prompt_tokens" not in info:
        sent = "".join([system_prompt or "", prompt or ""] + [str(m.get("content", "")) for m in history])
        info.update(prompt_tokens=count_tokens(sent), token_source="tokenizer",
                    completion_tokens=count_tokens(answer) if isinstance(answer, str) else 0)


def observed_llm(func: Callable, listeners: List[Any]) -> Callable:
    """A plain ``async def`` around an LLM function that tells ``listeners`` (a live list) about each call."""

    async def observed(*args: Any, **kwargs: Any):
        if not listeners:
            return await func(*args, **kwargs)
        info: dict = {}
        token = callinfo.current_call.set(info)
        start_ns, error, answer = time.perf_counter_ns(), None, None
        try:
            answer = await func(*args, **kwargs)
            return answer
        except BaseException as exc:
            error = exc
            raise
        finally:
            callinfo.current_call.reset(token)
            _fill_in(info, args, kwargs, answer)
            _notify(listeners, "llm_call", start_ns, time.perf_counter_ns(), info, error)

    return observed


def observed_embedding(embedding_func: Any, listeners: List[Any]) -> Any:
    """The same LightRAG ``EmbeddingFunc`` with its inner function reported to ``listeners``."""
    inner = embedding_func.func

    async def observed(texts, *args: Any, **kwargs: Any):
        start_ns = time.perf_counter_ns()
        try:
            return await inner(texts, *args, **kwargs)
        finally:
            _notify(listeners, "embedding_call", start_ns, time.perf_counter_ns(), len(texts))

    return dataclasses.replace(embedding_func, func=observed)


class Observation:
    """The listeners of one rag, and the layer that feeds them."""

    def __init__(self, rag: Any):
        self.listeners: List[Any] = []
        rag.llm_model_func = observed_llm(rag.llm_model_func, self.listeners)
        if rag.vision_model_func is not None:
            rag.vision_model_func = observed_llm(rag.vision_model_func, self.listeners)
        rag.embedding_func = observed_embedding(rag.embedding_func, self.listeners)
        after_initialization(rag, lambda: self._observe_storages(rag))

    def add(self, listener: Any) -> None:
        if listener not in self.listeners:
            self.listeners.append(listener)

    def remove(self, listener: Any) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def _observe_storages(self, rag: Any) -> None:
        from lightrag.base import StorageNameSpace

        holders = [vars(rag.lightrag), vars(rag)]
        for storage in {id(s): s for h in holders for s in h.values() if isinstance(s, StorageNameSpace)}.values():
            self._time_flushes(storage)
        cache = rag.lightrag.llm_response_cache
        cache.get_by_id = self._counting(cache.get_by_id, "llm_cache")
        wrap_parse_cache_lookup(rag, lambda lookup: self._counting(lookup, "raganything_parse_cache"))

    def _time_flushes(self, storage: Any) -> None:
        flush, name = storage.index_done_callback, getattr(storage, "namespace", type(storage).__name__)
        listeners = self.listeners

        async def timed_flush(*args: Any, **kwargs: Any):
            start_ns = time.perf_counter_ns()
            try:
                return await flush(*args, **kwargs)
            finally:
                _notify(listeners, "flush", start_ns, time.perf_counter_ns(), name)

        storage.index_done_callback = timed_flush

    def _counting(self, lookup: Callable, cache: str) -> Callable:
        listeners = self.listeners

        async def counted(*args: Any, **kwargs: Any):
            result = await lookup(*args, **kwargs)
            _notify(listeners, "cache_lookup", cache, result is not None)
            return result

        return counted


def observation(rag: Any) -> Observation:
    """The rag's observation layer, installed on first use (which must come before LightRAG is created)."""
    existing: Optional[Observation] = getattr(rag, "ragopt_observation", None)
    if existing is not None:
        return existing
    if is_initialized(rag):
        raise RuntimeError("this RAGAnything is already initialized: observe it (ragopt.optimize, or a Recorder) "
                           "before its first ingestion or query, so its model calls can be seen")
    rag.ragopt_observation = Observation(rag)
    return rag.ragopt_observation
